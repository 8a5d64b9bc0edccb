"""The storage boundary of the executor API: one method per operation, each one short transaction.

Every transaction goes through `reconciler.storage.db.Database`, so callers see only `StoreError` and
its kinds (`DatabaseUnavailable`, `DatabaseTimeout`, `TransactionConflict`), never a driver error.
Domain outcomes are values (`None` for "no such strategy") or `StrategyConflict`.
Records are plain dicts keyed by column name; the API turns them into its response models.
Replicas learn of every desired-state write at once: a trigger (migration 0001) NOTIFYs them.
The Store wraps an engine it does not own: whoever created the engine disposes it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.storage import jsonb
from reconciler.storage.db import Database, SessionLimits, create_engine
from reconciler.storage.statements import api as q
from reconciler.tables import TERMINAL_STATUSES

Record = dict[str, Any]


class StrategyConflict(Exception):
    """A deploy that cannot replace the existing strategy; the message says why."""


class StrategyHalted(Exception):
    """A run request for a strategy its risk guard halted: no claim would take it until the halt
    lifts. `halt` is the status row's account of it (halted_at, halt_limit, halt_value,
    halt_threshold, resume_at, status_reason); the API words the refusal for its own audience."""

    def __init__(self, strategy_id: str, halt: Record) -> None:
        super().__init__(f"strategy {strategy_id!r} is halted by its risk guard")
        self.strategy_id = strategy_id
        self.halt = halt


class KeyHeldByAnotherUser(StrategyConflict):
    """The exchange API key is held by another user's strategy. The message never says whose: one
    tenant must not learn another's key use, nor drain its rate limit by deploying its public key."""


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """What a deploy writes: the whole desired state of one strategy."""

    strategy_id: str
    user_id: str
    name: str
    code: str
    config: dict[str, Any]
    execution_interval: int
    exchange: str
    desired_state: str
    risk: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SealedCredentials:
    key_id: str
    ciphertext: bytes
    # SHA-256 of the API key: an exchange key belongs to one user (see KeyHeldByAnotherUser).
    api_key_digest: str | None = None

    def __repr__(self) -> str:
        return f"SealedCredentials(key_id={self.key_id!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


@dataclass(frozen=True, slots=True)
class Deployed:
    strategy: Record
    created: bool


@dataclass(frozen=True, slots=True)
class Health:
    active_strategies: int
    live_replicas: int
    # Per layer: active on every live replica (an operator must see a layer missing on any host).
    sandbox_layers: dict[str, bool]


@dataclass(frozen=True, slots=True)
class RunWait:
    run_request: Record
    execution: Record | None

    @property
    def finished(self) -> bool:
        return self.execution is not None and self.execution["status"] in TERMINAL_STATUSES


