"""The dashboard: server-rendered pages where a platform user deploys and watches their own bots.

Sign-in takes a tenant JWT and keeps it in an HttpOnly, SameSite=Strict cookie, so page scripts
never see it and other sites' requests never carry it. Every form carries a CSRF token bound to that
session (an HMAC of it under JWT_SECRET), and a request another site sent (Origin or Sec-Fetch-Site
says so) is refused before anything else. Pages read and write through the same Store calls, with
the same user scoping, as the tenant API. A little JavaScript polls a page fragment every few
seconds and says when the service cannot be reached; everything works without it, just unrefreshed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jwt
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.charts import duration_bars, outcome_class, value_line
from api.errors import ApiError, PayloadTooLarge, RequestInvalid
from api.routes import halted_refusal, read_body
from api.schemas import MAX_BODY_BYTES, STRATEGY_ID_PATTERN
from api.tenant import TenantApi
from api.tenant_schemas import BotStartRequest, detail
from reconciler.storage.api_store import StrategyHalted

log = logging.getLogger("api.dashboard")

HERE = Path(__file__).parent
SESSION_COOKIE = "se_session"
CSRF_FIELD = "csrf"
REFRESH_SECONDS = 3
NOTICES = {
    "run": "Run requested: it starts within a second when a slot is free.",
    "run_pending": "A run was already waiting to start: it is the one that runs (one run answers both).",
    "stopped": "Stopped. A run in progress finishes.",
    "started": "Started.",
    "deleted": "Deleted. Its rows go once nothing is in flight.",
    "deployed": "Deployed.",
    "redeployed": "Redeployed: the next run uses the new code.",
    "signed_out": "Signed out.",
}


class Dashboard:
    def __init__(self, tenant: TenantApi, jwt_secret: SecretStr | None) -> None:
        self.tenant = tenant
        self.store = tenant.store
        self.settings = tenant.settings
        self._csrf_key = hashlib.sha256(b"dashboard-csrf|" + jwt_secret.get_secret_value().encode()).digest() if (
            jwt_secret is not None
        ) else None  # fmt: skip
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(
            refresh_seconds=REFRESH_SECONDS, outcome_class=outcome_class, fmt_seconds=_fmt_seconds, fmt_time=_fmt_time
        )

    # --- sessions and CSRF --------------------------------------------------------------------------

    def _session(self, request: Request) -> tuple[str, str] | None:
        """(user id, token) of a valid session cookie, else None."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token or self.tenant.auth is None:
            return None
        try:
            return self.tenant.user_from_token(token), token
        except ApiError:
            return None

    def csrf_token(self, session_token: str) -> str:
        assert self._csrf_key is not None
        return hmac.new(self._csrf_key, session_token.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _cross_site(request: Request) -> bool:
        """A request another site made the browser send: refused whatever it carries."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            return True
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin == "null"
        host = request.headers.get("host", "")
        return urlsplit(origin).netloc != host

    async def _form(self, request: Request, session_token: str | None) -> dict[str, str]:
        """The urlencoded form, after the cross-site and CSRF checks (a 403 page when they fail)."""
        if self._cross_site(request):
            raise ApiError(403, "cross_site", "this form was sent from another site; it was refused")
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except PayloadTooLarge as exc:
            raise ApiError(413, "payload_too_large", exc.message) from None
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "bad_form", "the form could not be read") from None
        form = {key: values[-1] for key, values in parsed.items()}
        if session_token is not None:
            sent = form.get(CSRF_FIELD, "")
            if not hmac.compare_digest(sent.encode(), self.csrf_token(session_token).encode()):
                raise ApiError(403, "csrf", "the form's security token is missing or stale; reload the page")
        return form

    # --- rendering ----------------------------------------------------------------------------------

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = context.pop("session", None)
        if session is not None:
            context.setdefault("user_id", session[0])
            context.setdefault("csrf", self.csrf_token(session[1]))
        notice = request.query_params.get("notice")
        context.setdefault("notice", NOTICES.get(notice or ""))
        html = self.templates.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def problem(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        session = self._session(request)
        return self.render(request, "problem.html", status, title=title, message=message, session=session)

    def _not_configured(self, request: Request) -> HTMLResponse | None:
        if self.tenant.auth is None:
            # A page that explains, not a server error: the service is fine, this feature is off.
            return self.problem(
                request, 200, "Dashboard unavailable", "JWT_SECRET is not set on this server, so nobody can sign in."
            )
        return None

    # --- pages --------------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        if (page := self._not_configured(request)) is not None:
            return page
        session = self._session(request)
        if session is None:
            return self.render(request, "signin.html", error=None)
        return self.render(request, "bots.html", session=session, **await self._bots(session[0]))

    async def bots_fragment(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return Response("signed out", status_code=401)
        return self.render(request, "_bots_live.html", session=session, **await self._bots(session[0]))

    async def _bots(self, user_id: str) -> dict[str, Any]:
        rows, recent = await self.store.list_user_deployments(user_id, limit=200)
        bots = [
            {**row, "chart": duration_bars(recent.get(row["strategy_id"], []), width=160, height=32)} for row in rows
        ]
        return {"bots": bots}

    async def signin(self, request: Request) -> Response:
        if (page := self._not_configured(request)) is not None:
            return page
        try:
            form = await self._form(request, None)
        except ApiError as exc:
            return self.problem(request, exc.status, "Refused", exc.message)
        token = form.get("token", "").strip()
        try:
            user_id = self.tenant.user_from_token(token)
        except ApiError as exc:
            return self.render(request, "signin.html", 401, error=f"Sign-in refused: {exc.message}")
        expires = int(jwt.decode(token, options={"verify_signature": False})["exp"])
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=max(1, expires - int(time.time())),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        log.info("dashboard: user %s signed in", user_id)
        return response

    async def signout(self, request: Request) -> Response:
        session = self._session(request)
        try:
            await self._form(request, session[1] if session else None)
        except ApiError as exc:
            return self.problem(request, exc.status, "Refused", exc.message)
        response = RedirectResponse("/?notice=signed_out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def bot_page(self, request: Request) -> Response:
        if (page := self._not_configured(request)) is not None:
            return page
        session = self._session(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        context = await self._bot(request, session[0])
        if context is None:
            return self.problem(request, 404, "No such bot", "You have no bot with this id.")
        return self.render(request, "bot.html", session=session, **context)

    async def bot_fragment(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return Response("signed out", status_code=401)
        context = await self._bot(request, session[0])
        if context is None:
            return Response("not found", status_code=404)
        return self.render(request, "_bot_live.html", session=session, **context)

    async def _bot(self, request: Request, user_id: str) -> dict[str, Any] | None:
        bot_id = request.path_params["bot_id"]
        if not _valid_id(bot_id):
            return None
        record = await self.store.deployment_detail(bot_id, user_id)
        if record is None:
            return None
        bot = detail(record, self.settings.paper_initial_balances)
        wallet_chart = None
        if bot.wallet is not None and bot.wallet.value_history:
            history = bot.wallet.value_history
            wallet_chart = value_line([(p.at, p.value) for p in history], history[-1].currency)
        return {
            "bot": bot,
            "chart": duration_bars(record["executions"], width=480, height=64),
            "wallet_chart": wallet_chart,
            "state_json": json.dumps(bot.state, indent=2, sort_keys=True, default=str),
            "config_json": json.dumps(bot.config, indent=2, sort_keys=True),
        }

    async def bot_action(self, request: Request) -> Response:
        session = self._session(request)
        try:
            await self._form(request, session[1] if session else None)
        except ApiError as exc:
            return self.problem(request, exc.status, "Refused", exc.message)
        if session is None:
            return self.problem(request, 403, "Refused", "You are not signed in.")
        user_id = session[0]
        bot_id, action = request.path_params["bot_id"], request.path_params["action"]
        if not _valid_id(bot_id):
            return self.problem(request, 404, "No such bot", "You have no bot with this id.")
        if action not in ("run", "stop", "start", "delete"):
            return self.problem(request, 404, "Not found", f"There is no action {action!r}.")
        if action == "run":
            try:
                done = await self.store.request_run(bot_id, user_id=user_id)
            except StrategyHalted as exc:
                refusal = halted_refusal(exc, what="bot", resume="Start on this page")
                return self.problem(request, refusal.status, "Halted", refusal.message)
            notice = "run_pending" if done is not None and done["already_pending"] else "run"
        elif action in ("stop", "start"):
            desired = "stopped" if action == "stop" else "running"
            done = await self.store.set_desired_state(bot_id, desired, user_id=user_id)
            notice = "stopped" if action == "stop" else "started"
        else:  # delete
            # Idempotent, as in the APIs: a bot already being deleted is accepted again (it is on the
            # list, `deleting`); None only when this user has no such bot.
            if await self.store.request_deletion(bot_id, user_id=user_id) is None:
                return self.problem(request, 404, "No such bot", "You have no bot with this id.")
            return RedirectResponse("/?notice=deleted", status_code=303)
        if done is None:
            return await self._no_bot_to_act_on(request, user_id, bot_id, _CAN_NO_LONGER[action])
        return RedirectResponse(f"/bots/{quote(bot_id)}?notice={notice}", status_code=303)

    async def _no_bot_to_act_on(self, request: Request, user_id: str, bot_id: str, what: str) -> HTMLResponse:
        """The page for an action that found no bot of this user's to act on: a bot being deleted
        (409, as the APIs answer) is still on the user's list as `deleting`, so "no such bot" would
        contradict it; only an unknown id, another user's or one whose rows are gone, is a 404."""
        status = await self.store.get_status(bot_id, user_id=user_id)
        if status is not None and status["delete_requested_at"] is not None:
            return self.problem(request, 409, "Being deleted", _leaving_message(status["name"], what))
        return self.problem(request, 404, "No such bot", "You have no bot with this id.")

    async def deploy_page(self, request: Request) -> Response:
        if (page := self._not_configured(request)) is not None:
            return page
        session = self._session(request)
        if session is None:
            return RedirectResponse("/", status_code=303)
        form = {"name": "", "code": "", "interval": "60", "config": "{}", "exchange": "paper", "bot": ""}
        bot_id = request.query_params.get("bot", "")
        if bot_id:
            spec = await self.store.get_spec(bot_id, user_id=session[0]) if _valid_id(bot_id) else None
            if spec is None:
                return self.problem(request, 404, "No such bot", "You have no bot with this id.")
            if spec["delete_requested_at"] is not None:
                # Its form could only be refused when sent: say so now, before anything is typed.
                return await self._no_bot_to_act_on(request, session[0], bot_id, _CAN_NO_LONGER["deploy"])
            form |= {
                "name": spec["name"],
                "code": spec["code"],
                "interval": str(spec["execution_interval"]),
                "config": json.dumps(spec["config"], indent=2, sort_keys=True),
                "exchange": spec["exchange"],
                "bot": bot_id,
            }
        return self.render(request, "deploy.html", session=session, form=form, errors={}, code_error=None)

    async def deploy_submit(self, request: Request) -> Response:
        session = self._session(request)
        try:
            raw = await self._form(request, session[1] if session else None)
        except ApiError as exc:
            return self.problem(request, exc.status, "Refused", exc.message)
        if session is None:
            return self.problem(request, 403, "Refused", "You are not signed in.")
        form = {k: raw.get(k, "") for k in ("name", "code", "interval", "config", "exchange", "bot")}
        errors: dict[str, str] = {}
        interval: int | None = None
        try:
            interval = int(form["interval"].strip())
        except ValueError:
            errors["interval"] = "a whole number of seconds"
        config: Any = None
        try:
            config = json.loads(form["config"] or "{}")
            if not isinstance(config, dict):
                errors["config"] = 'must be a JSON object, like {"pair": "B-BTC_USDT"}'
        except ValueError as exc:
            errors["config"] = f"not valid JSON: {exc}"
        if form["exchange"] not in ("paper", "coindcx"):
            errors["exchange"] = "choose paper or coindcx"
        if not form["name"].strip():
            errors["name"] = "give the bot a name"
        if not form["code"].strip():
            errors["code"] = "write some code"
        if form["bot"] and not _valid_id(form["bot"]):
            errors["bot"] = "not a bot id"
        code_error = None
        status = 422
        if not errors:
            body: dict[str, Any] = {
                "name": form["name"].strip(),
                "code": form["code"].replace("\r\n", "\n"),
                "config": config,
                "executionInterval": interval,
                "exchange": form["exchange"],
            }
            if form["bot"]:
                body["deploymentId"] = form["bot"]
            if form["exchange"] == "coindcx":
                body |= {"apiKey": raw.get("api_key") or None, "apiSecret": raw.get("api_secret") or None}
            try:
                start = BotStartRequest.model_validate_json(json.dumps(body))
                deployed, _ = await self.tenant.start(session[0], start)
                assert deployed is not None
                strategy_id = deployed.strategy["strategy_id"]
                notice = "deployed" if deployed.created else "redeployed"
                return RedirectResponse(f"/bots/{quote(strategy_id)}?notice={notice}", status_code=303)
            except RequestInvalid as exc:
                for error in exc.detail:
                    field = _FORM_FIELDS.get(error.field.split(".")[0], "form")
                    if field == "code" and error.line is not None:
                        # The listing shows where; the message need not repeat it.
                        message = _WHERE.sub("", error.reason)
                        code_error = {"line": error.line, "column": error.column, "message": message}
                    errors[field] = error.reason
            except ApiError as exc:
                if exc.status == 404:
                    # No bot of this user's by that id (unknown, another user's, or its rows gone):
                    # a 404 as the bot's pages and the APIs answer, not a fault in what was typed.
                    errors["bot"] = "you have no bot with this id"
                else:
                    errors["form"] = exc.message
                if exc.status in (404, 409):
                    # Nothing wrong with what was typed: no such bot, or it is being deleted (or the API
                    # key is another user's). The form stays, what was typed kept, under the API's status.
                    status = exc.status
            except ValueError as exc:  # the request model's own checks
                errors["form"] = str(exc)
        lines = form["code"].replace("\r\n", "\n").split("\n") if code_error else []
        return self.render(
            request,
            "deploy.html",
            status,
            session=session,
            form=form,
            errors=errors,
            code_error=code_error,
            code_lines=list(enumerate(lines, start=1)),
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/deploy", self.deploy_page, methods=["GET"]),
            Route("/deploy", self.deploy_submit, methods=["POST"]),
            Route("/bots/{bot_id}", self.bot_page, methods=["GET"]),
            Route("/bots/{bot_id}/{action}", self.bot_action, methods=["POST"]),
            Route("/ui/bots", self.bots_fragment, methods=["GET"]),
            Route("/ui/bots/{bot_id}", self.bot_fragment, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]


DASHBOARD_PREFIXES = ("/static/", "/bots/", "/ui/")
DASHBOARD_PATHS = frozenset({"/", "/signin", "/signout", "/deploy"})

_FORM_FIELDS = {
    "name": "name",
    "code": "code",
    "config": "config",
    "executionInterval": "interval",
    "exchange": "exchange",
    "apiKey": "api_key",
    "apiSecret": "api_secret",
    "deploymentId": "bot",
}


# What a bot being deleted can no longer be, per action the dashboard offers ("deploy": Deploy new
# code). Delete is not here: a second one is accepted, as the APIs accept it.
_CAN_NO_LONGER = {"run": "run", "stop": "stopped", "start": "started", "deploy": "redeployed"}

_BOT_ID = re.compile(STRATEGY_ID_PATTERN)
_WHERE = re.compile(r" \(line \d+, column \d+\)$")


def _leaving_message(name: str, what: str) -> str:
    return (
        f"{name} is being deleted, so it can no longer be {what}. It shows as deleting in your list "
        "until its rows are gone; deploy a new bot to run its code again."
    )


def is_dashboard_path(path: str) -> bool:
    return path in DASHBOARD_PATHS or path.startswith(DASHBOARD_PREFIXES)


def _valid_id(value: str) -> bool:
    return _BOT_ID.fullmatch(value) is not None


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _fmt_time(value: Any) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else str(value)


def fmt_amount(value: Decimal) -> str:
    return f"{value.normalize():f}"
