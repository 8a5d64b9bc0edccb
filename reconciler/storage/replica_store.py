"""The replica's side of the database: each method is one short transaction over named statements.

Every transaction runs through `Database.run`, which wraps driver errors once and classifies them
(`reconciler.storage.db`): callers see `DatabaseUnavailable` for a lost or refused connection, which
the loop waits out with backoff, `DatabaseTimeout`/`TransactionConflict`, or `StoreError` for a bug.
The reconcile decision itself is pure and passed in (`decide`), like the language policy's verdict.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.rows import DictRow
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from reconciler import risk
from reconciler.outcome import ExecutionOutcome
from reconciler.reconcile import Action, Finalize, NoChange, SetStatus, Spec, Status
from reconciler.storage import jsonb
from reconciler.storage.db import Database, StoreError, Wire
from reconciler.storage.exchange_store import RiskView, view_of
from reconciler.storage.fence import Fence
from reconciler.storage.risk_writes import enqueue_alert, halt
from reconciler.storage.statements import partitions as partition_queries
from reconciler.storage.statements import replica as queries
from reconciler.storage.statements import risk as risk_queries

log = logging.getLogger(__name__)

# Given a strategy's code, the language policy's error message, or None when it compiles (compiles run
# in worker processes, so the check is awaited).
CodeChecker = Callable[[str], Awaitable[str | None]]
# The pure reconcile decision (`reconciler.reconcile.decide`): (spec, status, now, compile error) -> action.
Decide = Callable[[Spec, Status | None, datetime, str | None], Action]


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
    fence: Fence
    # A paper execution's risk view and paper wallet as the claim read them (None for another
    # exchange): its closing measure when it makes no client call (`BrokerFactory.session`).
    claimed_view: tuple[RiskView, dict[str, Decimal]] | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    claims: list[Claim]
    # Seconds until the next execution falls due (negative: overdue, e.g. held by another replica),
    # read only when fewer than the free slots were claimed; None: nothing scheduled at all.
    seconds_until_due: float | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    registered: bool  # False: this replica's row was gone (presumed dead), it must register again
    renewed: frozenset[UUID]  # the named executions whose leases were renewed
    fenced: frozenset[UUID]  # the named executions fenced off (lost, expired, another token): kill them
    lost: list[UUID]  # executions whose leases had expired, recorded as lost by this heartbeat
    lost_strategies: dict[UUID, str] = field(default_factory=dict)  # their strategies, for the log


@dataclass(frozen=True, slots=True)
class Completion:
    recorded: bool  # False: fenced off (already had an outcome, e.g. marked lost; or its lease expired)
    run_requested: bool  # the strategy has run requests that were waiting for this execution
    # The strategy is waiting to be deleted: its deletion was deferred while this execution ran, and
    # can be finalized now (by a reconcile pass, which nothing else would trigger until the resync).
    deletion_pending: bool = False
    # Seconds until the strategy's next tick falls due (negative: already due), None: none scheduled.
    # Read as the outcome was recorded; the strategy was not claimable while the execution ran.
    next_due_in: float | None = None


@dataclass(frozen=True, slots=True)
class Partitions:
    """What one round of partition maintenance did (days are UTC days of `scheduled_for`)."""

    created: list[date] = field(default_factory=list)
    dropped: list[date] = field(default_factory=list)
    # Past the retention but kept: an execution in that day is still in flight.
    kept_in_flight: list[date] = field(default_factory=list)
    # Not created: rows of the day already sit in the default partition (no day existed for them).
    left_to_default: list[date] = field(default_factory=list)
    # Steps skipped because another replica held the maintenance lock at that moment.
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    examined: int
    updated: int
    finalized: int
    # Seconds until the earliest paused strategy resumes; None: none is paused.
    seconds_until_resume: float | None = None
    # Unreconciled strategies this pass could not lock: another replica's pass held them (see
    # statements.replica.PASS_END). The loop looks again shortly rather than at the next resync.
    held: int = 0
    # The pass wrote a schedule a claim can act on (a strategy scheduled anew, a tick moved): the
    # replica claims after it. And whether a run request waits to be claimed.
    scheduled: bool = False
    requests: bool = False


class ReplicaStore:
    def __init__(self, db: Database, *, replica_id: str, lease_seconds: float) -> None:
        self.db = db
        self.replica_id = replica_id
        self.lease_seconds = lease_seconds
        # This replica's fencing epoch, drawn at each registration; claims are stamped with it.
        self.epoch = 0
        # The language policy's verdicts on the code this replica's passes checked (see `reconcile`).
        self._verdicts = _Verdicts()

    # --- replicas -----------------------------------------------------------------------------

    async def register(self, *, hostname: str, pid: int, slots: int, version: str, layers: dict[str, Any]) -> int:
        """Register (again) under a new epoch, which fences off everything claimed under an older one."""
        params = {
            "replica_id": self.replica_id,
            "hostname": hostname,
            "pid": pid,
            "slots": slots,
            "version": version,
            "sandbox_layers": json.dumps(layers),
            "lease_seconds": self.lease_seconds,
        }

        async def work(conn: AsyncConnection) -> int:
            return int((await conn.execute(queries.REGISTER_REPLICA, params)).scalar_one())

        self.epoch = await self.db.run(work)
        return self.epoch

    async def heartbeat(
        self, *, stopping: bool = False, renew: Sequence[Fence] = (), mark_lost: bool = False
    ) -> Heartbeat:
        """Renew this replica's lease and the leases of the executions in `renew` (those not renewed
        are fenced off), and (`mark_lost`) record as lost the executions whose leases expired: one
        transaction, so an idle replica costs little."""
        params = {
            "replica_id": self.replica_id,
            "epoch": self.epoch,
            "lease_seconds": self.lease_seconds,
            "stopping": stopping,
        }
        renewals = {
            **params,
            "execution_ids": [fence.execution_id for fence in renew],
            "scheduled_fors": [fence.scheduled_for for fence in renew],
            **_key_range([fence.scheduled_for for fence in renew]),
            "tokens": [fence.token for fence in renew],
        }

        async def work(conn: AsyncConnection) -> Heartbeat:
            found = (await conn.execute(queries.HEARTBEAT, params)).first() is not None
            rows = (await conn.execute(queries.RENEW_LEASES, renewals)).all() if renew and found else []
            renewed = frozenset(row.execution_id for row in rows if row.renewed)
            fenced = frozenset(row.execution_id for row in rows if not row.renewed)
            rows = (await conn.execute(queries.MARK_LOST)).all() if mark_lost else []
            for row in rows:
                await enqueue_alert(
                    conn, row.strategy_id, "execution_lost", {"execution_id": str(row.execution_id), "error": row.error}
                )
            await _check_failure_streaks(conn, [(row.strategy_id, row.consecutive_failures) for row in rows])
            lost = {row.execution_id: row.strategy_id for row in rows}
            return Heartbeat(found, renewed, fenced, list(lost), lost_strategies=lost)

        return await self.db.run(work)

    async def deregister(self) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(queries.DEREGISTER_REPLICA, {"replica_id": self.replica_id})

        await self.db.run(work)

    # --- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, decide: Decide, check_code: CodeChecker, *, batch: int = 200) -> ReconcileReport:
        """One batch of the reconcile pass: lock unreconciled specs, `decide`, write, commit.

        Locks first. Every replica wakes for every desired-state write and only one of them gets the
        rows; the others skip them (SKIP LOCKED) and stop after that one statement (and PASS_END),
        without reading the specs apart or checking their code. Before, each replica read the specs,
        checked new code and only then found the rows taken: three replicas did that work three
        times for each API write, on the same cores as the API (see the README's Performance).

        The code is never checked inside the transaction that locks: a compile takes as long as it
        takes, and a transaction that sat idle for it would hold the strategies' locks meanwhile (and
        be ended by idle_in_transaction_session_timeout), so API writes to them would queue behind it.
        A transaction decides the specs whose code needs no check (stopped, being deleted) or whose
        verdict this replica already knows (a start, a stop, a config change, code seen before), and
        leaves the rest locked but untouched. Once it has committed, their code is checked (each
        distinct source once, in parallel) and a second transaction locks and decides them; a spec
        deployed again meanwhile is left for the wake-up that write sends.
        """
        total = ReconcileReport(0, 0, 0)
        for _ in range(2):
            report, unchecked = await self.db.run(lambda conn: self._reconcile_locked(conn, decide, batch))
            total = ReconcileReport(
                total.examined + report.examined,
                total.updated + report.updated,
                total.finalized + report.finalized,
                report.seconds_until_resume,
                held=report.held,
                scheduled=total.scheduled or report.scheduled,
                requests=report.requests,
            )
            if not unchecked:
                break
            codes = list(unchecked)
            for code, verdict in zip(codes, await asyncio.gather(*map(check_code, codes)), strict=True):
                self._verdicts.remember(code, verdict)
        return total

    async def _reconcile_locked(
        self, conn: AsyncConnection, decide: Decide, batch: int
    ) -> tuple[ReconcileReport, set[str]]:
        """One locking transaction of the pass: the report, and the code it found no verdict for."""
        specs = (await conn.execute(queries.LOCK_UNRECONCILED, {"batch": batch})).mappings().all()
        if not specs:
            # Nothing unreconciled, or every one held by another replica's pass (counted).
            end = await _pass_end(conn, [], batch)
            return ReconcileReport(0, 0, 0, end.wait, held=end.held, requests=end.requests), set()
        unchecked: set[str] = set()
        ready: list[tuple[Spec, str | None]] = []
        for row in specs:
            spec = Spec(
                strategy_id=row["strategy_id"],
                generation=row["generation"],
                desired_state=row["desired_state"],
                execution_interval=row["execution_interval"],
                delete_requested=row["delete_requested"],
                started_at=row["started_at"],
                changed_at=row["updated_at"],
            )
            if spec.desired_state == "running" and not spec.delete_requested:
                known, compile_error = self._verdicts.get(row["code"])
                if not known:
                    unchecked.add(row["code"])  # checked after this transaction; decided by the next
                    continue
                ready.append((spec, compile_error))
            else:
                ready.append((spec, None))
        locked = [row["strategy_id"] for row in specs]
        ids = [spec.strategy_id for spec, _ in ready]
        writes: list[dict[str, Any]] = []
        finalized = 0
        newly_due = False
        if ready:
            status_rows = (await conn.execute(queries.LOCK_STATUS_ROWS, {"strategy_ids": ids})).mappings().all()
            statuses = {row["strategy_id"]: _status(row) for row in status_rows}
            now = specs[0]["now"]  # the transaction's start, as every now() in it
            for spec, compile_error in ready:
                status = statuses.get(spec.strategy_id)
                action = decide(spec, status, now, compile_error)
                if isinstance(action, SetStatus):
                    writes.append(_status_params(spec.strategy_id, action))
                    newly_due = newly_due or _newly_due(status, action)
                elif isinstance(action, Finalize):
                    await conn.execute(queries.FINALIZE_DELETION, {"strategy_id": spec.strategy_id})
                    finalized += 1
                else:
                    assert isinstance(action, NoChange)
            if writes:
                await conn.execute(queries.UPSERT_STATUS, writes)
                if newly_due:
                    await conn.execute(queries.NOTIFY_SCHEDULE_CHANGED, {"replica_id": self.replica_id})
                for write in writes:
                    if write["resumed"]:
                        await enqueue_alert(conn, write["strategy_id"], "resumed", {"status": write["status"]})
            await conn.execute(queries.MARK_RECONCILED, {"strategy_ids": ids})
        end = await _pass_end(conn, locked, batch)
        report = ReconcileReport(
            len(ready), len(writes), finalized, end.wait, held=end.held, scheduled=newly_due, requests=end.requests
        )
        return report, unchecked

    # --- claims and outcomes ------------------------------------------------------------------

    async def claim(self, slots: int, *, requests: bool = True) -> Claimed:
        """Claim up to `slots` due executions, manual requests first; committed before returning.

        `requests=False` skips the run-request statement when the caller knows none can be pending.
        When fewer than `slots` were due, a read of when the next one falls due follows.
        Nothing is claimed unless this replica's lease is live under its current epoch.

        Each statement is a transaction of its own (autocommit): a claiming statement is atomic by
        itself, so BEGIN and COMMIT added two round trips to each claim and nothing else (at capacity a
        claim is the one statement). A statement that fails has committed nothing and is the only one
        retried; executions an earlier statement claimed are returned (and run) in spite of the failure.
        """
        params = {
            "slots": slots,
            "replica_id": self.replica_id,
            "epoch": self.epoch,
            "lease_seconds": self.lease_seconds,
        }
        if slots <= 0:
            return Claimed([], None)
        claims: list[Claim] = []
        try:
            if requests:
                claims = [self._claim(row) for row in await self._claim_statement(queries.CLAIM_REQUESTED, params)]
            left = slots - len(claims)
            if left > 0:
                rows = await self._claim_statement(queries.CLAIM_SCHEDULED, {**params, "slots": left})
                claims.extend(self._claim(row) for row in rows)
            if len(claims) == slots:
                return Claimed(claims, None)
            [due] = await self._claim_statement(queries.NEXT_DUE, None)
        except StoreError as exc:
            if not claims:
                raise
            # Committed: they are this replica's to run. The next pass meets the failure again.
            log.warning("claimed %d executions, then: %s", len(claims), exc)
            return Claimed(claims, None)
        wait = due["wait"]
        return Claimed(claims, None if wait is None else wait.total_seconds())

    async def _claim_statement(self, statement: TextClause, params: dict[str, Any] | None) -> list[DictRow]:
        async def work(wire: Wire) -> list[DictRow]:
            [rows] = await wire.send((statement, params))
            return rows

        return await self.db.run_wire(work, autocommit=True, lane="claims")

    async def complete(self, fence: Fence, outcome: ExecutionOutcome) -> Completion:
        """Record one outcome (see `complete_many`)."""
        return (await self.complete_many([(fence, outcome)]))[fence.execution_id]

    async def complete_many(
        self,
        outcomes: Sequence[tuple[Fence, ExecutionOutcome]],
        *,
        ended_ago: Sequence[float] | None = None,
        wallets: Sequence[tuple[Decimal, str] | None] | None = None,
    ) -> dict[UUID, Completion]:
        """Record outcomes (and STATE) in one transaction, each under its fencing check; per execution,
        whether it was recorded (False: fenced off, e.g. marked lost meanwhile or its lease expired) and
        whether run requests waited for it. An outcome an earlier run of the batch recorded (a commit
        whose reply was lost, run again by the transaction boundary) counts as recorded, once.
        `ended_ago`: per outcome, the seconds since its process ended (its times are then those of the
        run, not of this statement); none: just now. `wallets`: per outcome, a paper wallet's closing
        value and currency, or None."""
        params = outcome_params(self.replica_id, outcomes, ended_ago=ended_ago, wallets=wallets)

        async def recorded_before(wire: Wire, rows: list[DictRow]) -> list[DictRow]:
            # Fewer finished than sent: some may be this replica's own outcomes, committed by an
            # earlier run of this batch whose reply was lost (statements.replica.RECORDED_BEFORE).
            # Only then, so a batch that finished every execution stays one statement.
            if len(rows) >= len(outcomes):
                return []
            [earlier] = await wire.send((queries.RECORDED_BEFORE, params))
            return earlier

        def completions(rows: list[DictRow], earlier: list[DictRow]) -> dict[UUID, Completion]:
            # The rows this run finished win over the read of them that `earlier` may also hold.
            done = {
                row["execution_id"]: Completion(
                    True,
                    bool(row["run_requested"]),
                    bool(row["deletion_pending"]),
                    None if row["next_due_in"] is None else float(row["next_due_in"]),
                )
                for row in [*earlier, *rows]
            }
            return {fence.execution_id: done.get(fence.execution_id, Completion(False, False)) for fence, _ in outcomes}

        if all(outcome.status == "succeeded" for _, outcome in outcomes):
            # No failure, so no streak to check: the statement is the whole transaction (autocommit),
            # one round trip where BEGIN, the statement and COMMIT were three. The statement takes
            # its locks, checks the fence and writes in one go, and commits before the server
            # answers: a replica frozen anywhere in it holds no lock once it is done.
            async def alone(wire: Wire) -> dict[UUID, Completion]:
                [rows] = await wire.send((queries.COMPLETE_EXECUTIONS, params))
                return completions(rows, await recorded_before(wire, rows))

            return await self.db.run_wire(alone, autocommit=True, lane="outcomes")

        async def work(wire: Wire) -> dict[UUID, Completion]:
            # One statement locks the status rows, records the outcomes and updates the statistics
            # (see statements.replica.COMPLETE_EXECUTIONS for its lock order and fencing check).
            [rows] = await wire.send((queries.COMPLETE_EXECUTIONS, params))
            # A failed outcome grew its strategy's streak: the check, which may halt or alert, runs
            # in this transaction, so the count, the halt and the alert agree (through SQLAlchemy:
            # it is rare). A lane of its own: the all-succeeded batches' connection is autocommit.
            # Only the rows this run finished: an outcome recorded before had its streak checked in
            # the transaction that recorded it.
            streaks = [(row["strategy_id"], row["consecutive_failures"]) for row in rows]
            await _check_failure_streaks(wire.conn, streaks)
            earlier = await recorded_before(wire, rows)
            await wire.commit()
            return completions(rows, earlier)

        return await self.db.run_wire(work, lane="failed outcomes")

    def _claim(self, row: Any) -> Claim:
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
            claimed_view=None
            if row["currencies"] is None
            else (view_of(row), dict(zip(row["currencies"], row["held"], strict=True))),
            fence=Fence(
                row["execution_id"],
                row["strategy_id"],
                self.replica_id,
                int(row["fencing_token"]),
                row["scheduled_for"],
            ),
        )

    # --- retention and partitions ---------------------------------------------------------------

    async def prune(self, *, retention_seconds: float, batch: int) -> int:
        """Delete one batch of old rows that no partition drop takes: executions in the default
        partition, claimed run requests; the count deleted. (Whole days go in `maintain_partitions`.)"""
        params = {"retention_seconds": retention_seconds, "batch": batch}

        async def work(conn: AsyncConnection) -> int:
            await conn.execute(queries.PLANS_BY_VALUE)
            executions = (await conn.execute(partition_queries.PRUNE_DEFAULT, params)).rowcount
            requests = (await conn.execute(queries.PRUNE_RUN_REQUESTS, params)).rowcount
            await conn.execute(queries.FORGET_DEAD_REPLICAS, {"after_seconds": 86_400})
            return int(executions or 0) + int(requests or 0)

        return await self.db.run(work)

    async def maintain_partitions(
        self, *, retention_seconds: float, days_ahead: int = partition_queries.DAYS_AHEAD
    ) -> Partitions:
        """Create the days of `executions` from today to `days_ahead` days ahead that are missing, and
        drop the days wholly past the retention, except one holding an execution still in flight.

        The missing days are created in one transaction, and each drop is its own (it holds ACCESS
        EXCLUSIVE on `executions` until it commits), each under the maintenance advisory lock (taken
        with `pg_try_advisory_xact_lock`: a replica that does not get it leaves that step to the replica
        that has it) and a short `lock_timeout` (`DatabaseTimeout` when a lock did not come: the next
        housekeeping tries again). A day is kept until its end is older than the retention, so
        an execution is kept at least the retention and at most a day longer.
        """
        q = partition_queries
        report = Partitions()
        skipped = 0

        async def plan(conn: AsyncConnection) -> tuple[date, datetime, set[date]]:
            today = (await conn.execute(q.TODAY)).scalar_one()
            cutoff = (await conn.execute(q.RETENTION_CUTOFF, {"retention_seconds": retention_seconds})).scalar_one()
            return today, cutoff, await _days(conn)

        today, cutoff, days = await self.db.run(plan)

        wanted = [today + timedelta(days=n) for n in range(days_ahead + 1)]
        if not set(wanted) <= days:

            async def create(conn: AsyncConnection) -> bool:
                # One transaction for every missing day (in steady state, one a day): a replica that
                # does not get the lock leaves them all to the one that has it.
                report.created.clear()  # (the transaction may be run again)
                report.left_to_default.clear()
                if not (await conn.execute(q.TRY_LOCK, {"key": q.PARTITION_LOCK})).scalar_one():
                    return False
                await conn.execute(q.SET_LOCK_TIMEOUT)
                existing = await _days(conn)  # another replica may have made some since the plan
                for day in wanted:
                    if day in existing:
                        continue
                    low, high = _day_range(day)
                    if (await conn.execute(q.DEFAULT_HOLDS_DAY, {"low": low, "high": high})).scalar_one():
                        report.left_to_default.append(day)
                        continue
                    for statement in q.create_partition(day):
                        await conn.execute(statement)
                    report.created.append(day)
                return True

            if not await self.db.run(create):
                skipped += 1

        for day in sorted(days):
            if _day_range(day)[1] > cutoff:
                continue

            async def drop(conn: AsyncConnection, day: date = day) -> str:
                if not (await conn.execute(q.TRY_LOCK, {"key": q.PARTITION_LOCK})).scalar_one():
                    return "busy"
                await conn.execute(q.SET_LOCK_TIMEOUT)
                # The parent first, then the checks: nothing can start in this day from here on.
                await conn.execute(q.LOCK_PARENT)
                if day not in await _days(conn):
                    return "gone"
                if (await conn.execute(q.running_in(day))).scalar_one():
                    return "in_flight"
                await conn.execute(q.drop_partition(day))
                return "dropped"

            outcome = await self.db.run(drop)
            if outcome == "dropped":
                report.dropped.append(day)
            elif outcome == "in_flight":
                report.kept_in_flight.append(day)
            elif outcome == "busy":
                skipped += 1
        return Partitions(
            report.created, report.dropped, report.kept_in_flight, report.left_to_default, skipped=skipped
        )


class _Verdicts:
    """The language policy's verdicts on code a pass checked, by digest of the code, the most recently
    used kept: a pass decides a spec whose verdict is known in the transaction that locks it."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._known: collections.OrderedDict[bytes, str | None] = collections.OrderedDict()

    @staticmethod
    def _key(code: str) -> bytes:
        return hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()

    def get(self, code: str) -> tuple[bool, str | None]:
        """(known, the policy's message or None when it compiles)."""
        key = self._key(code)
        if key not in self._known:
            return False, None
        self._known.move_to_end(key)
        return True, self._known[key]

    def remember(self, code: str, verdict: str | None) -> None:
        key = self._key(code)
        self._known[key] = verdict
        self._known.move_to_end(key)
        while len(self._known) > self._size:
            self._known.popitem(last=False)


