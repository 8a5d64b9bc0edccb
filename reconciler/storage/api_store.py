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

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.storage.db import Database, SessionLimits, create_engine
from reconciler.storage.statements import api as q
from reconciler.tables import TERMINAL_STATUSES

Record = dict[str, Any]


class StrategyConflict(Exception):
    """A deploy that cannot replace the existing strategy; the message says why."""


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
            row = (await conn.execute(q.upsert_strategy(asdict(spec)))).first()
            if row is None:
                owner = (await conn.execute(q.select_owner(spec.strategy_id))).one()
                if owner.delete_requested_at is not None:
                    raise StrategyConflict(
                        f"strategy {spec.strategy_id!r} is being deleted; deploy it again once the deletion "
                        "has finished, or choose another strategy_id"
                    )
                raise StrategyConflict(f"strategy {spec.strategy_id!r} belongs to another user")
            if credentials is None:
                await conn.execute(q.delete_credentials(spec.strategy_id))
            else:
                digest = credentials.api_key_digest
                if digest is not None:
                    await conn.execute(q.lock_api_key(digest))
                    if (await conn.execute(q.api_key_held_by_another_user(digest, spec.user_id))).scalar_one():
                        raise KeyHeldByAnotherUser(
                            "this exchange API key is already used by another user's strategy; an API key"
                            " belongs to one user"
                        )
                await conn.execute(
                    q.upsert_credentials(spec.strategy_id, credentials.key_id, credentials.ciphertext, digest)
                )
            strategy = (await conn.execute(q.select_spec(spec.strategy_id))).mappings().one()
        return Deployed(strategy=dict(strategy), created=bool(row.created))

    # `user_id` (the tenant API): act only on that user's strategy; another user's reads as unknown.

    async def set_desired_state(
        self, strategy_id: str, desired_state: str, *, user_id: str | None = None
    ) -> Record | None:
        """Set running/stopped and bump the generation; None when unknown or being deleted."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            if (await conn.execute(q.set_desired_state(strategy_id, desired_state))).first() is None:
                return None
            return await _one(conn, q.select_status(strategy_id))

    async def request_deletion(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        """Mark for deletion (idempotent); the strategy's status, or None when unknown."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            await conn.execute(q.request_deletion(strategy_id))
            return await _one(conn, q.select_status(strategy_id))

    async def request_run(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        """Record a manual run request; None when the strategy is unknown or being deleted."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            return await _one(conn, q.insert_run_request(strategy_id))

    # --- reads -----------------------------------------------------------------------------------

    async def get_spec(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            return await _one(conn, q.select_spec(strategy_id))

    async def get_status(self, strategy_id: str, *, user_id: str | None = None) -> Record | None:
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            return await _one(conn, q.select_status(strategy_id))

    async def list_strategies(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        user_id: str | None = None,
        status: str | None = None,
        include_code: bool = False,
    ) -> list[Record]:
        stmt = q.list_strategies(limit=limit, after=after, user_id=user_id, status=status, include_code=include_code)
        async with self._transaction() as conn:
            return await _all(conn, stmt)

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
            if (await conn.execute(q.select_strategy_exists(strategy_id))).first() is None:
                return None
            return await _all(conn, q.list_executions(strategy_id, limit=limit, after=after, status=status))

    async def get_execution(self, execution_id: uuid.UUID) -> Record | None:
        async with self._transaction() as conn:
            return await _one(conn, q.select_execution(execution_id))

    async def list_orders(
        self, strategy_id: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
    ) -> list[Record] | None:
        """Newest first; None when the strategy is unknown."""
        async with self._transaction() as conn:
            if (await conn.execute(q.select_strategy_exists(strategy_id))).first() is None:
                return None
            return await _all(conn, q.list_orders(strategy_id, limit=limit, after=after))

    async def paper_balances(self, strategy_id: str) -> tuple[str, list[Record]] | None:
        """The strategy's exchange and its paper wallet rows (none before its first trade); None if unknown."""
        async with self._transaction() as conn:
            strategy = (await conn.execute(q.select_strategy_exists(strategy_id))).first()
            if strategy is None:
                return None
            return strategy.exchange, await _all(conn, q.select_paper_balances(strategy_id))

    async def get_run(self, run_request_id: int) -> RunWait | None:
        """A run request and the execution a replica started for it, if any."""
        async with self._transaction() as conn:
            request = await _one(conn, q.select_run_request(run_request_id))
            if request is None:
                return None
            execution = None
            if request["execution_id"] is not None:
                execution = await _one(conn, q.select_execution(request["execution_id"]))
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
            return dict((await conn.execute(q.insert_webhook(values))).mappings().one())

    async def list_webhooks(self, user_id: str | None) -> list[Record]:
        async with self._transaction() as conn:
            return await _all(conn, q.list_webhooks(user_id))

    async def get_webhook(self, webhook_id: uuid.UUID) -> Record | None:
        async with self._transaction() as conn:
            return await _one(conn, q.select_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: uuid.UUID) -> Record | None:
        """Delete a webhook and its undelivered alerts; None when unknown."""
        async with self._transaction() as conn:
            return await _one(conn, q.delete_webhook(webhook_id))

    async def list_deliveries(self, webhook_id: uuid.UUID, *, limit: int) -> list[Record] | None:
        async with self._transaction() as conn:
            if await _one(conn, q.select_webhook(webhook_id)) is None:
                return None
            return await _all(conn, q.list_deliveries(webhook_id, limit))

    # --- the tenant API ----------------------------------------------------------------------------

    async def find_live_by_name(self, user_id: str, name: str) -> str | None:
        """The user's strategy of that name that is not being deleted (the newest), for a redeploy."""
        async with self._transaction() as conn:
            found = (await conn.execute(q.select_live_by_name(user_id, name))).scalar_one_or_none()
        return None if found is None else str(found)

    async def list_user_deployments(
        self, user_id: str, *, limit: int, after: tuple[datetime, str] | None = None, recent: int = 20
    ) -> tuple[list[Record], dict[str, list[Record]]]:
        """A user's strategies with status and statistics, and each one's last `recent` outcomes."""
        async with self._transaction() as conn:
            rows = await _all(conn, q.list_user_status(user_id, limit=limit, after=after))
            outcomes: dict[str, list[Record]] = {row["strategy_id"]: [] for row in rows}
            if rows and recent > 0:
                for row in await _all(conn, q.select_recent_outcomes(list(outcomes), recent)):
                    outcomes[row["strategy_id"]].append(row)
        return rows, outcomes

    async def deployment_detail(
        self, strategy_id: str, user_id: str, *, executions: int = 20, orders: int = 20, wallet_points: int = 200
    ) -> Record | None:
        """Everything a bot's page shows, read in one transaction; None when not the user's."""
        async with self._transaction() as conn:
            if not await _owned(conn, strategy_id, user_id):
                return None
            status = await _one(conn, q.select_status(strategy_id))
            spec = await _one(conn, q.select_spec(strategy_id))
            if status is None or spec is None:
                return None
            state = (await conn.execute(q.select_strategy_state(strategy_id))).scalar_one_or_none()
            recent = await _all(conn, q.list_executions(strategy_id, limit=executions, after=None, status=None))
            recent_orders = await _all(conn, q.list_orders(strategy_id, limit=orders, after=None))
            balances = await _all(conn, q.select_paper_balances(strategy_id))
            history = await _all(conn, q.select_wallet_history(strategy_id, limit=wallet_points))
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
            live = (await conn.execute(q.SELECT_LIVE_REPLICAS)).all()
        reports = [r.sandbox_layers if isinstance(r.sandbox_layers, dict) else {} for r in live]
        names = sorted(set().union(*reports))
        layers = {name: all(bool(report.get(name)) for report in reports) for name in names}
        return Health(active_strategies=int(active), live_replicas=len(live), sandbox_layers=layers)


async def _owned(conn: AsyncConnection, strategy_id: str, user_id: str | None) -> bool:
    """True without a user (the executor API sees every strategy), else whether it is theirs. A
    strategy's user never changes (a redeploy by another user is refused), so a check in the same
    transaction as the work that follows it holds for that work."""
    if user_id is None:
        return True
    return (await conn.execute(q.select_owned(strategy_id, user_id))).first() is not None


async def _one(conn: AsyncConnection, stmt: Any) -> Record | None:
    row = (await conn.execute(stmt)).mappings().first()
    return dict(row) if row is not None else None


async def _all(conn: AsyncConnection, stmt: Any) -> list[Record]:
    return [dict(row) for row in (await conn.execute(stmt)).mappings().all()]
