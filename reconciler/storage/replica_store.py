"""The replica's side of the database: each method is one short transaction over named statements.

Driver errors are wrapped once here (`reconciler.storage.db.wrap`): callers see `DatabaseUnavailable` for a
lost or refused connection, which the loop retries with backoff, and `StoreError` for anything else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler import risk
from reconciler.outcome import ExecutionOutcome
from reconciler.reconcile import Finalize, NoChange, SetStatus, Spec, Status, decide
from reconciler.storage import jsonb
from reconciler.storage.db import wrap
from reconciler.storage.risk_writes import enqueue_alert, halt
from reconciler.storage.statements import replica as queries
from reconciler.storage.statements import risk as risk_queries

# Given a strategy's code, the language policy's error message, or None when it compiles.
CodeChecker = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Claim:
    """An execution this replica claimed: everything needed to run it, read in the claiming statement."""

    execution_id: UUID
    strategy_id: str
    trigger: str
    scheduled_for: datetime
    claimed_at: datetime
    generation: int
    code: str
    config: dict[str, Any]
    exchange: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Claimed:
    claims: list[Claim]
    # Seconds until the next execution falls due (negative: overdue, e.g. held by another replica),
    # read only when fewer than the free slots were claimed; None: nothing scheduled at all.
    seconds_until_due: float | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    registered: bool  # False: this replica's row was gone (presumed dead), it must register again
    lost: list[UUID]  # executions of dead replicas this heartbeat recorded as lost
    lost_strategies: dict[UUID, str] = field(default_factory=dict)  # their strategies, for the log


@dataclass(frozen=True, slots=True)
class Completion:
    recorded: bool  # False: the execution already had an outcome
    run_requested: bool  # the strategy has run requests that were waiting for this execution


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    examined: int
    updated: int
    finalized: int
    # Seconds until the earliest paused strategy resumes; None: none is paused.
    seconds_until_resume: float | None = None


class ReplicaStore:
    def __init__(self, engine: AsyncEngine, *, replica_id: str, lease_seconds: float) -> None:
        self.engine = engine
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds

    async def _transaction(self, work: Callable[[AsyncConnection], Any]) -> Any:
        try:
            async with self.engine.begin() as conn:
                return await work(conn)
        except Exception as exc:
            raise wrap(exc) from exc

    # --- replicas -----------------------------------------------------------------------------

    async def register(self, *, hostname: str, pid: int, slots: int, version: str, layers: dict[str, Any]) -> None:
        params = {
            "replica_id": self.replica_id,
            "hostname": hostname,
            "pid": pid,
            "slots": slots,
            "version": version,
            "sandbox_layers": json.dumps(layers),
            "lease_seconds": self.lease_seconds,
        }

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(queries.REGISTER_REPLICA, params)

        await self._transaction(work)

    async def heartbeat(self, *, stopping: bool = False, renew: bool = True, mark_lost: bool = False) -> Heartbeat:
        """Renew this replica's lease and (`renew`) its executions' leases, and (`mark_lost`) record
        the executions of dead replicas as lost: one transaction, so an idle replica costs little."""

        async def work(conn: AsyncConnection) -> Heartbeat:
            params = {"replica_id": self.replica_id, "lease_seconds": self.lease_seconds, "stopping": stopping}
            found = (await conn.execute(queries.HEARTBEAT, params)).first() is not None
            if renew:
                await conn.execute(queries.RENEW_LEASES, params)
            rows = (await conn.execute(queries.MARK_LOST)).all() if mark_lost else []
            for row in rows:
                await enqueue_alert(
                    conn, row.strategy_id, "execution_lost", {"execution_id": str(row.execution_id), "error": row.error}
                )
            await _check_failure_streaks(conn, [(row.strategy_id, row.consecutive_failures) for row in rows])
            lost = {row.execution_id: row.strategy_id for row in rows}
            return Heartbeat(registered=found, lost=list(lost), lost_strategies=lost)

        return await self._transaction(work)  # type: ignore[no-any-return]

    async def deregister(self) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(queries.DEREGISTER_REPLICA, {"replica_id": self.replica_id})

        await self._transaction(work)

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, check_code: CodeChecker, *, batch: int = 200) -> ReconcileReport:
        """One batch of the reconcile pass: lock unreconciled specs, decide, write, commit."""

        async def work(conn: AsyncConnection) -> ReconcileReport:
            specs = (await conn.execute(queries.LOCK_UNRECONCILED, {"batch": batch})).mappings().all()
            if not specs:
                return ReconcileReport(0, 0, 0, await _next_resume(conn))
            ids = [row["strategy_id"] for row in specs]
            status_rows = (await conn.execute(queries.LOCK_STATUS_ROWS, {"strategy_ids": ids})).mappings().all()
            statuses = {row["strategy_id"]: _status(row) for row in status_rows}
            now = (await conn.execute(queries.DATABASE_NOW)).scalar_one()
            # Each distinct source once, before deciding (compiles run in worker processes, in parallel,
            # so a batch of strategies sharing one template costs one compile).
            to_check = list(
                dict.fromkeys(r["code"] for r in specs if r["desired_state"] == "running" and not r["delete_requested"])
            )
            verdicts = dict(zip(to_check, await asyncio.gather(*map(check_code, to_check)), strict=True))
            writes: list[dict[str, Any]] = []
            finalized = 0
            for row in specs:
                spec = Spec(
                    strategy_id=row["strategy_id"],
                    generation=row["generation"],
                    desired_state=row["desired_state"],
                    execution_interval=row["execution_interval"],
                    delete_requested=row["delete_requested"],
                    started_at=row["started_at"],
                )
                status = statuses.get(spec.strategy_id)
                needs_check = spec.desired_state == "running" and not spec.delete_requested
                compile_error = verdicts[row["code"]] if needs_check else None
                action = decide(spec, status, now, compile_error)
                if isinstance(action, SetStatus):
                    writes.append(_status_params(spec.strategy_id, action))
                elif isinstance(action, Finalize):
                    await conn.execute(queries.FINALIZE_DELETION, {"strategy_id": spec.strategy_id})
                    finalized += 1
                else:
                    assert isinstance(action, NoChange)
            if writes:
                await conn.execute(queries.UPSERT_STATUS, writes)
                if any(w["next_execution_at"] is not None for w in writes):
                    await conn.execute(queries.NOTIFY_SCHEDULE_CHANGED)
                for write in writes:
                    if write["resumed"]:
                        await enqueue_alert(conn, write["strategy_id"], "resumed", {"status": write["status"]})
            return ReconcileReport(len(specs), len(writes), finalized, await _next_resume(conn))

        return await self._transaction(work)  # type: ignore[no-any-return]

    # --- claims and outcomes ------------------------------------------------------------------

    async def claim(self, slots: int, *, requests: bool = True) -> Claimed:
        """Claim up to `slots` due executions, manual requests first; committed before returning.

        `requests=False` skips the run-request statement when the caller knows none can be pending.
        When fewer than `slots` were due, the same transaction also reads when the next one falls due.
        """
        params = {"slots": slots, "replica_id": self.replica_id, "lease_seconds": self.lease_seconds}

        async def work(conn: AsyncConnection) -> Claimed:
            claims = []
            if requests:
                rows = (await conn.execute(queries.CLAIM_REQUESTED, params)).mappings().all()
                claims = [_claim(row) for row in rows]
            left = slots - len(claims)
            if left > 0:
                rows = (await conn.execute(queries.CLAIM_SCHEDULED, {**params, "slots": left})).mappings().all()
                claims.extend(_claim(row) for row in rows)
            if len(claims) == slots:
                return Claimed(claims, None)
            wait = (await conn.execute(queries.NEXT_DUE)).scalar_one()
            return Claimed(claims, None if wait is None else wait.total_seconds())

        if slots <= 0:
            return Claimed([], None)
        return await self._transaction(work)  # type: ignore[no-any-return]

    async def complete(self, execution_id: UUID, outcome: ExecutionOutcome) -> Completion:
        """Record one outcome (see `complete_many`)."""
        return (await self.complete_many([(execution_id, outcome)]))[execution_id]

    async def complete_many(self, outcomes: list[tuple[UUID, ExecutionOutcome]]) -> dict[UUID, Completion]:
        """Record outcomes in one transaction; per execution, whether it was recorded (False: it already
        had an outcome, e.g. marked lost meanwhile) and whether run requests waited for it."""
        params = {
            "execution_ids": [execution_id for execution_id, _ in outcomes],
            "statuses": [o.status for _, o in outcomes],
            "durations": [o.duration for _, o in outcomes],
            "outputs": [_no_nul(o.output) for _, o in outcomes],
            "truncated": [o.output_truncated for _, o in outcomes],
            "errors": [None if o.error is None else _no_nul(o.error) for _, o in outcomes],
            "results": [None if o.result is None else jsonb.dumps(o.result) for _, o in outcomes],
            "states": [None if o.state is None else jsonb.dumps(o.state) for _, o in outcomes],
        }

        async def work(conn: AsyncConnection) -> dict[UUID, Completion]:
            rows = (await conn.execute(queries.COMPLETE_EXECUTIONS, params)).all()
            await _check_failure_streaks(conn, [(row.strategy_id, row.consecutive_failures) for row in rows])
            done = {row.execution_id: Completion(True, bool(row.run_requested)) for row in rows}
            return {execution_id: done.get(execution_id, Completion(False, False)) for execution_id, _ in outcomes}

        return await self._transaction(work)  # type: ignore[no-any-return]

    # --- retention ----------------------------------------------------------------------------

    async def prune(self, *, retention_seconds: float, batch: int) -> int:
        """Delete one batch of old executions and claimed run requests; the count deleted."""
        params = {"retention_seconds": retention_seconds, "batch": batch}

        async def work(conn: AsyncConnection) -> int:
            executions = (await conn.execute(queries.PRUNE_EXECUTIONS, params)).rowcount
            requests = (await conn.execute(queries.PRUNE_RUN_REQUESTS, params)).rowcount
            await conn.execute(queries.FORGET_DEAD_REPLICAS, {"after_seconds": 86_400})
            return int(executions or 0) + int(requests or 0)

        return await self._transaction(work)  # type: ignore[no-any-return]


async def _next_resume(conn: AsyncConnection) -> float | None:
    wait = (await conn.execute(risk_queries.NEXT_RESUME)).scalar_one()
    return None if wait is None else float(wait.total_seconds())


async def _check_failure_streaks(conn: AsyncConnection, streaks: list[tuple[str, int]]) -> None:
    """After outcomes were recorded: alert on a streak reaching its threshold, halt at the limit.

    Runs in the transaction that recorded them, so the count, the halt and the alert agree.
    """
    failing = [(strategy_id, streak) for strategy_id, streak in streaks if streak > 0]
    if not failing:
        return
    specs = (
        await conn.execute(risk_queries.SELECT_RISK_SPECS, {"strategy_ids": [sid for sid, _ in failing]})
    ).mappings()
    limits = {row["strategy_id"]: risk.RiskLimits.lenient(row["risk"]) for row in specs}
    for strategy_id, streak in failing:
        strategy_limits = limits.get(strategy_id)
        if strategy_limits is None:
            continue
        if risk.failure_alert_due(strategy_limits, streak):
            await enqueue_alert(conn, strategy_id, "consecutive_failures", {"consecutive_failures": streak})
        breach = risk.check_failures(strategy_limits, streak)
        if breach is not None:
            await halt(conn, strategy_id, breach, risk.resume_rule(strategy_limits, breach))


def _status(row: Any) -> Status:
    running = row["running_execution_id"]
    return Status(
        status=row["status"],
        observed_generation=row["observed_generation"],
        schedule_anchor_at=row["schedule_anchor_at"],
        schedule_interval=row["schedule_interval"],
        next_execution_at=row["next_execution_at"],
        running_execution_id=None if running is None else str(running),
        status_reason=row["status_reason"],
        halted_at=row["halted_at"],
        resume_at=row["resume_at"],
    )


def _status_params(strategy_id: str, action: SetStatus) -> dict[str, Any]:
    return {
        "strategy_id": strategy_id,
        "status": action.status,
        "status_reason": action.status_reason,
        "observed_generation": action.observed_generation,
        "schedule_anchor_at": action.schedule_anchor_at,
        "schedule_interval": action.schedule_interval,
        "next_execution_at": action.next_execution_at,
        "resumed": action.resumed,
    }


def _claim(row: Any) -> Claim:
    return Claim(
        execution_id=row["execution_id"],
        strategy_id=row["strategy_id"],
        trigger=row["trigger"],
        scheduled_for=row["scheduled_for"],
        claimed_at=row["claimed_at"],
        generation=row["generation"],
        code=row["code"],
        config=row["config"] or {},
        exchange=row["exchange"],
        state=row["state"] or {},
    )


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL; user output may contain it.
    return text.replace("\x00", "\\x00")