def outcome_params(
    replica_id: str,
    outcomes: Sequence[tuple[Fence, ExecutionOutcome]],
    *,
    ended_ago: Sequence[float] | None = None,
    wallets: Sequence[tuple[Decimal, str] | None] | None = None,
) -> dict[str, Any]:
    """The parameters of statements.replica.COMPLETE_EXECUTIONS: the batch as one JSON document (one
    object per outcome, keyed by the statement's column names), its partition key range, the replica.

    Values JSON has no type for go as text the statement's column types read back exactly: a UUID,
    a timestamp in ISO 8601 with its offset and microseconds (the partition key, compared for
    equality), a Decimal as its digits. RESULT and STATE are nested as they are (jsonb.dumps keeps
    a float a float); None is JSON null, which the statement reads as SQL NULL."""
    document = []
    for i, (fence, outcome) in enumerate(outcomes):
        wallet = wallets[i] if wallets is not None else None
        document.append(
            {
                "execution_id": str(fence.execution_id),
                "strategy_id": fence.strategy_id,
                "scheduled_for": fence.scheduled_for.isoformat(),
                "fencing_token": fence.token,
                "status": outcome.status,
                "duration": outcome.duration,
                "ended_ago": max(0.0, ended_ago[i]) if ended_ago is not None else 0.0,
                "output": _no_nul(outcome.output),
                "output_truncated": outcome.output_truncated,
                "error": None if outcome.error is None else _no_nul(outcome.error),
                "result": outcome.result,
                "state": outcome.state,
                "wallet_value": None if wallet is None else str(wallet[0]),
                "wallet_currency": None if wallet is None else wallet[1],
            }
        )
    keys = [fence.scheduled_for for fence, _ in outcomes]
    return {"replica_id": replica_id, "outcomes": jsonb.dumps(document), **_key_range(keys)}


