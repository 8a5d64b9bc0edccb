"""The tenant API: a platform user's own bots, authenticated by a JWT whose `sub` is the user id.

Every handler reads or writes only strategies whose `user_id` is the token's `sub`; another user's
bot answers 404 exactly like a missing one, so ids cannot be probed. Deploys go through the executor
API's own checks (sizes, credentials, the language policy), so both APIs accept the same code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError, Conflict, NotFound, RequestInvalid
from api.pagination import decode_cursor, encode_cursor
from api.routes import Endpoint, ExecutorApi, halted_refusal, parse_query, read_body
from api.schemas import MAX_BODY_BYTES, STRATEGY_ID_PATTERN, DeployRequest, FieldError, field_errors
from api.tenant_auth import TenantAuth, TenantAuthError
from api.tenant_schemas import (
    BotHaltedResponse,
    BotRunRequest,
    BotStartRequest,
    BotStopRequest,
    Deployment,
    DeploymentDetail,
    DeploymentList,
    DeploymentsQuery,
    detail,
)
from reconciler.storage.api_store import Deployed, Record, StrategyConflict, StrategyHalted

log = logging.getLogger("api.tenant")

M = TypeVar("M", bound=BaseModel)
_DEPLOYMENT_ID = re.compile(STRATEGY_ID_PATTERN)

# The executor API's field names, as the tenant API spells them.
_CAMEL = {"api_key": "apiKey", "api_secret": "apiSecret", "execution_interval": "executionInterval"}


def respond_camel(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(by_alias=True), status_code=status, media_type="application/json")


def not_found(deployment_id: str) -> NotFound:
    return NotFound(f"no deployment {deployment_id!r}")


def _leaving(deployment_id: str, what: str) -> Conflict:
    """The refusal of a write to the user's bot whose deletion was requested (`what`: "be run", ...)."""
    return Conflict(f"bot {deployment_id!r} is being deleted; it can no longer {what}")


class TenantUnauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="tenant"'})


