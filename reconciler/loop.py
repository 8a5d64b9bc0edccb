"""The replica: one thin asyncio loop around the pure reconcile decision, the claims and the sandbox.

This is the only place that sleeps. Each pass reconciles, claims due executions for the free slots
(and, while every slot is busy with short executions, a few more held ready: see `_claim_ahead`), and
starts them; then it sleeps until the earliest due time, a NOTIFY from a desired-state write, a slot
freeing up, or the poll interval, whichever comes first.

Slots: a slot is a sandboxed process. It is taken when the execution starts and given back the moment
the process is gone, before the broker's closing measure and the outcome are recorded; a claimed
execution waiting for a slot takes the freed one at once, with no database round trip in between.

Liveness and fencing: a heartbeat task renews the replica's lease and the leases of the executions
it still works on at half the lease length, and marks lost the executions whose leases ran out.
Every effect of an execution (its orders, its outcome, its STATE) is written under its fencing token
(`reconciler.storage.fence`); an execution whose lease was not renewed, whose lease may have run out
by this replica's own clock, or whose order the database refused, is fenced off: its process is
killed and nothing more of it is sent or recorded. An outcome that cannot be recorded is retried for
as long as the lease holds, and never renewed past it.

Faults: while the database is unreachable every task backs off and retries; the replica stays up and
reports itself unhealthy meanwhile, logging the outage once at its start, once a minute, and once
at its end (`reconciler.storage.outage`). Shutdown: stop claiming, let executions finish within the
grace period, then kill the rest and record them `interrupted`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from uuid import UUID

from reconciler import __version__
from reconciler.logging_setup import bind as bind_log_context
from reconciler.logging_setup import bound as bound_log_context
from reconciler.metrics import ReplicaMetrics
from reconciler.outcome import BrokerCall, BrokerError, ExecutionOutcome, ExecutionRequest
from reconciler.reconcile import decide
from reconciler.settings import Settings
from reconciler.storage.db import (
    Database,
    DatabaseTimeout,
    DatabaseUnavailable,
    StoreError,
    TransactionConflict,
)
from reconciler.storage.exchange_store import RiskView
from reconciler.storage.fence import Fence, Fenced
from reconciler.storage.listen import SCHEDULE_CHANGED, Listener
from reconciler.storage.outage import Outage
from reconciler.storage.replica_store import Claim, CodeChecker, Completion, ReplicaStore
from reconciler.storage.statements.risk import ALERT_CHANNEL_PAYLOAD as ALERT_QUEUED

log = logging.getLogger(__name__)

T = TypeVar("T")

PRUNE_EVERY_SECONDS = 600.0
# Partition housekeeping (days of `executions` created ahead, days past the retention dropped): at the
# first heartbeat, then this often. Mostly one catalog read; the DDL happens about once a day.
PARTITIONS_EVERY_SECONDS = 300.0
OVERDUE_RETRY_SECONDS = 0.02
RECORD_BATCH = 50
# How long the first outcome of a batch waits for others while executions are still running (see
# `_record_loop`): its slot is already free, so the wait delays only when the outcome is written (and
# when its strategy can be claimed again, its next tick at least a second away). At a replica's
# ceiling, 5 ms gathered ~1.2 outcomes a batch; 20 ms cut the serve process's statements per
# execution from 0.71-0.76 to 0.54 and its Python calls by ~7% (profile_serve.py), and PostgreSQL's
# transactions from 0.93-0.95 to 0.67-0.68.
RECORD_WINDOW = 0.02
# How long, at most, an execution claimed ahead should wait for a slot, at the rate slots are freeing
# (see `_claim_ahead`): a little more than one claim's round trip, so a freed slot never waits for one.
CLAIM_AHEAD_SECONDS = 0.025
# A reconcile pass that found unreconciled strategies held by another replica's pass (SKIP LOCKED passed
# them over) looks again this long after, doubling up to RELOOK_MAX_SECONDS while they stay held: that
# pass normally commits in milliseconds, but one whose replica died or froze holds them until its
# session ends (seconds: the replica sessions' timeouts), and nothing else would wake anyone then.
RELOOK_SECONDS = 1.0
RELOOK_MAX_SECONDS = 8.0
# How long a NOTIFY's wake-up waits for more before the loop acts on it. Every replica wakes for every
# desired-state write, and for every pass of another replica that scheduled something; in a burst of
# API writes those come a few milliseconds apart, and each woke every replica for a pass and a claim
# of its own (three replicas slowed a burst of writes down by half on two cores). Waiting this long
# lets one pass and one claim take in all of them, at this much latency per change.
WAKE_DEBOUNCE_SECONDS = 0.005


class SandboxRunner(Protocol):
    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome: ...
    async def interrupt_all(self) -> None: ...
    @property
    def layers(self) -> dict[str, bool]: ...


class BrokerSessions(Protocol):
    def session(
        self,
        *,
        strategy_id: str,
        execution_id: str,
        exchange: str,
        config: dict[str, Any],
        fence: Fence,
        record_measure: Callable[[Decimal, str], None] | None = None,
        claimed_view: tuple[RiskView | None, Mapping[str, Decimal]] | None = None,
    ) -> AbstractAsyncContextManager[BrokerCall]: ...


# Transient database errors an outcome is retried on, for as long as its lease holds.
_TRANSIENT = (DatabaseUnavailable, DatabaseTimeout, TransactionConflict)


@dataclass(eq=False)
class _Flight:
    """One execution from its claim until its outcome is recorded (or it is fenced off)."""

    claim: Claim
    # By this replica's monotonic clock, the earliest instant the lease may have expired: taken before
    # the statement that set the lease, so the database's expiry is never earlier than this.
    lease_until: float
    run: asyncio.Task[ExecutionOutcome] | None = None
    fenced: str | None = None  # why it was fenced off; then nothing more of it is sent or recorded
    holds_slot: bool = False  # its sandboxed process may be running: it occupies one of the slots
    ended: float | None = None  # monotonic instant its sandboxed process was gone
    wallet: tuple[Decimal, str] | None = None  # the broker's closing measure, recorded with the outcome
    # Its process is gone and its outcome is with the record loop, whose statement carries the fence.
    recording: bool = False

    def measured(self, value: Decimal, currency: str) -> None:
        self.wallet = (value, currency)


class AlertSender(Protocol):
    async def run(self, queued: asyncio.Event, stop: asyncio.Event) -> None: ...


@dataclass
class ReplicaHealth:
    """What /health reports about this replica."""

    replica_id: str
    database_ok: bool = False
    running: bool = False
    # Executions holding a slot (a sandboxed process), and those claimed ahead and waiting for one:
    # what a drain waits for, as the Ctrl-C notice counts it (`Replica.drain_counts`, whose running
    # count also holds the executions whose process has ended and whose outcome is being written).
    in_flight: int = 0
    claimed_waiting: int = 0
    executed: int = 0
    last_error: str | None = None
    layers: dict[str, bool] = field(default_factory=dict)


class Replica:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sandbox: SandboxRunner,
        *,
        check_code: CodeChecker,
        brokers: BrokerSessions | None = None,
        database_url: str,
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.brokers = brokers
        self.check_code = check_code
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = ReplicaStore(db, replica_id=self.replica_id, lease_seconds=settings.lease_seconds)
        self.listener = Listener(database_url)
        self.slots = settings.max_concurrent_strategies
        self.health = ReplicaHealth(replica_id=self.replica_id)
        self.metrics = ReplicaMetrics(self.replica_id, self.slots)
        self.outage = Outage(log)
        # Every execution, from its claim until its outcome is recorded or it is fenced off.
        self._flights: dict[UUID, _Flight] = {}
        # Every execution task (one per flight), for the drain.
        self._tasks: set[asyncio.Task[None]] = set()
        # Set by a second Ctrl-C (or SIGTERM) during the drain: stop waiting for the grace period.
        self.force_stop = asyncio.Event()
        # How many of them still have a sandboxed process: those occupy the slots.
        self._running = 0
        # Claimed, waiting for a slot (oldest claim first): started the moment one frees.
        self._ready: collections.deque[_Flight] = collections.deque()
        # Smoothed seconds between two slots freeing, for how many executions to claim ahead.
        self._release_gap = float("inf")
        self._last_release: float | None = None
        # Set once the drain gives up: an execution not started by then is recorded interrupted.
        self._interrupting = False
        # Whether a run request may be waiting: skips the run-request claim when none can be.
        self._requests_pending = True
        # Outcomes waiting to be recorded; one task writes whatever has accumulated in one statement.
        self._outcomes: asyncio.Queue[tuple[_Flight, ExecutionOutcome, asyncio.Future[Completion]]] = asyncio.Queue()
        # Wakes the loop to claim (a slot freed, a NOTIFY, a lost execution), or to stop.
        self._wake = _Wakeup()
        # Whether the next pass must claim: something may have become claimable (a slot freed, an
        # outcome recorded, another replica scheduled something, a pass of ours did, a run request
        # waits, an execution was marked lost). A desired-state NOTIFY alone does not set it: its
        # pass says whether it scheduled anything or a request waits (most spec writes, a redeploy or
        # a stop, make nothing due, and with it every replica claimed after every API write).
        self._claim_due = True
        # When (monotonic) the earliest execution falls due, as the last claim read it, or earlier if a
        # strategy freed since falls due earlier (`_strategy_freed`): claim then.
        self._next_due_at = 0.0
        # The earliest next tick of the strategies freed while the current claim runs.
        self._freed_due_at = float("inf")
        # Desired state changed (a NOTIFY): the next pass reconciles. Without one, a pass reconciles
        # only once per poll interval: reconciling reads every spec, claiming reads only due rows.
        self._desired_changed = asyncio.Event()
        self._last_reconcile = float("-inf")
        # True while the LISTEN connection is up: then notifications, not polling, say when to look.
        self._listening = False
        # When (monotonic) the earliest paused strategy resumes: a reconcile pass is due then.
        self._resume_due: float | None = None
        # When (monotonic) to look again at strategies another replica's pass held, and the delay
        # after that one if they are still held (see RELOOK_SECONDS).
        self._relook_at: float | None = None
        self._relook_delay = RELOOK_SECONDS
        # The pending wake-up of a run of notifications (see WAKE_DEBOUNCE_SECONDS).
        self._debounce: asyncio.TimerHandle | None = None
        # Set by a NOTIFY that an alert was enqueued; the alert sender waits on it.
        self.alerts_queued = asyncio.Event()
        # The sender of webhook alerts, started with the replica (see reconciler.alerts).
        self.alert_sender: AlertSender | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain. Never returns early because of the database."""
        bind_log_context(replica=self.replica_id)  # every line of this task and the tasks it starts
        self.health.layers = dict(self.sandbox.layers)
        await self._with_db(self._register, stop)
        self.health.running = True
        log.info("replica %s started with %d slots", self.replica_id, self.slots)
        background = [
            asyncio.create_task(self._wake_on(stop), name="stop"),
            asyncio.create_task(self._heartbeat_loop(stop), name="heartbeat"),
            asyncio.create_task(self._listen_loop(stop), name="listen"),
            asyncio.create_task(self._record_loop(), name="record"),
        ]
        if self.alert_sender is not None:
            background.append(asyncio.create_task(self.alert_sender.run(self.alerts_queued, stop), name="alerts"))
        try:
            await self._main_loop(stop)
        finally:
            await self._drain()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self.store.deregister()
            self.health.running = False
            log.info("replica %s stopped", self.replica_id)

    async def _register(self) -> None:
        epoch = await self.store.register(
            hostname=socket.gethostname(),
            pid=os.getpid(),
            slots=self.slots,
            version=__version__,
            layers=self.health.layers,
        )
        log.info("replica %s registered under fencing epoch %d", self.replica_id, epoch)

    async def _main_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                # `_pass` reports the database healthy itself, after a statement went through: a
                # pass that found every slot busy touched nothing, and proves nothing about it.
                timeout = await self._pass()
            except DatabaseUnavailable as exc:
                self._db_down(exc)
                timeout = 1.0
            except (DatabaseTimeout, TransactionConflict) as exc:
                # The database answered but the pass did not get through in time: try again shortly.
                log.warning("reconcile pass did not complete: %s", exc)
                self.health.last_error = str(exc)
                timeout = 1.0
            except StoreError as exc:
                # Not an outage: a bug or bad data. Log it and keep the replica alive.
                log.exception("reconcile pass failed: %s", exc)
                self.health.last_error = str(exc)
                timeout = 1.0
            if timeout > 0 and not stop.is_set():
                await self._wake.wait(timeout)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        """The main loop waits on `_wake` alone (see `_Wakeup`): `stop` wakes it through this."""
        await stop.wait()
        self._wake.set()

    def _idle_interval(self) -> float:
        """The longest the loop goes without a full pass: short while notifications may be missed."""
        if self._listening:
            return self.settings.resync_interval_seconds
        return self.settings.poll_interval_seconds

    async def _pass(self) -> float:
        """One reconcile-and-claim pass; returns how long the loop may sleep afterwards."""
        idle = self._idle_interval()
        now = time.monotonic()
        resume_due = self._resume_due is not None and now >= self._resume_due
        relook_due = self._relook_at is not None and now >= self._relook_at
        full = now - self._last_reconcile >= idle
        if self._desired_changed.is_set() or resume_due or relook_due or full:
            self._desired_changed.clear()
            if full:
                # The periodic pass claims whatever it finds, whatever the wake-ups said.
                self._claim_due = self._requests_pending = True
            try:
                await self._reconcile(relook=relook_due)
            except StoreError:
                # The change that woke this pass is still unreconciled (and other replicas skipped the
                # rows this one had locked): the next pass, a second away, looks again instead of the
                # resync up to a minute away. It claims too, not knowing what this one would have found.
                self._desired_changed.set()
                self._claim_due = self._requests_pending = True
                raise
            self._db_ok()
        if self._resume_due is not None:
            # A pause ends before the next full pass would come round: look again then.
            idle = max(0.0, min(idle, self._resume_due - time.monotonic()))
        if self._relook_at is not None:
            idle = max(0.0, min(idle, self._relook_at - time.monotonic()))
        wanted = self._wanted()
        if wanted <= 0:
            return idle  # a slot freeing sets the wake event
        if not self._claim_due and time.monotonic() < self._next_due_at:
            # Woken by a spec write whose pass made nothing claimable: nothing to claim before the next
            # due time (a claim now would find nothing, as it did on every replica for every write).
            return max(0.0, min(idle, self._next_due_at - time.monotonic()))
        # Both cleared before the claim, so a wake-up that arrives while it runs sets them again.
        self._claim_due = False
        requests, self._requests_pending = self._requests_pending, False
        self._freed_due_at = float("inf")
        before = time.monotonic()
        try:
            claimed = await self.store.claim(wanted, requests=requests)
        except StoreError:
            # Nothing claimed: the next pass, a second away, claims (the requests too).
            self._claim_due = True
            self._requests_pending = self._requests_pending or requests
            raise
        self._db_ok()
        self.metrics.claimed(claimed.claims)
        for claim in claimed.claims:
            self._start(claim, lease_until=before + self.settings.lease_seconds)
        self._dispatch()
        if sum(1 for claim in claimed.claims if claim.trigger == "manual") == wanted:
            self._requests_pending = True  # the slots ran out before the requests did
        if len(claimed.claims) == wanted:
            self._claim_due = True  # more may be due: the claim did not read when
            return 0.0 if self._wanted() > 0 else idle
        wait = claimed.seconds_until_due
        # The earliest of what the claim read and the ticks of strategies freed while it ran (their
        # outcomes committed after its NEXT_DUE read, which could not see them).
        self._next_due_at = min(float("inf") if wait is None else before + wait, self._freed_due_at)
        if wait is None:
            return idle
        if wait <= 0 and not claimed.claims:
            # Due, yet not claimed: another replica's claim holds its row this instant. Look again
            # in a moment rather than at once, so two replicas never spin on one row.
            return OVERDUE_RETRY_SECONDS
        return max(0.0, min(wait, idle))

    async def _reconcile(self, *, relook: bool = False) -> None:
        """Reconcile every unreconciled strategy this replica can lock. `relook`: this pass is the look
        again at strategies an earlier pass found held by another replica."""
        held = False
        with self.metrics.reconcile_pass():
            while True:
                report = await self.store.reconcile(decide, self.check_code)
                held = held or report.held > 0
                if report.scheduled:
                    self._claim_due = True
                if report.requests:
                    self._claim_due = self._requests_pending = True
                if report.updated or report.finalized:
                    log.debug("reconciled %s", report)
                if report.examined < 200 or not (report.updated or report.finalized):
                    break
        self._last_reconcile = time.monotonic()
        if not held:
            self._relook_at, self._relook_delay = None, RELOOK_SECONDS
        elif relook:
            # Still held a look later: back off, so a lock held for seconds costs a few passes, not a loop.
            self._relook_delay = min(self._relook_delay * 2, RELOOK_MAX_SECONDS)
            self._relook_at = self._last_reconcile + self._relook_delay
        elif self._relook_at is None:
            # Usually another replica's pass, about to commit. Passes woken by other changes meanwhile
            # (a burst of writes) neither postpone the look nor grow the delay.
            self._relook_delay = RELOOK_SECONDS
            self._relook_at = self._last_reconcile + self._relook_delay
        wait = report.seconds_until_resume
        # A little after the database says, so the pass finds `resume_at <= now()` true; a resume
        # already overdue after this pass is another replica's to finish (it holds the row): later.
        if wait is None:
            self._resume_due = None
        else:
            self._resume_due = self._last_reconcile + (wait + 0.05 if wait > 0 else 0.5)

    # --- executions ---------------------------------------------------------------------------

    def _wanted(self) -> int:
        """How many executions to claim now: one per free slot, plus those to hold ready (`_claim_ahead`).

        Outcomes still being recorded hold no slot, but at most two slots' worth may wait (the closing
        measure and the outcome each wait a few milliseconds to share a statement with others), so a
        slow database slows claiming down instead of piling up finished executions in memory.
        """
        ahead = self._claim_ahead()
        spoken_for = self._running + len(self._ready)
        wanted = min(self.slots + ahead - spoken_for, 3 * self.slots + ahead - len(self._tasks) - len(self._ready))
        if spoken_for >= self.slots and wanted < max(1, (ahead + 1) // 2):
            # Every slot is busy and enough are held ready: top them up in one claim later rather
            # than one claim per freed slot (each claim is a transaction, and a commit).
            return 0
        return max(0, wanted)

    def _claim_ahead(self) -> int:
        """How many executions to hold claimed beyond the free slots, so that a freed slot starts the
        next one at once instead of waiting for a claim's round trip.

        As many as slots free within CLAIM_AHEAD_SECONDS at the rate they have been freeing, at most
        one per slot. Short executions near the replica's ceiling get them (there, a round trip per
        freed slot is a good part of each slot's time); long ones get none, so an execution never
        waits here for a slot of this replica while another replica has one free. Every execution
        held is claimed like any other: leased, renewed, fenced, recorded.
        """
        if self._interrupting or self._last_release is None:
            return 0
        gap = max(self._release_gap, time.monotonic() - self._last_release)
        return min(self.slots, int(CLAIM_AHEAD_SECONDS / gap)) if gap > 0 else self.slots

    def _start(self, claim: Claim, *, lease_until: float) -> None:
        """Take a claimed execution in; it starts when a slot is free (`_dispatch`)."""
        flight = _Flight(claim, lease_until)
        self._flights[claim.execution_id] = flight
        self._ready.append(flight)
        self._report_load()

    def _dispatch(self) -> None:
        """Start executions that wait for a slot on the free slots, oldest claim first."""
        while self._ready and self._running < self.slots:
            flight = self._ready.popleft()
            if flight.fenced is not None:
                # Its lease ran out while it waited (the database was away): it never ran, and
                # whoever sees its lease expired records it lost.
                self._flights.pop(flight.claim.execution_id, None)
                continue
            self._launch(flight, slot=True)
        self._report_load()

    def _report_load(self) -> None:
        """/health's count of the slots taken and of the executions waiting for one: after a claim is
        taken in, and at the end of every dispatch (which every freed slot and every start goes through)."""
        self.health.in_flight = self._running
        self.health.claimed_waiting = len(self._ready)

    def _launch(self, flight: _Flight, *, slot: bool) -> None:
        task = asyncio.create_task(self._execute(flight), name=f"execution-{flight.claim.execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if slot:
            flight.holds_slot = True
            self._running += 1
            self.metrics.busy(self._running)

    def _release(self, flight: _Flight) -> None:
        """Its sandboxed process is gone: the slot goes to the next execution waiting, at once, and the
        loop is woken to fill it if anything is due. The strategy itself stays claimed
        (running_execution_id) until the outcome is recorded."""
        if not flight.holds_slot:
            return
        flight.holds_slot = False
        now = flight.ended = time.monotonic()
        if self._last_release is not None:
            gap = min(now - self._last_release, 1.0)
            self._release_gap = gap if self._release_gap == float("inf") else 0.8 * self._release_gap + 0.2 * gap
        self._last_release = now
        self._running -= 1
        self.metrics.busy(self._running)
        self._dispatch()  # reports the load, with what it started
        # Wake the loop to top the free slots up, but do not make it claim: a freed slot makes nothing
        # due. If the last claim filled every slot it asked for, more may be due and `_claim_due` is
        # still set; if it took fewer, everything due was taken and the loop claims at `_next_due_at`.
        # (Forcing a claim here cost a claim and a NEXT_DUE read per execution below the ceiling, each
        # finding nothing: the CPU a burst of due ticks then lacked.)
        self._wake.set()

    def _fence(self, flight: _Flight, why: str) -> None:
        """Fence an execution off: kill its process (if it still has one); nothing more of it is sent
        or recorded. The database already refuses its effects; this stops it trying."""
        if flight.fenced is not None:
            return
        flight.fenced = why
        log.warning(
            "execution %s fenced off (%s): process killed, nothing more of it sent", flight.claim.execution_id, why
        )
        if flight.run is not None and not flight.run.done():
            flight.run.cancel()

    async def _execute(self, flight: _Flight) -> None:
        claim = flight.claim
        completion: Completion | None = None
        # This task's own context: every line logged while this execution runs names it.
        bind_log_context(strategy_id=claim.strategy_id, execution_id=claim.execution_id)
        try:
            try:
                if self._interrupting:
                    # Claimed ahead, and the drain gave up before a slot freed for it: it never ran.
                    outcome: ExecutionOutcome | None = _never_started()
                    flight.ended = time.monotonic()
                else:
                    outcome = await self._run_sandboxed(flight)
                if outcome is not None:
                    self.metrics.finished(outcome.status, outcome.duration)
                    log.debug("execution %s: %s in %.3fs", claim.execution_id, outcome.status, outcome.duration or 0.0)
            finally:
                self._release(flight)  # when the sandbox never ran (the broker did not open, say)
            if outcome is None or flight.fenced is not None:
                return  # fenced off: whoever sees its lease expired records it lost
            recorded: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
            flight.recording = True
            self._outcomes.put_nowait((flight, outcome, recorded))
            completion = await recorded
            if not completion.recorded:
                log.warning("execution %s was fenced off before its outcome was recorded", claim.execution_id)
            if completion.run_requested:
                self._requests_pending = True
                self._wake_to_claim()
            if completion.deletion_pending:
                # Finalize the deletion now rather than at the next resync, up to a minute away.
                self._desired_changed.set()
                self._wake_to_claim()
            self.health.executed += 1
        except StoreError as exc:
            # Not an outage (those are retried while the lease holds): a bug, logged where it happened.
            log.error("could not record execution %s: %s", claim.execution_id, exc)
        finally:
            self._flights.pop(claim.execution_id, None)
            # Out of `_tasks` before the wake-up below, not only by the done callback `_launch` added:
            # that callback runs a loop iteration after this task ends, and the main loop, woken here,
            # may run first. `_wanted` counts `_tasks`, so it would find nothing wanted, and the loop
            # would sleep until its idle interval with this execution's room free: a lost wake-up,
            # which left a replica of instant executions claiming nothing at all.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            # The strategy is free again: claim when its next tick falls due (at once if it already
            # has, or if we do not know: the outcome was not recorded, or the task failed).
            if completion is not None and completion.recorded:
                self._strategy_freed(completion.next_due_in)
            else:
                self._wake_to_claim()

    def _strategy_freed(self, next_due_in: float | None) -> None:
        """An outcome was recorded: its strategy is claimable again from its next tick on (NEXT_DUE left
        it out while it ran). Claim now only if that tick is already due (a run that outlasted its
        interval); otherwise at that tick, as for any strategy the last NEXT_DUE read saw."""
        if next_due_in is not None and next_due_in <= 0:
            self._wake_to_claim()
            return
        if next_due_in is not None:
            due_at = time.monotonic() + next_due_in
            self._next_due_at = min(self._next_due_at, due_at)
            # A claim in flight read NEXT_DUE before this outcome committed: its answer must not
            # push this tick back (see `_pass`).
            self._freed_due_at = min(self._freed_due_at, due_at)
        self._wake.set()  # the loop recomputes how long to sleep (and fills a slot if anything is due)

    async def _record_loop(self) -> None:
        """Record outcomes in batches: whatever finished while the previous batch was being written.

        Under load this turns one transaction per execution into one per handful, at no cost in
        latency when idle (a lone outcome, no other execution running, is written at once; while
        others run, the first of a batch waits RECORD_WINDOW for theirs). A batch the database cannot take now
        is retried with backoff for as long as each execution's lease holds; an execution whose lease
        may have run out is dropped from it (fenced off), so nothing renews a lease nobody will finish.
        """
        while True:
            batch = [await self._outcomes.get()]
            if self._running > 0 and self._outcomes.empty():
                # Other executions are running and will end within moments: a short wait lets their
                # outcomes share this transaction (a commit, with its WAL flush, per handful).
                await asyncio.sleep(RECORD_WINDOW)
            while len(batch) < RECORD_BATCH and not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            delay = 0.1
            while batch:
                now = time.monotonic()
                for flight, _, future in batch:
                    if flight.fenced is None and flight.lease_until <= now:
                        self._fence(flight, "its lease ran out before the outcome could be recorded")
                    if flight.fenced is not None and not future.done():
                        future.set_result(Completion(False, False))
                batch = [item for item in batch if not item[2].done()]
                if not batch:
                    break
                try:
                    items = [(flight.claim.fence, outcome) for flight, outcome, _ in batch]
                    now = time.monotonic()
                    ended_ago = [now - (flight.ended or now) for flight, _, _ in batch]
                    wallets = [flight.wallet for flight, _, _ in batch]
                    done = await self.store.complete_many(items, ended_ago=ended_ago, wallets=wallets)
                    self._db_ok()
                except _TRANSIENT as exc:
                    if isinstance(exc, DatabaseUnavailable):
                        self._db_down(exc)
                    else:
                        log.debug("recording outcomes: %s; retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                except StoreError as exc:
                    log.exception("recording %d outcomes failed: %s", len(batch), exc)
                    for _, _, future in batch:
                        future.set_exception(exc)
                    break
                for flight, _, future in batch:
                    future.set_result(done[flight.claim.execution_id])
                break

    async def _run_sandboxed(self, flight: _Flight) -> ExecutionOutcome | None:
        """The execution's outcome, or None when it was fenced off (its process killed)."""
        claim = flight.claim
        execution_id = str(claim.execution_id)  # once: the request and the broker session both name it
        request = ExecutionRequest(
            execution_id=execution_id,
            strategy_id=claim.strategy_id,
            code=claim.code,
            config=claim.config,
            state=claim.state,
        )
        started = time.monotonic()
        try:
            if self.brokers is None:
                return await self._sandbox_run(flight, request, None)
            async with self.brokers.session(
                strategy_id=claim.strategy_id,
                execution_id=execution_id,
                exchange=claim.exchange,
                config=claim.config,
                fence=claim.fence,
                record_measure=flight.measured,
                claimed_view=claim.claimed_view,
            ) as broker:
                return await self._sandbox_run(flight, request, self._fenced_broker(flight, broker))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The sandbox never raises for user code; this is the broker failing to open (a missing
            # or undecryptable credential, say). The user sees why; the replica carries on.
            log.warning("execution %s could not start: %s", claim.execution_id, exc)
            return ExecutionOutcome(
                status="failed",
                duration=time.monotonic() - started,
                error=f"the execution could not start: {exc}",
            )

    async def _sandbox_run(
        self, flight: _Flight, request: ExecutionRequest, broker: BrokerCall | None
    ) -> ExecutionOutcome | None:
        """Run in the sandbox as a task of its own, so fencing can cancel it (which kills the process)."""
        flight.run = asyncio.create_task(self._sandbox_call(request, broker), name=f"sandbox-{request.execution_id}")
        if flight.fenced is not None:
            flight.run.cancel()
        try:
            return await flight.run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if flight.fenced is not None and (current is None or not current.cancelling()):
                return None
            raise
        finally:
            # The process is gone: free the slot now, not after the broker's closing measure.
            self._release(flight)

    async def _sandbox_call(self, request: ExecutionRequest, broker: BrokerCall | None) -> ExecutionOutcome:
        if self._interrupting:
            # The drain interrupted the sandbox while this execution was on its way there (its broker
            # session opening, its task not yet begun): started now, it would run behind the drain's
            # back and its outcome be lost when the replica stops. Checked in the task's first step,
            # which enters `sandbox.run` without suspending, so an interrupt either came before this
            # check or finds the run in the sandbox.
            return _never_started()
        return await self.sandbox.run(request, broker)

    def _fenced_broker(self, flight: _Flight, broker: BrokerCall) -> BrokerCall:
        """The broker as the sandbox sees it: a call the fencing check refused fences the execution off."""

        async def call(method: str, params: dict[str, Any]) -> Any:
            if flight.fenced is not None:
                raise BrokerError("fenced", "this execution lost its lease; nothing more is sent")
            try:
                return await broker(method, params)
            except Fenced:
                self._fence(flight, f"the database refused to record its {method}")
                raise BrokerError("fenced", "this execution lost its lease; nothing more is sent") from None

        return call

    def drain_counts(self) -> tuple[int, int]:
        """What a drain waits for, as (running, waiting): executions started and not yet recorded
        (nearly all hold a slot; the rest are writing their outcome), and executions claimed ahead,
        waiting for a slot, which start if one frees within the grace period."""
        return len(self._tasks), len(self._ready)

    async def _drain(self) -> None:
        """Let claimed executions finish within the grace period (those claimed ahead start as slots
        free), then interrupt the rest: the running ones killed, the waiting ones recorded
        `interrupted` without running. Each ends in one recorded outcome either way."""
        if not self._tasks and not self._ready:
            return
        grace = self.settings.shutdown_grace_seconds
        log.info("draining %d running, %d claimed and waiting for a slot (grace %.0fs)", *self.drain_counts(), grace)
        deadline = time.monotonic() + grace
        forced = asyncio.ensure_future(self.force_stop.wait())
        try:
            while (self._tasks or self._ready) and not forced.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Tasks started meanwhile (from the waiting ones) are waited for by the next round.
                await asyncio.wait({*self._tasks, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if self._tasks or self._ready:
            why = "stopping now" if self.force_stop.is_set() else "grace period over"
            log.warning("%s: interrupting %d executions", why, len(self._tasks) + len(self._ready))
            self._interrupting = True
            while self._ready:
                flight = self._ready.popleft()
                if flight.fenced is None:
                    self._launch(flight, slot=False)
                else:
                    self._flights.pop(flight.claim.execution_id, None)
            self._report_load()
            await self.sandbox.interrupt_all()
            pending = {task for task in self._tasks if not task.done()}
            if pending:
                await asyncio.wait(pending, timeout=max(self.settings.lease_seconds, 10.0))

    # --- liveness -----------------------------------------------------------------------------

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.lease_seconds / 2
        last_prune = time.monotonic()
        last_partitions = -PARTITIONS_EVERY_SECONDS
        while True:
            self._fence_expired()
            flights = [flight for flight in self._flights.values() if flight.fenced is None]
            before = time.monotonic()
            try:
                beat = await self.store.heartbeat(
                    stopping=stop.is_set(),
                    renew=[flight.claim.fence for flight in flights],
                    mark_lost=not stop.is_set(),
                )
                self._db_ok()
                if not beat.registered:
                    # Our row was removed (we were presumed dead): come back under a new epoch, which
                    # fences off everything claimed under the old one.
                    log.warning("replica %s was presumed dead; registering again", self.replica_id)
                    await self._register()
                for flight in flights:
                    if flight.claim.execution_id in beat.renewed:
                        flight.lease_until = before + self.settings.lease_seconds
                    elif flight.claim.execution_id in beat.fenced and not flight.recording:
                        self._fence(flight, "its lease was not renewed (expired, or marked lost)")
                    # Neither: its outcome was recorded while the heartbeat ran. An outcome being
                    # recorded is left to its own statement: the heartbeat's renewal waits for that
                    # statement's row lock and then sees the execution finished, but its snapshot,
                    # taken before, still shows it running, so it comes back "not renewed" though
                    # nothing was lost (and its process, already gone, has nothing to kill). If the
                    # lease did run out, the outcome's fencing check refuses it.
                if beat.lost:
                    self.metrics.lost(len(beat.lost))
                    for execution_id, strategy_id in beat.lost_strategies.items():
                        with bound_log_context(strategy_id=strategy_id, execution_id=execution_id):
                            log.warning("execution %s marked lost: its lease ran out", execution_id)
                    self._requests_pending = True
                    self._wake_to_claim()
                if time.monotonic() - last_partitions >= PARTITIONS_EVERY_SECONDS and not stop.is_set():
                    last_partitions = time.monotonic()
                    await self._maintain_partitions()
                if time.monotonic() - last_prune >= PRUNE_EVERY_SECONDS and not stop.is_set():
                    last_prune = time.monotonic()
                    await self._prune()
                await asyncio.sleep(interval)
            except DatabaseUnavailable as exc:
                self._db_down(exc)
                await asyncio.sleep(min(1.0, interval))
            except StoreError as exc:
                if isinstance(exc, DatabaseTimeout | TransactionConflict):
                    log.warning("heartbeat did not complete: %s", exc)
                else:
                    log.exception("heartbeat failed: %s", exc)
                await asyncio.sleep(min(1.0, interval))

    def _fence_expired(self) -> None:
        """Fence off every execution whose lease may have run out by our own clock (we could not renew
        it: the database was unreachable, or the heartbeat late). Its process must not outlive it."""
        now = time.monotonic()
        for flight in list(self._flights.values()):
            if flight.fenced is None and flight.lease_until <= now:
                self._fence(flight, "its lease ran out while it could not be renewed")

    async def _maintain_partitions(self) -> None:
        """Create the coming days of `executions` and drop those past the retention. A failure is only
        logged: the days are made a week ahead, and the default partition takes any row meanwhile."""
        try:
            done = await self.store.maintain_partitions(
                retention_seconds=self.settings.execution_retention_days * 86_400
            )
        except DatabaseUnavailable:
            raise  # the heartbeat loop's outage handling
        except DatabaseTimeout as exc:
            log.warning("partition maintenance waited too long for a lock; trying again later: %s", exc)
            return
        except StoreError as exc:
            log.exception("partition maintenance failed: %s", exc)
            return
        if done.created:
            log.info("created executions partitions for %s", ", ".join(map(str, done.created)))
        if done.dropped:
            log.info("dropped executions partitions past the retention: %s", ", ".join(map(str, done.dropped)))
        if done.kept_in_flight:
            log.warning(
                "kept executions partitions past the retention: an execution in them is still in flight (%s)",
                ", ".join(map(str, done.kept_in_flight)),
            )
        if done.left_to_default:
            log.warning(
                "no partition made for %s: rows of those days are already in executions_default",
                ", ".join(map(str, done.left_to_default)),
            )

    async def _prune(self) -> None:
        retention = self.settings.execution_retention_days * 86_400
        while True:
            deleted = await self.store.prune(retention_seconds=retention, batch=self.settings.prune_batch_size)
            if deleted:
                log.info("pruned %d old executions and run requests", deleted)
            if deleted < self.settings.prune_batch_size:
                return

    async def _listen_loop(self, stop: asyncio.Event) -> None:
        """LISTEN for desired-state changes; only a wake-up, so any failure just falls back to polling."""

        def connected() -> None:
            # Notifications sent while we were not listening are gone: do a full pass now.
            self._listening = True
            self._desired_changed.set()
            self._wake_to_claim()

        own_schedule = f"{SCHEDULE_CHANGED} {self.replica_id}"

        def notified(payload: str) -> None:
            if payload == ALERT_QUEUED:
                self.alerts_queued.set()  # an alert to send; nothing for the loop
                return
            # The trigger's payload is a strategy id: desired state changed. The other one comes from
            # a reconcile pass that scheduled something: claim only, unless this replica's own pass
            # sent it, which claimed right after it committed.
            if not payload.startswith(SCHEDULE_CHANGED):
                self._desired_changed.set()  # its pass says whether to claim (see _claim_due)
            elif payload == own_schedule:
                return
            else:
                self._claim_due = True
            self._wake_soon()

        def disconnected() -> None:
            self._listening = False
            self._wake_to_claim()  # back to polling at once

        await self.listener.run(stop, connected=connected, notified=notified, disconnected=disconnected)

    def _wake_to_claim(self) -> None:
        self._claim_due = True
        self._wake.set()

    def _wake_soon(self) -> None:
        """Wake the loop WAKE_DEBOUNCE_SECONDS from the first of a run of notifications (the others
        within that time set their flags and ride on the same wake-up)."""
        if self._debounce is not None:
            return
        self._debounce = asyncio.get_running_loop().call_later(WAKE_DEBOUNCE_SECONDS, self._debounced)

    def _debounced(self) -> None:
        self._debounce = None
        self._wake.set()

    # --- health -------------------------------------------------------------------------------

    def _db_ok(self) -> None:
        self.metrics.database(up=True)
        self.outage.succeeded()
        self.health.database_ok = True

    def _db_down(self, exc: Exception) -> None:
        self.metrics.database(up=False)
        self.outage.failed(exc)
        self.health.database_ok = False
        self.health.last_error = str(exc)

    async def _with_db(self, operation: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
        """Retry `operation` until it succeeds or `stop` is set (then raise DatabaseUnavailable)."""
        delay = 0.2
        while True:
            try:
                result = await operation()
                self._db_ok()
                return result
            except DatabaseUnavailable as exc:
                self._db_down(exc)
                if stop.is_set():
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)


class _Wakeup:
    """An `asyncio.Event` for the main loop, its one waiter, whose `wait` takes a timeout.

    The loop sleeps between passes about once per two executions at its ceiling. Waiting for the
    first of two Events with `asyncio.wait` cost two tasks, a future with its callbacks and the two
    tasks' cancellation, ~80 calls each time; this costs a future and a timer."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self, timeout: float) -> None:
        """Until set, or `timeout` seconds; at once when already set."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _never_started() -> ExecutionOutcome:
    """The outcome of an execution the drain gave up on before it reached the sandbox."""
    return ExecutionOutcome(
        status="interrupted", duration=0.0, error="the replica stopped before this execution started"
    )
