"""The executor API's handlers and its route table (the one list both Starlette and OpenAPI read).

Handlers write desired state through the Store and read status back; they never run code.
Every input is validated before the database is touched; a refusal is an `ApiError` (JSON body).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from api.errors import ApiError, Conflict, NotFound, PayloadTooLarge, RequestInvalid
from api.pagination import decode_cursor, encode_cursor
from api.schemas import (
    MAX_BODY_BYTES,
    MAX_CODE_BYTES,
    MAX_CONFIG_BYTES,
    STRATEGY_ID_PATTERN,
    UUID_PATTERN,
    DeployRequest,
    ExecuteQuery,
    Execution,
    ExecutionList,
    FieldError,
    HealthResponse,
    ListExecutionsQuery,
    ListOrdersQuery,
    ListStrategiesQuery,
    LocalReplicaHealth,
    Order,
    OrderList,
    PaperBalance,
    PaperWallet,
    RunRequest,
    Strategy,
    StrategyHaltedResponse,
    StrategyList,
    StrategyStatus,
    StrategySummary,
    field_errors,
)
from reconciler.exchange.keys import api_key_digest
from reconciler.policy import PolicyError
from reconciler.settings import Settings
from reconciler.storage.api_store import (
    Deployed,
    Record,
    SealedCredentials,
    Store,
    StrategyConflict,
    StrategyHalted,
    StrategySpec,
)
from reconciler.storage.db import StoreError

log = logging.getLogger("api")

# (strategy_id, api_key, api_secret) -> (key_id, ciphertext); the strategy id is the cipher's associated
# data, so a sealed row cannot be moved to another strategy.
SealCredentials = Callable[[str, str, str], tuple[str, bytes]]
# The language policy's check: raises reconciler.policy.PolicyError. A coroutine function (the compile
# pool: worker processes) is awaited; a plain function runs in a thread (checks that are fast by design).
CheckCode = Callable[[str], Awaitable[None]] | Callable[[str], None]
Handler = Callable[[Request], Awaitable[Response]]
Q = TypeVar("Q", bound=BaseModel)

_STRATEGY_ID = re.compile(STRATEGY_ID_PATTERN)


class LocalReplica(Protocol):
    """Read-only view of the replica in this process (`reconciler.loop.ReplicaHealth`; not imported:
    the API does not depend on the loop)."""

    replica_id: str
    database_ok: bool
    running: bool
    in_flight: int
    claimed_waiting: int
    executed: int
    last_error: str | None
    layers: dict[str, bool]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    # None: any JSON object (the OpenAPI document itself).
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    public: bool = False
    errors: tuple[int, ...] = field(default=())
    # An error status whose answer may carry more than ErrorResponse: that model, documented beside it.
    error_bodies: dict[int, type[BaseModel]] = field(default_factory=dict)
    # Authenticated with a tenant JWT (the tenant API) instead of the executor API's token.
    tenant: bool = False


def respond(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (header or bytes streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_query(request: Request, model: type[Q]) -> Q:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestInvalid(field_errors(exc, root="query")) from None


def strategy_id_param(request: Request) -> str:
    strategy_id: str = request.path_params["strategy_id"]
    if not _STRATEGY_ID.fullmatch(strategy_id):
        raise RequestInvalid.one(
            "strategy_id", "must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    return strategy_id


def _missing(strategy_id: str) -> NotFound:
    return NotFound(f"no strategy {strategy_id!r}")


async def _unknown_or_leaving(store: Store, strategy_id: str, what: str) -> ApiError:
    """Why a write found no strategy to act on: none by that id (404), or one being deleted (409,
    as for a deploy), which its status still shows until a replica finalizes the deletion."""
    status = await store.get_status(strategy_id)
    if status is not None and status["delete_requested_at"] is not None:
        return Conflict(f"strategy {strategy_id!r} is being deleted; it can no longer {what}")
    return _missing(strategy_id)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _halt_figures(halt: Record) -> str:
    """The halt in figures, from what its status row holds: a halt written by hand may lack any of them."""
    if halt["halt_limit"] is None:
        return "no limit is on record"
    figures = [
        f"{label} {halt[column]}"
        for label, column in (("measured", "halt_value"), ("limit", "halt_threshold"))
        if halt[column] is not None
    ]
    return f"{halt['halt_limit']}: {', '.join(figures)}" if figures else halt["halt_limit"]


def halted_refusal(
    exc: StrategyHalted,
    *,
    what: str,
    resume: str,
    body: type[StrategyHaltedResponse] = StrategyHaltedResponse,
) -> ApiError:
    """409 for a run request of a strategy its risk guard halted (`what`: how the audience calls it,
    `resume`: the request that lifts the halt, `body`: the audience's shape of the answer, whose `halt`
    is the status's). Refused rather than recorded: no claim takes a halted strategy's requests, so a
    202 would promise a run that comes only after a resume, if ever."""
    halt = exc.halt
    why = halt["status_reason"] or _halt_figures(halt)
    since = f" since {_when(halt['halted_at'])}" if halt["halted_at"] is not None else ""
    if halt["resume_at"] is not None:
        until = f"it resumes by itself at {_when(halt['resume_at'])}, or at once with {resume}"
    else:
        until = f"it stays halted until {resume} resumes it"
    message = (
        f"{what} {exc.strategy_id!r} is halted by its risk guard{since} ({why}); {until}. "
        "No run was requested: run it once it has resumed."
    )
    return ApiError(409, "strategy_halted", message, body=body.refusing(message, halt))


class ExecutorApi:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        seal_credentials: SealCredentials | None,
        check_code: CheckCode,
        replica: LocalReplica | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.seal_credentials = seal_credentials
        self.check_code = check_code
        self.replica = replica

    # --- health ----------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        replica = self._local_replica()
        try:
            health = await self.store.health()
        except StoreError as exc:
            log.warning("health check failed: %s", exc)
            body = HealthResponse(status="unhealthy", database="unavailable", reason=str(exc), replica=replica)
            return respond(body, 503)
        return respond(
            HealthResponse(
                status="healthy",
                database="ok",
                active_strategies=health.active_strategies,
                scheduler_running=health.live_replicas > 0,
                replicas=health.live_replicas,
                sandbox_layers=health.sandbox_layers,
                replica=replica,
            )
        )

    def _local_replica(self) -> LocalReplicaHealth | None:
        if self.replica is None:
            return None
        r = self.replica
        return LocalReplicaHealth(
            replica_id=r.replica_id,
            database_ok=r.database_ok,
            running=r.running,
            in_flight=r.in_flight,
            claimed_waiting=r.claimed_waiting,
            executed=r.executed,
            last_error=r.last_error,
            layers=dict(r.layers),
        )

    # --- desired state ---------------------------------------------------------------------------

    async def deploy(self, request: Request) -> Response:
        body = await read_body(request, MAX_BODY_BYTES)
        bounds = (self.settings.min_execution_interval, self.settings.max_execution_interval)
        try:
            deploy = DeployRequest.model_validate_json(body, context={"interval_bounds": bounds})
        except ValidationError as exc:
            raise RequestInvalid(field_errors(exc)) from None
        try:
            deployed = await self.apply_deploy(deploy)
        except StrategyConflict as exc:
            raise Conflict(str(exc)) from None
        return respond(Strategy.model_validate(deployed.strategy), 201 if deployed.created else 200)

    async def apply_deploy(self, deploy: DeployRequest) -> Deployed:
        """Check a validated deploy (sizes, credentials, the language policy), seal, and write it.

        Shared with the tenant API and the dashboard: refusals are ApiErrors naming the executor
        API's (snake_case) fields; a strategy of another user or being deleted is StrategyConflict.
        """
        spec, sealed = await self._prepare(deploy)
        return self._logged(await self.store.deploy(spec, sealed))

    async def apply_redeploy(self, deploy: DeployRequest) -> Deployed | None:
        """`apply_deploy` of a strategy that must already exist as the user's (deploy.strategy_id):
        None when it does not, or no longer does; it is never created."""
        assert deploy.strategy_id is not None
        spec, sealed = await self._prepare(deploy)
        deployed = await self.store.redeploy(spec, sealed)
        return self._logged(deployed) if deployed is not None else None

    async def _prepare(self, deploy: DeployRequest) -> tuple[StrategySpec, SealedCredentials | None]:
        code_bytes = len(deploy.code.encode())
        if code_bytes > MAX_CODE_BYTES:
            raise PayloadTooLarge(f"code is {code_bytes} bytes; the limit is {MAX_CODE_BYTES} bytes")
        config_bytes = len(json.dumps(deploy.config, separators=(",", ":"), ensure_ascii=False).encode())
        if config_bytes > MAX_CONFIG_BYTES:
            raise PayloadTooLarge(f"config is {config_bytes} bytes as JSON; the limit is {MAX_CONFIG_BYTES} bytes")
        credentials = self._check_credentials(deploy)
        await self._check_code(deploy.code)
        strategy_id = deploy.strategy_id or uuid.uuid4().hex
        sealed = self._seal(strategy_id, credentials) if credentials is not None else None
        spec = StrategySpec(
            strategy_id=strategy_id,
            user_id=deploy.user_id,
            name=deploy.name or strategy_id,
            code=deploy.code,
            config=deploy.config,
            execution_interval=deploy.execution_interval,
            exchange=deploy.trades_on,
            desired_state="running" if deploy.auto_start else "stopped",
            risk=deploy.risk.model_dump(exclude_none=True) if deploy.risk is not None else {},
        )
        return spec, sealed

    @staticmethod
    def _logged(deployed: Deployed) -> Deployed:
        strategy = deployed.strategy
        log.info(
            "deployed strategy %s (user %s, generation %s)",
            strategy["strategy_id"],
            strategy["user_id"],
            strategy["generation"],
        )
        return deployed

    def _check_credentials(self, deploy: DeployRequest) -> tuple[str, str] | None:
        """The credentials to seal, by the rule in schemas.EXCHANGE_RULE, or a 422 saying what is missing."""
        given = [name for name in ("api_key", "api_secret") if getattr(deploy, name) is not None]
        if deploy.trades_on == "coindcx" and len(given) < 2:
            raise RequestInvalid(
                [
                    FieldError(field=name, reason="required with exchange 'coindcx'")
                    for name in ("api_key", "api_secret")
                    if name not in given
                ]
            )
        if len(given) == 1:
            other = "api_secret" if given[0] == "api_key" else "api_key"
            raise RequestInvalid([FieldError(field=other, reason=f"required with {given[0]}: both or neither")])
        if deploy.api_key is None or deploy.api_secret is None:
            return None
        if self.seal_credentials is None:
            raise RequestInvalid.one(
                "exchange",
                "this server cannot store exchange credentials (no ENCRYPTION_KEY is configured); "
                "deploy with exchange 'paper' and no api_key or api_secret",
            )
        return deploy.api_key.get_secret_value(), deploy.api_secret.get_secret_value()

    async def _check_code(self, code: str) -> None:
        # Compiling up to 256 KB takes long enough to matter to every other request: off the loop.
        try:
            if inspect.iscoroutinefunction(self.check_code):
                await self.check_code(code)
            else:
                await anyio.to_thread.run_sync(self.check_code, code)
        except PolicyError as exc:
            # Checkers report ast's 0-based columns; clients get 1-based ones, like the lines.
            column = exc.column + 1 if exc.line is not None and exc.column is not None else None
            reason = exc.message if exc.line is None else f"{exc.message} (line {exc.line}, column {column})"
            raise RequestInvalid([FieldError(field="code", reason=reason, line=exc.line, column=column)]) from None

    def _seal(self, strategy_id: str, credentials: tuple[str, str]) -> SealedCredentials:
        assert self.seal_credentials is not None
        try:
            key_id, ciphertext = self.seal_credentials(strategy_id, *credentials)
        except Exception as exc:
            # Only the type: a message could quote what was being sealed.
            log.error("sealing credentials failed: %s", type(exc).__name__)
            raise ApiError(503, "credentials_unavailable", "the credentials could not be sealed") from None
        return SealedCredentials(key_id=key_id, ciphertext=ciphertext, api_key_digest=api_key_digest(credentials[0]))

    async def start(self, request: Request) -> Response:
        return await self._set_desired_state(request, "running")

    async def stop(self, request: Request) -> Response:
        return await self._set_desired_state(request, "stopped")

    async def _set_desired_state(self, request: Request, desired_state: str) -> Response:
        strategy_id = strategy_id_param(request)
        record = await self.store.set_desired_state(strategy_id, desired_state)
        if record is None:
            raise await _unknown_or_leaving(self.store, strategy_id, "be started or stopped")
        log.info("strategy %s: desired_state %s (generation %s)", strategy_id, desired_state, record["generation"])
        return respond(StrategyStatus.from_record(record))

    async def delete(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        record = await self.store.request_deletion(strategy_id)
        if record is None:
            raise _missing(strategy_id)
        log.info("strategy %s: deletion requested", strategy_id)
        return respond(StrategyStatus.from_record(record), 202)

    async def execute(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        query = parse_query(request, ExecuteQuery)
        try:
            run = await self.store.request_run(strategy_id)
        except StrategyHalted as exc:
            raise halted_refusal(exc, what="strategy", resume=f"POST /strategies/{strategy_id}/start") from None
        if run is None:
            raise await _unknown_or_leaving(self.store, strategy_id, "be run")
        if run["already_pending"]:
            log.info(
                "strategy %s: run requested while run request %s is pending; joined it (%s requests)",
                strategy_id,
                run["run_request_id"],
                run["request_count"],
            )
        else:
            log.info("strategy %s: run requested (run request %s)", strategy_id, run["run_request_id"])
        if query.wait is None:
            return respond(RunRequest.model_validate(run), 202)
        # A request that joined a pending one waits for that one: its execution answers both.
        waited = await self.store.wait_for_run(run["run_request_id"], timeout=query.wait)
        if waited is None:
            # The strategy was deleted meanwhile, and its run requests with it: this one will never
            # run. A 202 would read as "still pending".
            raise Conflict(f"strategy {strategy_id!r} was deleted before this run request was answered")
        if waited.finished:
            return respond(Execution.model_validate(waited.execution), 200)
        return respond(
            RunRequest.model_validate(
                {**waited.run_request, "already_pending": run["already_pending"], "execution": waited.execution}
            ),
            202,
        )

    # --- reads -----------------------------------------------------------------------------------

    async def get_strategy(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        record = await self.store.get_spec(strategy_id)
        if record is None:
            raise _missing(strategy_id)
        return respond(Strategy.model_validate(record))

    async def get_status(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        record = await self.store.get_status(strategy_id)
        if record is None:
            raise _missing(strategy_id)
        return respond(StrategyStatus.from_record(record))

    async def list_strategies(self, request: Request) -> Response:
        query = parse_query(request, ListStrategiesQuery)
        rows = await self.store.list_strategies(
            limit=query.limit + 1,
            after=decode_cursor(query.cursor, str),
            user_id=query.user_id,
            status=query.status,
            include_code=query.include_code,
        )
        page = rows[: query.limit]
        next_cursor = (
            encode_cursor(page[-1]["created_at"], page[-1]["strategy_id"]) if len(rows) > query.limit else None
        )
        items = [StrategySummary.model_validate(row) for row in page]
        return respond(StrategyList(items=items, next_cursor=next_cursor))

    async def list_executions(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        query = parse_query(request, ListExecutionsQuery)
        rows = await self.store.list_executions(
            strategy_id, limit=query.limit + 1, after=decode_cursor(query.cursor, uuid.UUID), status=query.status
        )
        if rows is None:
            raise _missing(strategy_id)
        page = rows[: query.limit]
        next_cursor = (
            encode_cursor(page[-1]["scheduled_for"], page[-1]["execution_id"]) if len(rows) > query.limit else None
        )
        return respond(ExecutionList(items=[Execution.model_validate(row) for row in page], next_cursor=next_cursor))

    async def get_execution(self, request: Request) -> Response:
        raw = request.path_params["execution_id"]
        if not re.fullmatch(UUID_PATTERN, raw):  # the form the OpenAPI document states, and only that
            # A 404, not a 422: a value that is no UUID (say the null of a run request not yet claimed,
            # echoed by a client) names no execution, whatever the client made of it.
            raise NotFound(f"no execution {raw[:80]!r}: execution ids are UUIDs such as {uuid.UUID(int=0)}")
        execution_id = uuid.UUID(raw)
        record = await self.store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"no execution {raw!r}")
        return respond(Execution.model_validate(record))

    async def list_orders(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        query = parse_query(request, ListOrdersQuery)
        rows = await self.store.list_orders(
            strategy_id, limit=query.limit + 1, after=decode_cursor(query.cursor, uuid.UUID)
        )
        if rows is None:
            raise _missing(strategy_id)
        page = rows[: query.limit]
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["order_id"]) if len(rows) > query.limit else None
        return respond(OrderList(items=[Order.model_validate(row) for row in page], next_cursor=next_cursor))

    async def paper_wallet(self, request: Request) -> Response:
        strategy_id = strategy_id_param(request)
        found = await self.store.paper_balances(strategy_id)
        if found is None:
            raise _missing(strategy_id)
        exchange, rows = found
        if exchange != "paper":
            raise Conflict(
                f"strategy {strategy_id!r} trades on {exchange}: its balances are on the exchange, "
                "where the strategy reads them with client.get_balances()"
            )
        if rows:
            balances = [PaperBalance.model_validate(row) for row in rows]
        else:
            balances = [
                PaperBalance(currency=currency, balance=Decimal(str(amount)), locked_balance=Decimal(0))
                for currency, amount in sorted(self.settings.paper_initial_balances.items())
            ]
        return respond(PaperWallet(strategy_id=strategy_id, starting=not rows, balances=balances))

    # --- the route table -------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET",
                "/health",
                self.health,
                "Liveness of the database and the replicas",
                {200: HealthResponse, 503: HealthResponse},
                public=True,
            ),
            Endpoint(
                "POST",
                "/strategies/deploy",
                self.deploy,
                "Create a strategy or replace its spec",
                {200: Strategy, 201: Strategy},
                body=DeployRequest,
                errors=(409, 413, 422),
            ),
            Endpoint(
                "GET",
                "/strategies",
                self.list_strategies,
                "List strategies, newest first",
                {200: StrategyList},
                query=ListStrategiesQuery,
                errors=(422,),
            ),
            Endpoint(
                "GET",
                "/strategies/{strategy_id}",
                self.get_strategy,
                "A strategy's spec (never its credentials)",
                {200: Strategy},
            ),
            Endpoint(
                "DELETE",
                "/strategies/{strategy_id}",
                self.delete,
                "Request deletion; replicas finalize it",
                {202: StrategyStatus},
            ),
            Endpoint(
                "GET",
                "/strategies/{strategy_id}/status",
                self.get_status,
                "A strategy's status and statistics",
                {200: StrategyStatus},
            ),
            Endpoint(
                "POST",
                "/strategies/{strategy_id}/start",
                self.start,
                "Set desired_state to running",
                {200: StrategyStatus},
                errors=(409,),  # being deleted
            ),
            Endpoint(
                "POST",
                "/strategies/{strategy_id}/stop",
                self.stop,
                "Set desired_state to stopped",
                {200: StrategyStatus},
                errors=(409,),  # being deleted
            ),
            Endpoint(
                "POST",
                "/strategies/{strategy_id}/execute",
                self.execute,
                "Request a manual run (or join the one already pending), optionally waiting for it",
                {200: Execution, 202: RunRequest},
                errors=(409,),  # being deleted, or halted by its risk guard
                error_bodies={409: StrategyHaltedResponse},
                query=ExecuteQuery,
            ),
            Endpoint(
                "GET",
                "/strategies/{strategy_id}/executions",
                self.list_executions,
                "A strategy's executions, newest first",
                {200: ExecutionList},
                query=ListExecutionsQuery,
            ),
            Endpoint(
                "GET",
                "/strategies/{strategy_id}/orders",
                self.list_orders,
                "A strategy's orders, newest first",
                {200: OrderList},
                query=ListOrdersQuery,
            ),
            Endpoint(
                "GET",
                "/strategies/{strategy_id}/balances",
                self.paper_wallet,
                "A paper strategy's wallet (the starting wallet until its first trade)",
                {200: PaperWallet},
                errors=(409,),  # a live strategy's balances are on the exchange
            ),
            Endpoint("GET", "/executions/{execution_id}", self.get_execution, "One execution", {200: Execution}),
        ]