class TenantApi:
    def __init__(self, executor: ExecutorApi, auth: TenantAuth | None) -> None:
        self.executor = executor
        self.store = executor.store
        self.settings = executor.settings
        self.auth = auth

    # --- who is asking ---------------------------------------------------------------------------

    def user_from_token(self, token: str | None) -> str:
        if self.auth is None:
            raise ApiError(
                503, "auth_not_configured", "JWT_SECRET is not set on the server: the tenant API is unavailable"
            )
        if not token:
            raise TenantUnauthorized("missing bearer token: send 'Authorization: Bearer <JWT>'")
        try:
            return self.auth.user_id(token)
        except TenantAuthError as exc:
            raise TenantUnauthorized(str(exc)) from None

    def user_of_request(self, request: Request) -> str:
        """The user a request's JWT names (for routes of the tenant API kept in other modules)."""
        return self._user(request)

    def _user(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return self.user_from_token(token.strip() if scheme.lower() == "bearer" else None)

    # --- operations shared with the dashboard ------------------------------------------------------

    async def start(self, user_id: str, start: BotStartRequest) -> tuple[Deployed | None, dict[str, object] | None]:
        """Deploy/redeploy (Deployed) or restart (the status record); NotFound for another user's id, a
        409 for a bot being deleted."""
        if start.code is None:
            assert start.deployment_id is not None
            record = await self.store.set_desired_state(start.deployment_id, "running", user_id=user_id)
            if record is None:
                raise await self._unknown_or_leaving(user_id, start.deployment_id, "be started")
            return None, record
        assert start.name is not None and start.execution_interval is not None
        deployment_id = start.deployment_id
        if deployment_id is not None:
            status = await self.store.get_status(deployment_id, user_id=user_id)
            if status is None:
                raise not_found(deployment_id)
            if status["delete_requested_at"] is not None:
                # Said here in the tenant API's words, before the code is compiled; the redeploy below
                # checks again in its own transaction, for a deletion requested or finished meanwhile.
                raise _leaving(deployment_id, "be redeployed")
        else:
            deployment_id = await self.store.find_live_by_name(user_id, start.name)
        bounds = (self.settings.min_execution_interval, self.settings.max_execution_interval)
        try:
            deploy = DeployRequest.model_validate(
                {
                    "strategy_id": deployment_id,
                    "user_id": user_id,
                    "name": start.name,
                    "code": start.code,
                    "config": start.config or {},
                    "execution_interval": start.execution_interval,
                    "exchange": start.exchange,
                    "api_key": start.api_key,
                    "api_secret": start.api_secret,
                    "risk": start.risk,
                    "auto_start": True,
                },
                context={"interval_bounds": bounds},
            )
            if start.deployment_id is None:
                return await self.executor.apply_deploy(deploy), None
            # By id: only the bot checked above, in the deploy's own transaction. Its deletion may have
            # finished since; a plain deploy would then create a new bot under the old id.
            deployed = await self.executor.apply_redeploy(deploy)
            if deployed is None:
                raise not_found(start.deployment_id)
            return deployed, None
        except ValidationError as exc:
            raise RequestInvalid(_camel(field_errors(exc))) from None
        except RequestInvalid as exc:
            raise RequestInvalid(_camel(exc.detail)) from None
        except StrategyConflict as exc:
            # Being deleted (a redeploy by id), or an API key another user's bot holds. Never "another
            # user's bot": a redeploy by id acts only on the user's own, and a name only finds theirs.
            raise ApiError(409, "conflict", str(exc).replace("strategy_id", "deploymentId")) from None

    async def request_run(self, user_id: str, deployment_id: str) -> Record:
        """Record a run request, or join the bot's pending one; NotFound for another user's id, a 409
        while the bot is being deleted or halted by its risk limits."""
        try:
            run = await self.store.request_run(deployment_id, user_id=user_id)
        except StrategyHalted as exc:
            start = f'POST /api/bot/start with {{"deploymentId": "{deployment_id}"}}'
            raise halted_refusal(exc, what="bot", resume=start, body=BotHaltedResponse) from None
        if run is None:
            raise await self._unknown_or_leaving(user_id, deployment_id, "be run")
        return run

    async def _unknown_or_leaving(self, user_id: str, deployment_id: str, what: str) -> ApiError:
        """Why a write found no bot to act on: none of this user's by that id (404), or one being
        deleted (409, as the executor API answers), which the user's list still shows as `deleting`
        until a replica finalizes the deletion: a 404 would contradict it."""
        status = await self.store.get_status(deployment_id, user_id=user_id)
        if status is not None and status["delete_requested_at"] is not None:
            return _leaving(deployment_id, what)
        return not_found(deployment_id)

    # --- handlers --------------------------------------------------------------------------------

    async def bot_start(self, request: Request) -> Response:
        user_id = self._user(request)
        start = _parse_body(BotStartRequest, await read_body(request, MAX_BODY_BYTES))
        deployed, record = await self.start(user_id, start)
        if deployed is not None:
            status = await self.store.get_status(deployed.strategy["strategy_id"], user_id=user_id)
            if status is None:  # deleted by a concurrent request of the same user
                raise not_found(deployed.strategy["strategy_id"])
            return respond_camel(await self._deployment(status), 201 if deployed.created else 200)
        assert record is not None
        return respond_camel(await self._deployment(record))

    async def bot_stop(self, request: Request) -> Response:
        user_id = self._user(request)
        stop = _parse_body(BotStopRequest, await read_body(request, MAX_BODY_BYTES))
        record = await self.store.set_desired_state(stop.deployment_id, "stopped", user_id=user_id)
        if record is None:
            raise await self._unknown_or_leaving(user_id, stop.deployment_id, "be stopped")
        return respond_camel(await self._deployment(record))

    async def _deployment(self, record: Record) -> Deployment:
        """A bot as the list shows it, its recent outcomes included: an answer to start or stop is the
        same object as the bot's entry in the list, not one with an empty history."""
        return Deployment.from_record(record, await self.store.recent_outcomes(record["strategy_id"]))

    async def list_deployments(self, request: Request) -> Response:
        user_id = self._user(request)
        query = parse_query(request, DeploymentsQuery)
        rows, recent = await self.store.list_user_deployments(
            user_id, limit=query.limit + 1, after=decode_cursor(query.cursor, str)
        )
        page = rows[: query.limit]
        next_cursor = (
            encode_cursor(page[-1]["created_at"], page[-1]["strategy_id"]) if len(rows) > query.limit else None
        )
        items = [Deployment.from_record(row, recent.get(row["strategy_id"])) for row in page]
        return respond_camel(DeploymentList(items=items, next_cursor=next_cursor))

    async def get_deployment(self, request: Request) -> Response:
        user_id = self._user(request)
        deployment_id = _deployment_id(request)
        record = await self.store.deployment_detail(deployment_id, user_id)
        if record is None:
            raise not_found(deployment_id)
        return respond_camel(detail(record, self.settings.paper_initial_balances))

    async def delete_deployment(self, request: Request) -> Response:
        user_id = self._user(request)
        deployment_id = _deployment_id(request)
        record = await self.store.request_deletion(deployment_id, user_id=user_id)
        if record is None:
            raise not_found(deployment_id)
        log.info("deployment %s: deletion requested by its user", deployment_id)
        return respond_camel(await self._deployment(record), 202)

    async def run_deployment(self, request: Request) -> Response:
        user_id = self._user(request)
        deployment_id = _deployment_id(request)
        run = await self.request_run(user_id, deployment_id)
        return respond_camel(
            BotRunRequest(
                run_request_id=run["run_request_id"],
                deployment_id=deployment_id,
                requested_at=run["requested_at"],
                already_pending=run["already_pending"],
                request_count=run["request_count"],
            ),
            202,
        )

    def endpoints(self) -> list[Endpoint]:
        def tenant(
            method: str, path: str, handler: Callable[[Request], Awaitable[Response]], summary: str, **kw: object
        ) -> Endpoint:
            return Endpoint(method, path, handler, summary, tenant=True, **kw)  # type: ignore[arg-type]

        return [
            tenant(
                "POST",
                "/api/bot/start",
                self.bot_start,
                "Deploy (or redeploy) and start a bot, or start a stopped one",
                responses={200: Deployment, 201: Deployment},
                body=BotStartRequest,
                errors=(404, 409, 413, 422),  # 409: being deleted, or an API key another user's bot holds
            ),
            tenant(
                "POST",
                "/api/bot/stop",
                self.bot_stop,
                "Stop a bot (a run in progress finishes)",
                responses={200: Deployment},
                body=BotStopRequest,
                errors=(404, 409, 413, 422),  # 409: being deleted
            ),
            tenant(
                "GET",
                "/api/bot/deployments",
                self.list_deployments,
                "The user's bots, newest first, with statistics and recent outcomes",
                responses={200: DeploymentList},
                query=DeploymentsQuery,
            ),
            tenant(
                "GET",
                "/api/bot/deployments/{deployment_id}",
                self.get_deployment,
                "One bot: code, config, STATE, recent executions and orders, a paper bot's wallet",
                responses={200: DeploymentDetail},
            ),
            tenant(
                "DELETE",
                "/api/bot/deployments/{deployment_id}",
                self.delete_deployment,
                "Delete a bot (its rows go once nothing is in flight)",
                responses={202: Deployment},
            ),
            tenant(
                "POST",
                "/api/bot/deployments/{deployment_id}/run",
                self.run_deployment,
                "Run a bot now (also a stopped one); a run already waiting to start is joined, not repeated",
                responses={202: BotRunRequest},
                errors=(409,),  # being deleted, or halted by its risk limits
                error_bodies={409: BotHaltedResponse},
            ),
        ]


def _parse_body(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestInvalid(field_errors(exc)) from None


def _deployment_id(request: Request) -> str:
    deployment_id: str = request.path_params["deployment_id"]
    if not _DEPLOYMENT_ID.fullmatch(deployment_id):
        raise RequestInvalid.one("deploymentId", "not a deployment id")
    return deployment_id


def _camel(detail: list[FieldError]) -> list[FieldError]:
    return [
        FieldError(field=_CAMEL.get(e.field, e.field), reason=e.reason, line=e.line, column=e.column) for e in detail
    ]