def _key_range(keys: list[datetime]) -> dict[str, datetime | None]:
    """The earliest and latest partition key of a batch: statements prune on them before they join."""
    return {"earliest": min(keys, default=None), "latest": max(keys, default=None)}


async def _days(conn: AsyncConnection) -> set[date]:
    """The days `executions` has a partition for."""
    names = (await conn.execute(partition_queries.LIST_PARTITIONS)).scalars().all()
    return {day for day in map(partition_queries.day_of, names) if day is not None}


def _day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass(frozen=True, slots=True)
class _PassEnd:
    held: int  # unreconciled strategies the pass could not lock
    wait: float | None  # seconds until the earliest pause ends; None: nothing paused
    requests: bool  # a run request waits to be claimed


async def _pass_end(conn: AsyncConnection, locked: list[str], batch: int) -> _PassEnd:
    """After a pass's writes: what it left to others, and what the loop must do next (statements.PASS_END)."""
    row = (await conn.execute(queries.PASS_END, {"locked": locked, "batch": batch})).one()
    wait = None if row.wait is None else float(row.wait.total_seconds())
    return _PassEnd(int(row.held), wait, bool(row.requests))


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


def _newly_due(status: Status | None, action: SetStatus) -> bool:
    """Whether this write gives a claim something it could not take before: a strategy scheduled anew,
    or a tick moved. A redeploy that keeps the schedule (new code or config, the same interval) does
    not, and tells no replica to claim: each such NOTIFY woke every replica for a claim that found
    nothing new."""
    if action.status != "running" or action.next_execution_at is None:
        return False
    return status is None or status.status != "running" or status.next_execution_at != action.next_execution_at


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


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL; user output may contain it.
    return text.replace("\x00", "\\x00")