class Store:
    def __init__(self, engine: AsyncEngine, *, operation_timeout: float = 10.0, health_timeout: float = 2.0) -> None:
        self._db = Database(engine, timeout=operation_timeout)
        self._health_timeout = health_timeout

    @classmethod
    def engine_for(cls, url: str, *, pool_size: int, operation_timeout: float = 10.0) -> AsyncEngine:
        """The API's engine: sessions whose server-side limits match the request deadline."""
        return create_engine(
            url,
            pool_size=pool_size,
            application_name="strategy-executor api",
            limits=SessionLimits.for_api(operation_timeout),
        )

    @asynccontextmanager
    async def _transaction(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection]:
        """One transaction, bounded in time: a server that accepts and never answers reads as unavailable.
        Not retried here: the API answers 503 and its client retries."""
        async with self._db.transaction(timeout) as conn:
            yield conn

    # --- desired state ---------------------------------------------------------------------------

    async def deploy(self, spec: StrategySpec, credentials: SealedCredentials | None) -> Deployed:
        """Create the strategy, or replace its spec and bump its generation.

        Credentials are replaced with the spec: a deploy without them removes any stored before, so a
        strategy moved to the paper exchange keeps no secret.
        """
        async with self._transaction() as conn:
            row = (await conn.execute(q.UPSERT_STRATEGY, _spec_values(spec))).first()
            if row is None:
                owner = (await conn.execute(q.SELECT_OWNER, {"strategy_id": spec.strategy_id})).one()
                if owner.delete_requested_at is not None:
                    raise _being_deleted(spec.strategy_id)
                raise StrategyConflict(f"strategy {spec.strategy_id!r} belongs to another user")
            strategy = await _finish_deploy(conn, spec, credentials)
        return Deployed(strategy=strategy, created=bool(row.created))

    async def redeploy(self, spec: StrategySpec, credentials: SealedCredentials | None) -> Deployed | None:
        """Replace the spec of `spec.user_id`'s existing strategy, as `deploy` does, but never create
        one: None when that user has no strategy of that id (never had, or its deletion has finished
        since the caller looked), StrategyConflict while it is being deleted."""
        async with self._transaction() as conn:
            if (await conn.execute(q.REPLACE_STRATEGY, _spec_values(spec))).first() is None:
                if await _one(conn, q.SELECT_OWNED, strategy_id=spec.strategy_id, user_id=spec.user_id) is None:
                    return None
                raise _being_deleted(spec.strategy_id)
            strategy = await _finish_deploy(conn, spec, credentials)
        return Deployed(strategy=strategy, created=False)

    # `user_id` (the tenant API): act only on that user's strategy; another user's reads as unknown.

    async def set_desired_state(
        self, strategy_id: str, desired_state: str, *, user_id: str | None = None
    ) -> Record | None:
        """Set running/stopped and bump the generation; None when unknown or being deleted."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            wanted = {"strategy_id": strategy_id, "desired_state": desired_state}
            if (await conn.execute(q.SET_DESIRED_STATE, wanted)).first() is None:
                return None
            return await _one(conn, q.SELECT_STATUS, strategy_id=strategy_id)

    async def request_deletion(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        """Mark for deletion (idempotent); the strategy's status, or None when unknown."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            await conn.execute(q.REQUEST_DELETION, {"strategy_id": strategy_id})
            return await _one(conn, q.SELECT_STATUS, strategy_id=strategy_id)

    async def request_run(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        """Record a manual run request, or join the strategy's pending one (`already_pending` true,
        the same `run_request_id`); None when the strategy is unknown or being deleted.

        Raises StrategyHalted while the risk guard holds the strategy. A halt written just after this
        check leaves the request pending until the halt lifts, as for one made before the halt; at
        most one such request per strategy exists (REQUEST_RUN)."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            halt = await _one(conn, q.SELECT_HALT, strategy_id=strategy_id)
            if halt is not None:
                raise StrategyHalted(strategy_id, halt)
            return await _one(conn, q.REQUEST_RUN, strategy_id=strategy_id)

    # --- reads -----------------------------------------------------------------------------------

    async def get_spec(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            return await _one(conn, q.SELECT_SPEC, strategy_id=strategy_id)

    async def get_status(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            return await _one(conn, q.SELECT_STATUS, strategy_id=strategy_id)

    async def list_strategies(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        user_id: str | None = None,
        status: str | None = None,
        include_code: bool = False,
    ) -> list[Record]:
        stmt = q.list_strategies(
            by_user=user_id is not None,
            by_status=status is not None,
            after=after is not None,
            include_code=include_code,
        )
        params: dict[str, Any] = {"limit": limit, "user_id": user_id, "status": status}
        if after is not None:
            params |= {"after_created_at": after[0], "after_strategy_id": after[1]}
        async with self._transaction() as conn:
            return await _all(conn, stmt, **params)

    async def list_executions(
        self,
        strategy_id: str,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
        status: str | None = None,
    ) -> list[Record] | None:
        """Newest first; None when the strategy is unknown."""
        async with self._transaction() as conn:
            if await _one(conn, q.SELECT_STRATEGY_EXISTS, strategy_id=strategy_id) is None:
                return None
            return await _executions(conn, strategy_id, limit=limit, after=after, status=status)

    async def get_execution(self, execution_id: uuid.UUID) -> Record | None:
        async with self._transaction() as conn:
            return await _one(conn, q.SELECT_EXECUTION, execution_id=execution_id)

    async def list_orders(
        self, strategy_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[Record] | None:
        """Newest first; None when the strategy is unknown."""
        async with self._transaction() as conn:
            if await _one(conn, q.SELECT_STRATEGY_EXISTS, strategy_id=strategy_id) is None:
                return None
            return await _orders(conn, strategy_id, limit=limit, after=after)

    async def paper_balances(self, strategy_id: str) -> tuple[str, list[Record]] | None:
        """The strategy's exchange and its paper wallet rows (none before its first trade); None if unknown."""
        async with self._transaction() as conn:
            strategy = await _one(conn, q.SELECT_STRATEGY_EXISTS, strategy_id=strategy_id)
            if strategy is None:
                return None
            return strategy["exchange"], await _all(conn, q.SELECT_PAPER_BALANCES, strategy_id=strategy_id)

    async def get_run(self, run_request_id: int) -> RunWait | None:
        """A run request and the execution a replica started for it, if any."""
        async with self._transaction() as conn:
            request = await _one(conn, q.SELECT_RUN_REQUEST, run_request_id=run_request_id)
            if request is None:
                return None
            execution = None
            if request["execution_id"] is not None:
                execution = await _one(conn, q.SELECT_EXECUTION, execution_id=request["execution_id"])
            return RunWait(run_request=request, execution=execution)

    async def wait_for_run(self, run_request_id: int, *, timeout: float, poll_interval: float = 0.1) -> RunWait | None:
        """Poll until the run's execution reaches a terminal status or `timeout` seconds pass.

        Each poll is its own short transaction: nothing is held open while waiting. The deadline is a
        duration on the local monotonic clock; no time measured here is ever stored.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            run = await self.get_run(run_request_id)
            if run is None or run.finished:
                return run
            remaining = deadline - loop.time()
            if remaining <= 0:
                return run
            await asyncio.sleep(min(poll_interval, remaining))

    # --- webhooks --------------------------------------------------------------------------------

    async def create_webhook(
        self, *, webhook_id: uuid.UUID, user_id: str, url: str, events: list[str], key_id: str, sealed: bytes
    ) -> Record:
        values = {
            "webhook_id": webhook_id,
            "user_id": user_id,
            "url": url,
            "events": events,
            "key_id": key_id,
            "secret": sealed,
        }
        async with self._transaction() as conn:
            return dict((await conn.execute(q.INSERT_WEBHOOK, values)).mappings().one())

    async def list_webhooks(self, user_id: str | None) -> list[Record]:
        async with self._transaction() as conn:
            return await _all(conn, q.LIST_WEBHOOKS, user_id=user_id)

    async def get_webhook(self, webhook_id: uuid.UUID) -> Record | None:
        async with self._transaction() as conn:
            return await _one(conn, q.SELECT_WEBHOOK, webhook_id=webhook_id)

    async def delete_webhook(self, webhook_id: uuid.UUID) -> Record | None:
        """Delete a webhook and its undelivered alerts; None when unknown."""
        async with self._transaction() as conn:
            return await _one(conn, q.DELETE_WEBHOOK, webhook_id=webhook_id)

    async def list_deliveries(self, webhook_id: uuid.UUID, *, limit: int) -> list[Record] | None:
        async with self._transaction() as conn:
            if await _one(conn, q.SELECT_WEBHOOK, webhook_id=webhook_id) is None:
                return None
            return await _all(conn, q.LIST_DELIVERIES, webhook_id=webhook_id, limit=limit)

    # --- the tenant API ----------------------------------------------------------------------------

    async def find_live_by_name(self, user_id: str, name: str) -> str | None:
        """The user's strategy of that name that is not being deleted (the newest), for a redeploy."""
        async with self._transaction() as conn:
            found = (await conn.execute(q.SELECT_LIVE_BY_NAME, {"user_id": user_id, "name": name})).scalar_one_or_none()
        return None if found is None else str(found)

    async def list_user_deployments(
        self, user_id: str, *, limit: int, after: tuple[datetime, str] | None = None, recent: int = 20
    ) -> tuple[list[Record], dict[str, list[Record]]]:
        """A user's strategies with status and statistics, and each one's last `recent` outcomes."""
        async with self._transaction() as conn:
            params: dict[str, Any] = {"user_id": user_id, "limit": limit}
            if after is not None:
                params |= {"after_created_at": after[0], "after_strategy_id": after[1]}
            rows = await _all(conn, q.list_user_status(after=after is not None), **params)
            outcomes: dict[str, list[Record]] = {row["strategy_id"]: [] for row in rows}
            if rows and recent > 0:
                recent_rows = await _all(
                    conn, q.SELECT_RECENT_OUTCOMES, strategy_ids=list(outcomes), per_strategy=recent
                )
                for row in recent_rows:
                    outcomes[row["strategy_id"]].append(row)
        return rows, outcomes

    async def recent_outcomes(self, strategy_id: str, *, recent: int = 20) -> list[Record]:
        """One strategy's last `recent` outcomes, as `list_user_deployments` gives each (the caller
        has checked whose it is)."""
        async with self._transaction() as conn:
            return await _all(conn, q.SELECT_RECENT_OUTCOMES, strategy_ids=[strategy_id], per_strategy=recent)

    async def deployment_detail(
        self, strategy_id: str, user_id: str, *, executions: int = 20, orders: int = 20, wallet_points: int = 200
    ) -> Record | None:
        """Everything a bot's page shows, read in one transaction; None when not the user's."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            status = await _one(conn, q.SELECT_STATUS, strategy_id=strategy_id)
            spec = await _one(conn, q.SELECT_SPEC, strategy_id=strategy_id)
            if status is None or spec is None:
                return None
            state = (await conn.execute(q.SELECT_STRATEGY_STATE, {"strategy_id": strategy_id})).scalar_one_or_none()
            recent = await _executions(conn, strategy_id, limit=executions, after=None, status=None)
            recent_orders = await _orders(conn, strategy_id, limit=orders, after=None)
            balances = await _all(conn, q.SELECT_PAPER_BALANCES, strategy_id=strategy_id)
            history = await _all(conn, q.SELECT_WALLET_HISTORY, strategy_id=strategy_id, limit=wallet_points)
        return {
            **status,
            "code": spec["code"],
            "config": spec["config"],
            "state": state if state is not None else {},
            "executions": recent,
            "orders": recent_orders,
            "balances": balances,
            "wallet_history": list(reversed(history)),
        }

    # --- health ----------------------------------------------------------------------------------

    async def health(self) -> Health:
        """Counts for /health, bounded by the (shorter) `health_timeout`."""
        async with self._transaction(self._health_timeout) as conn:
            active = (await conn.execute(q.COUNT_ACTIVE_STRATEGIES)).scalar_one()
            live = await _all(conn, q.SELECT_LIVE_REPLICAS)
        reports = [r["sandbox_layers"] if isinstance(r["sandbox_layers"], dict) else {} for r in live]
        names = sorted(set().union(*reports))
        layers = {name: all(bool(report.get(name)) for report in reports) for name in names}
        return Health(active_strategies=int(active), live_replicas=len(live), sandbox_layers=layers)


def _spec_values(spec: StrategySpec) -> dict[str, Any]:
    return asdict(spec) | {"config": jsonb.dumps(spec.config), "risk": jsonb.dumps(spec.risk)}


def _being_deleted(strategy_id: str) -> StrategyConflict:
    return StrategyConflict(
        f"strategy {strategy_id!r} is being deleted; deploy it again once the deletion has finished, "
        "or choose another strategy_id"
    )


async def _finish_deploy(conn: AsyncConnection, spec: StrategySpec, credentials: SealedCredentials | None) -> Record:
    """Replace the credentials of a spec just written (in its transaction); the strategy's spec record."""
    if credentials is None:
        await conn.execute(q.DELETE_CREDENTIALS, {"strategy_id": spec.strategy_id})
    else:
        digest = credentials.api_key_digest
        if digest is not None:
            await conn.execute(q.LOCK_API_KEY, {"api_key_digest": digest})
            held = {"api_key_digest": digest, "user_id": spec.user_id}
            if (await conn.execute(q.API_KEY_HELD_BY_ANOTHER_USER, held)).scalar_one():
                raise KeyHeldByAnotherUser(
                    "this exchange API key is already used by another user's strategy; an API key belongs to one user"
                )
        await conn.execute(
            q.UPSERT_CREDENTIALS,
            {
                "strategy_id": spec.strategy_id,
                "key_id": credentials.key_id,
                "credentials": credentials.ciphertext,
                "api_key_digest": digest,
            },
        )
    return dict((await conn.execute(q.SELECT_SPEC, {"strategy_id": spec.strategy_id})).mappings().one())


async def _owned(conn: AsyncConnection, strategy_id: str, user_id: str | None) -> bool:
    """True without a user (the executor API sees every strategy), else whether it is theirs. A
    strategy's user never changes (a redeploy by another user is refused), so a check in the same
    transaction as the work that follows it holds for that work."""
    if user_id is None:
        return True
    return await _one(conn, q.SELECT_OWNED, strategy_id=strategy_id, user_id=user_id) is not None


async def _executions(
    conn: AsyncConnection,
    strategy_id: str,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    status: str | None,
) -> list[Record]:
    params: dict[str, Any] = {"strategy_id": strategy_id, "limit": limit, "status": status}
    if after is not None:
        params |= {"after_scheduled_for": after[0], "after_execution_id": after[1]}
    return await _all(conn, q.list_executions(by_status=status is not None, after=after is not None), **params)


async def _orders(
    conn: AsyncConnection, strategy_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Record]:
    params: dict[str, Any] = {"strategy_id": strategy_id, "limit": limit}
    if after is not None:
        params |= {"after_created_at": after[0], "after_order_id": after[1]}
    return await _all(conn, q.list_orders(after=after is not None), **params)


async def _one(conn: AsyncConnection, stmt: TextClause, **params: Any) -> Record | None:
    row = (await conn.execute(stmt, params)).mappings().first()
    return dict(row) if row is not None else None


async def _all(conn: AsyncConnection, stmt: TextClause, **params: Any) -> list[Record]:
    return [dict(row) for row in (await conn.execute(stmt, params)).mappings().all()]
