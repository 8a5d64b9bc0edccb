"""The replica's slots, without a database: a fake store hands out as many due executions as asked.

A slot is a sandboxed process: never more running than there are slots; a slot is given back when
the process is gone, and a claimed execution waiting for one takes it at once. Executions claimed
ahead of a free slot are claimed like any other: each runs once and ends in exactly one recorded
outcome, and those the drain gives up on before they start are recorded `interrupted` without running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from reconciler import loop as loop_module
from reconciler.loop import Replica
from reconciler.outcome import BrokerCall, ExecutionOutcome, ExecutionRequest
from reconciler.service import _on_stop_signal
from reconciler.settings import Settings
from reconciler.storage.db import Database, DatabaseTimeout
from reconciler.storage.fence import Fence
from reconciler.storage.replica_store import Claim, Claimed, Completion, Heartbeat, Partitions, ReconcileReport

SLOTS = 3


class FakeStore:
    """Always `due` executions due (one per strategy, never two of one strategy in flight)."""

    def __init__(self, due: int) -> None:
        self.due = due
        self.in_flight: set[str] = set()
        self.claims: list[int] = []  # how many each claim asked for
        self.outcomes: dict[UUID, ExecutionOutcome] = {}
        self.recorded_twice: list[UUID] = []
        self.strategies: dict[UUID, str] = {}

    async def register(self, **_: Any) -> int:
        return 1

    async def deregister(self) -> None:
        return None

    async def heartbeat(self, *, renew: Sequence[Fence] = (), **_: Any) -> Heartbeat:
        return Heartbeat(True, frozenset(fence.execution_id for fence in renew), frozenset(), [])

    async def reconcile(self, *_: Any, **__: Any) -> ReconcileReport:
        return ReconcileReport(0, 0, 0)

    async def prune(self, **_: Any) -> int:
        return 0

    async def maintain_partitions(self, **_: Any) -> Partitions:
        return Partitions()

    async def claim(self, slots: int, *, requests: bool = True) -> Claimed:
        self.claims.append(slots)
        await asyncio.sleep(0.002)  # a round trip
        claims = []
        for i in range(self.due):
            strategy_id = f"s{i}"
            if len(claims) == slots:
                break
            if strategy_id in self.in_flight:
                continue
            self.in_flight.add(strategy_id)
            claim = a_claim(strategy_id)
            self.strategies[claim.execution_id] = strategy_id
            claims.append(claim)
        return Claimed(claims, None if len(claims) == slots else 0.05)

    async def complete_many(
        self, outcomes: Sequence[tuple[Fence, ExecutionOutcome]], **_: Any
    ) -> dict[UUID, Completion]:
        await asyncio.sleep(0.002)
        for fence, outcome in outcomes:
            if fence.execution_id in self.outcomes:
                self.recorded_twice.append(fence.execution_id)
            self.outcomes[fence.execution_id] = outcome
            self.in_flight.discard(fence.strategy_id)
        return {fence.execution_id: Completion(True, False) for fence, _ in outcomes}


class FakeSandbox:
    """Runs for `seconds`, or (`block`) until interrupted; counts what ran and how many at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.block = False
        self.running = 0
        self.blocked = 0
        self.peak = 0
        self.ran: Counter[str] = Counter()
        self._interrupt = asyncio.Event()

    @property
    def layers(self) -> dict[str, bool]:
        return {}

    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome:
        self.ran[request.execution_id] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.block:
                self.blocked += 1
                await self._interrupt.wait()
                return ExecutionOutcome(status="interrupted", duration=0.1)
            await asyncio.sleep(self.seconds)
            return ExecutionOutcome(status="succeeded", duration=self.seconds)
        finally:
            self.running -= 1

    async def interrupt_all(self) -> None:
        self._interrupt.set()


class QuietListener:
    async def run(self, stop: asyncio.Event, **_: Any) -> None:
        await stop.wait()


def replica(store: FakeStore, sandbox: FakeSandbox, **settings: Any) -> Replica:
    async def compiles(code: str) -> str | None:
        return None

    own = Settings(max_concurrent_strategies=SLOTS, **settings)
    url = "postgresql://unused@/unused"  # the listener is replaced: nothing connects
    made = Replica(own, Database(None), sandbox, check_code=compiles, database_url=url, replica_id="r")  # type: ignore[arg-type]
    made.store = store  # type: ignore[assignment]
    made.listener = QuietListener()  # type: ignore[assignment]
    return made


async def run_for(made: Replica, seconds: float, before_stop: Any = None) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(made.run(stop))
    await asyncio.sleep(seconds)
    if before_stop is not None:
        await before_stop()
    stop.set()
    await asyncio.wait_for(task, 30)


def test_short_executions_are_claimed_ahead_run_once_each_and_recorded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # However slow the host, slots free fast enough to claim ahead.
    monkeypatch.setattr(loop_module, "CLAIM_AHEAD_SECONDS", 3600.0)
    store, sandbox = FakeStore(due=50), FakeSandbox(0.005)
    made = replica(store, sandbox)
    asyncio.run(run_for(made, 1.0))
    assert sandbox.peak <= SLOTS
    assert len(sandbox.ran) > 2 * SLOTS
    assert set(sandbox.ran.values()) == {1}
    assert {str(execution_id) for execution_id in store.outcomes} == set(sandbox.ran)
    assert store.recorded_twice == []
    assert {outcome.status for outcome in store.outcomes.values()} == {"succeeded"}
    # Once slots had freed, claims asked for more than the free slots (those held ready).
    assert max(store.claims) > SLOTS


def test_without_claiming_ahead_claims_never_exceed_the_free_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    # Executions that free their slots slower than CLAIM_AHEAD_SECONDS apart are not claimed ahead.
    monkeypatch.setattr(loop_module, "CLAIM_AHEAD_SECONDS", 0.0)
    store, sandbox = FakeStore(due=50), FakeSandbox(0.005)
    asyncio.run(run_for(replica(store, sandbox), 0.5))
    assert max(store.claims) <= SLOTS
    assert store.recorded_twice == [] and set(sandbox.ran.values()) == {1}


def test_the_drain_records_executions_claimed_ahead_interrupted_without_running_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_module, "CLAIM_AHEAD_SECONDS", 3600.0)
    store, sandbox = FakeStore(due=50), FakeSandbox(0.005)
    made = replica(store, sandbox, shutdown_grace_seconds=1)

    async def block_and_fill() -> None:
        # Every slot now holds a process that runs until interrupted, and executions wait for them.
        sandbox.block = True
        for _ in range(200):
            if sandbox.blocked == SLOTS and made._ready:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no execution waited for a slot")

    asyncio.run(run_for(made, 0.3, block_and_fill))
    waited = [execution_id for execution_id in store.outcomes if str(execution_id) not in sandbox.ran]
    assert waited, "an execution claimed ahead was still waiting when the drain gave up"
    for execution_id in waited:
        assert store.outcomes[execution_id].status == "interrupted"
        assert "before this execution started" in (store.outcomes[execution_id].error or "")
    assert set(sandbox.ran.values()) == {1}
    # Every execution claimed ended in exactly one recorded outcome, run or not.
    assert set(store.strategies) == set(store.outcomes)
    assert store.recorded_twice == []
    assert sandbox.peak <= SLOTS


async def _until_executions_wait_for_a_slot(made: Any, sandbox: Any) -> None:
    """Let slots free fast (so executions are claimed ahead), then block every slot, until all are
    taken and some claimed executions wait for one."""
    await asyncio.sleep(0.3)
    sandbox.block = True
    for _ in range(200):
        if sandbox.blocked == SLOTS and made._ready and len(made._tasks) == SLOTS:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no execution waited for a slot")


def test_the_first_ctrl_c_counts_the_executions_claimed_ahead_the_drain_waits_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The notice says what the drain will wait for: the executions holding a slot, and those
    claimed ahead, waiting for one (each runs if a slot frees within the grace period)."""
    monkeypatch.setattr(loop_module, "CLAIM_AHEAD_SECONDS", 3600.0)
    store, sandbox = FakeStore(due=50), FakeSandbox(0.005)
    made = replica(store, sandbox, shutdown_grace_seconds=7)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(made.run(stop))
        await _until_executions_wait_for_a_slot(made, sandbox)
        counted = (len(made._tasks), len(made._ready))
        with caplog.at_level(logging.WARNING, logger="reconciler.service"):
            _on_stop_signal(stop, made, 7.0)  # the first Ctrl-C
        made.force_stop.set()
        await asyncio.wait_for(task, 30)
        return counted

    running, waiting = asyncio.run(scenario())
    assert running == SLOTS and waiting > 0
    (notice,) = [r.getMessage() for r in caplog.records if "may take up to" in r.getMessage()]
    assert notice.startswith(
        f"stopping: {running} running, {waiting} claimed and waiting for a slot; they may take up to 7 s to finish"
    ), notice
    assert "Ctrl-C again" in notice


def test_health_counts_the_slots_taken_and_the_executions_claimed_ahead_as_the_drain_notice_does(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """/health's `in_flight` (executions in slots) and `claimed_waiting` (claimed ahead, waiting for a
    slot) are the two figures the Ctrl-C notice gives, and both are back to 0 once the drain is done."""
    monkeypatch.setattr(loop_module, "CLAIM_AHEAD_SECONDS", 3600.0)
    store, sandbox = FakeStore(due=50), FakeSandbox(0.005)
    made = replica(store, sandbox, shutdown_grace_seconds=7)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(made.run(stop))
        await _until_executions_wait_for_a_slot(made, sandbox)
        reported = (made.health.in_flight, made.health.claimed_waiting)
        with caplog.at_level(logging.WARNING, logger="reconciler.service"):
            _on_stop_signal(stop, made, 7.0)
        made.force_stop.set()
        await asyncio.wait_for(task, 30)
        return reported

    in_flight, claimed_waiting = asyncio.run(scenario())
    assert in_flight == SLOTS and claimed_waiting > 0
    (notice,) = [r.getMessage() for r in caplog.records if "may take up to" in r.getMessage()]
    assert notice.startswith(f"stopping: {in_flight} running, {claimed_waiting} claimed and waiting for a slot"), notice
    assert (made.health.in_flight, made.health.claimed_waiting) == (0, 0)


class InterruptibleSandbox(FakeSandbox):
    """Like the real sandbox: `interrupt_all` ends the runs in progress, and no run that starts later."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.live: set[asyncio.Event] = set()

    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome:
        self.ran[request.execution_id] += 1
        interrupted = asyncio.Event()
        self.live.add(interrupted)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(interrupted.wait(), self.seconds)
        finally:
            self.live.discard(interrupted)
        status = "interrupted" if interrupted.is_set() else "succeeded"
        return ExecutionOutcome(status=status, duration=0.1)

    async def interrupt_all(self) -> None:
        for run in self.live:
            run.set()


class HeldBrokers:
    """A broker session that opens only when the test says so (a slow exchange or database)."""

    def __init__(self) -> None:
        self.opening = asyncio.Event()
        self.open = asyncio.Event()

    @contextlib.asynccontextmanager
    async def session(self, **_: Any) -> AsyncIterator[BrokerCall]:
        self.opening.set()
        await self.open.wait()

        async def call(method: str, params: dict[str, Any]) -> Any:
            raise AssertionError("the strategy never runs")

        yield call


def test_a_second_ctrl_c_while_an_execution_is_still_starting_records_it_interrupted() -> None:
    """The drain interrupts the sandbox while an execution is on its way there (its broker session
    opening): that execution must not start afterwards and run behind the drain's back, its outcome
    lost when the replica stops; it ends `interrupted` without running, like one claimed ahead."""
    store, sandbox, brokers = FakeStore(due=1), InterruptibleSandbox(20.0), HeldBrokers()
    made = replica(store, sandbox, lease_seconds=4)
    made.brokers = brokers

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(made.run(stop))
        await asyncio.wait_for(brokers.opening.wait(), 10)
        stop.set()
        made.force_stop.set()  # the second Ctrl-C
        while not made._interrupting:  # the drain has interrupted what the sandbox was running
            await asyncio.sleep(0.01)
        began = time.monotonic()
        brokers.open.set()
        await asyncio.wait_for(task, 60)
        return time.monotonic() - began

    took = asyncio.run(scenario())
    assert [outcome.status for outcome in store.outcomes.values()] == ["interrupted"]
    assert not sandbox.ran
    assert took < 5


class RacingStore(FakeStore):
    """The heartbeat runs while a batch of outcomes is being written, and answers as PostgreSQL does
    then: the renewal waited for the outcome's row lock, found the execution finished, and its
    snapshot (older than the outcome's commit) still showed it running, so "not renewed"."""

    def __init__(self, due: int) -> None:
        super().__init__(due)
        self.writing: set[UUID] = set()
        self.raced: set[UUID] = set()

    async def heartbeat(self, *, renew: Sequence[Fence] = (), **_: Any) -> Heartbeat:
        named = {fence.execution_id for fence in renew}
        racing = named & self.writing
        self.raced |= racing
        return Heartbeat(True, frozenset(named - racing), frozenset(racing), [])

    async def complete_many(
        self, outcomes: Sequence[tuple[Fence, ExecutionOutcome]], **options: Any
    ) -> dict[UUID, Completion]:
        ids = {fence.execution_id for fence, _ in outcomes}
        self.writing |= ids
        try:
            await asyncio.sleep(1.1)  # longer than the heartbeat's interval (half the lease): one lands meanwhile
            return await super().complete_many(outcomes, **options)
        finally:
            self.writing -= ids


def test_a_heartbeat_racing_an_outcome_fences_nothing_and_logs_no_kill(caplog: pytest.LogCaptureFixture) -> None:
    store, sandbox = RacingStore(due=5), FakeSandbox(0.01)
    made = replica(store, sandbox, lease_seconds=3)
    with caplog.at_level("WARNING", logger="reconciler.loop"):
        asyncio.run(run_for(made, 3.5))
    assert store.raced  # the race happened
    assert not [record for record in caplog.records if "fenced off" in record.getMessage()]
    assert store.recorded_twice == [] and set(sandbox.ran.values()) == {1}
    assert {str(execution_id) for execution_id in store.outcomes} == set(sandbox.ran)


class FlakyReconcileStore(FakeStore):
    """The second reconcile pass (the one a desired-state change wakes) fails as a lock timeout does;
    the others go through."""

    def __init__(self) -> None:
        super().__init__(due=0)
        self.passes: list[float] = []

    async def reconcile(self, *_: Any, **__: Any) -> ReconcileReport:
        self.passes.append(time.monotonic())
        if len(self.passes) == 2:
            raise DatabaseTimeout("database timeout (55P03): canceling statement due to lock timeout")
        return ReconcileReport(0, 0, 0)


def test_a_reconcile_pass_that_failed_is_tried_again_within_seconds_not_at_the_resync() -> None:
    store, sandbox = FlakyReconcileStore(), FakeSandbox(0.01)
    made = replica(store, sandbox, resync_interval_seconds=60, poll_interval_seconds=60)
    made._listening = True  # notifications arrive: without one, only the resync (60 s) would reconcile

    async def notified() -> None:
        await asyncio.sleep(0.5)  # the first pass is done
        made._desired_changed.set()  # what a NOTIFY of a desired-state change does
        made._wake.set()

    async def main() -> None:
        waker = asyncio.create_task(notified())
        await run_for(made, 3.5)
        await waker

    asyncio.run(main())
    assert len(store.passes) >= 3, store.passes  # the failed pass was tried again
    assert store.passes[2] - store.passes[1] < 2.5


class HeldStore(FakeStore):
    """Reconcile passes find one strategy held by another replica's pass until `release_after` seconds."""

    def __init__(self, release_after: float) -> None:
        super().__init__(due=0)
        self.start = time.monotonic()
        self.release_after = release_after
        self.passes: list[float] = []

    async def reconcile(self, *_: Any, **__: Any) -> ReconcileReport:
        now = time.monotonic() - self.start
        self.passes.append(now)
        return ReconcileReport(0, 0, 0, held=1 if now < self.release_after else 0)


def test_a_pass_that_found_strategies_held_elsewhere_looks_again_backing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # Scaled down tenfold: a look 0.1 s later, doubling up to 0.4 s while they stay held.
    monkeypatch.setattr(loop_module, "RELOOK_SECONDS", 0.1)
    monkeypatch.setattr(loop_module, "RELOOK_MAX_SECONDS", 0.4)
    store, sandbox = HeldStore(release_after=1.5), FakeSandbox(0.01)
    made = replica(store, sandbox, resync_interval_seconds=60, poll_interval_seconds=60)
    made._listening = True  # only notifications and the resync (60 s) would start a pass otherwise
    asyncio.run(run_for(made, 3.0))
    passes = store.passes
    gaps = [later - earlier for earlier, later in itertools.pairwise(passes)]
    # 0, 0.1, 0.3, 0.7, 1.1, 1.5 (or a little later on a busy host), then nothing more: none was held.
    assert 4 <= len(passes) <= 7, passes
    assert all(0.09 <= gap <= 0.4 + 0.25 for gap in gaps), gaps
    assert gaps[:3] == sorted(gaps[:3]) and gaps[2] > 1.5 * gaps[0], gaps  # backing off
    assert 1.5 <= passes[-1] <= 1.5 + 0.4 + 0.25, passes  # the look that found them free came soon after


class CountingStore(FakeStore):
    """Nothing scheduled; its passes report run requests waiting once `requests` is set."""

    def __init__(self) -> None:
        super().__init__(due=0)
        self.passes = 0
        self.requests = False
        self.claimed_requests: list[bool] = []

    async def reconcile(self, *_: Any, **__: Any) -> ReconcileReport:
        self.passes += 1
        return ReconcileReport(0, 0, 0, requests=self.requests)

    async def claim(self, slots: int, *, requests: bool = True) -> Claimed:
        self.claims.append(slots)
        self.claimed_requests.append(requests)
        return Claimed([], None)  # nothing scheduled: only a wake-up brings the next claim


class Notifier:
    """A LISTEN connection that delivers `payloads`, `every` seconds apart, once connected."""

    def __init__(self, payloads: list[str], every: float) -> None:
        self.payloads = payloads
        self.every = every

    async def run(self, stop: asyncio.Event, *, connected: Any, notified: Any, **_: Any) -> None:
        connected()
        await asyncio.sleep(0.5)  # the first passes (at start, and a full one at connect) are done
        started = time.monotonic()
        for payload in self.payloads:
            notified(payload)
            await asyncio.sleep(self.every)
        self.took = time.monotonic() - started
        await stop.wait()


def notified_replica(payloads: list[str], every: float) -> tuple[Replica, CountingStore]:
    store = CountingStore()
    made = replica(store, FakeSandbox(0.01), resync_interval_seconds=60, poll_interval_seconds=60)
    made.listener = Notifier(payloads, every)  # type: ignore[assignment]
    return made, store


def test_a_burst_of_notifications_wakes_the_loop_for_a_few_passes_not_one_each() -> None:
    made, store = notified_replica([f"s{i}" for i in range(40)], every=0.0005)  # 40 writes in a few ms
    asyncio.run(run_for(made, 1.5))
    took = made.listener.took  # type: ignore[attr-defined]
    # Two passes before the burst (at start, and at connect), then at most one per WAKE_DEBOUNCE_SECONDS
    # of it (and one after): without the wait, one pass and one claim for each notification.
    most = 2 + int(took / loop_module.WAKE_DEBOUNCE_SECONDS) + 2
    assert 3 <= store.passes <= min(most, 20), (store.passes, took)
    # Their passes scheduled nothing and found no run request: no claim after them (only those of the
    # passes at start and at connect), where every replica used to claim after every write.
    assert len(store.claims) == 2, store.claims


def test_a_spec_write_whose_pass_finds_a_run_request_waiting_claims_it() -> None:
    made, store = notified_replica(["s1"], every=0.1)
    store.requests = True  # what the trigger's NOTIFY of a run request looks like: a strategy id
    asyncio.run(run_for(made, 1.0))
    assert store.passes == 3 and store.claimed_requests == [True, True, True], store.claimed_requests


def test_a_replica_ignores_the_schedule_notification_its_own_pass_sent() -> None:
    made, store = notified_replica(["!schedule r"], every=0.1)
    asyncio.run(run_for(made, 1.0))
    assert (store.passes, len(store.claims)) == (2, 2)  # the passes at start and connect: nothing more
    made, store = notified_replica(["!schedule another-replica"], every=0.1)
    asyncio.run(run_for(made, 1.0))
    assert (store.passes, len(store.claims)) == (2, 3)  # another replica's: a claim, no pass


def a_claim(strategy_id: str) -> Claim:
    execution_id, now = uuid.uuid4(), datetime.now(UTC)
    return Claim(
        execution_id=execution_id,
        strategy_id=strategy_id,
        trigger="schedule",
        scheduled_for=now,
        claimed_at=now,
        generation=1,
        code="RESULT = 1\n",
        config={},
        exchange="paper",
        state={},
        fence=Fence(execution_id, strategy_id, "r", 1, now),
    )


class TimedStore(FakeStore):
    """`due` strategies due at once; each next due `next_due_in` seconds after its outcome is recorded,
    as COMPLETE_EXECUTIONS reports it. NEXT_DUE leaves out strategies in flight, as the real one does."""

    def __init__(self, due: int, next_due_in: float) -> None:
        super().__init__(due=due)
        self.next_due_in = next_due_in
        self.started = time.monotonic()
        self.claimed_at: list[float] = []  # seconds since the start, one per claim
        self.recorded_at: list[float] = []
        self.due_at: dict[str, float] = {f"s{i}": 0.0 for i in range(due)}

    async def claim(self, slots: int, *, requests: bool = True) -> Claimed:
        now = time.monotonic() - self.started
        self.claims.append(slots)
        self.claimed_at.append(now)
        await asyncio.sleep(0.002)  # a round trip
        ready = sorted(s for s, at in self.due_at.items() if at <= now and s not in self.in_flight)[:slots]
        claims = [a_claim(strategy_id) for strategy_id in ready]
        for claim in claims:
            self.in_flight.add(claim.strategy_id)
            self.strategies[claim.execution_id] = claim.strategy_id
        if len(claims) == slots:
            return Claimed(claims, None)
        later = [at - now for s, at in self.due_at.items() if s not in self.in_flight]
        return Claimed(claims, min(later) if later else None)

    async def complete_many(
        self, outcomes: Sequence[tuple[Fence, ExecutionOutcome]], **_: Any
    ) -> dict[UUID, Completion]:
        await asyncio.sleep(0.002)
        now = time.monotonic() - self.started
        for fence, outcome in outcomes:
            self.outcomes[fence.execution_id] = outcome
            self.in_flight.discard(fence.strategy_id)
            self.due_at[fence.strategy_id] = now + self.next_due_in
            self.recorded_at.append(now)
        return {fence.execution_id: Completion(True, False, False, self.next_due_in) for fence, _ in outcomes}


def test_a_freed_slot_or_a_recorded_outcome_makes_no_claim_when_nothing_is_due() -> None:
    # Two strategies, three slots, their next ticks a minute after each run: the first claim takes both,
    # and nothing else is due for a minute. Slots freeing and outcomes recorded change nothing that a
    # claim could take: no claim follows them (each used to cost a claim and a NEXT_DUE read).
    store = TimedStore(due=2, next_due_in=60.0)
    asyncio.run(run_for(replica(store, FakeSandbox(0.01)), 1.0))
    assert len(store.outcomes) == 2 and len(store.recorded_at) == 2
    assert store.claims == [SLOTS], store.claimed_at


def test_a_strategy_freed_by_its_outcome_is_claimed_when_its_next_tick_falls_due() -> None:
    # Its next tick 0.4 s after its outcome: claimed then, not at once and not at the resync.
    store = TimedStore(due=1, next_due_in=0.4)
    asyncio.run(run_for(replica(store, FakeSandbox(0.01), resync_interval_seconds=60), 1.5))
    first = store.recorded_at[0]
    after = [at - first for at in store.claimed_at if at > first]
    assert after, store.claimed_at
    # Timers never fire early; the upper bound only allows for a slow host.
    assert 0.39 <= after[0] <= 0.4 + 0.5, after
    assert len(store.outcomes) >= 2


def test_a_strategy_whose_next_tick_is_already_due_when_its_outcome_is_recorded_is_claimed_at_once() -> None:
    store = TimedStore(due=1, next_due_in=-1.0)  # a run that outlasted its interval
    asyncio.run(run_for(replica(store, FakeSandbox(0.01)), 0.5))
    first = store.recorded_at[0]
    after = [at - first for at in store.claimed_at if at > first]
    assert after and after[0] < 0.25, after
    assert len(store.outcomes) > 5  # back to back, each claimed as soon as the last was recorded


class SlowRecordStore(FakeStore):
    """Records take longer than claims, as a batch's commit does: finished executions wait for
    their outcomes to be recorded, and it is their number that bounds the next claim."""

    async def complete_many(
        self, outcomes: Sequence[tuple[Fence, ExecutionOutcome]], **options: Any
    ) -> dict[UUID, Completion]:
        await asyncio.sleep(0.02)
        return await super().complete_many(outcomes, **options)


class InstantSandbox(FakeSandbox):
    """Returns without awaiting anything, as the benchmarks' null runner does: the execution's task
    ends within the loop iteration that started it."""

    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome:
        self.ran[request.execution_id] += 1
        return ExecutionOutcome(status="succeeded", duration=0.0)


def test_executions_that_end_at_once_never_leave_the_loop_asleep_with_every_slot_free() -> None:
    # An execution's task wakes the loop as it ends. If the loop ran before the task left the set
    # `_wanted` counts, it found nothing to claim and slept until its idle interval (60 s here)
    # with every slot free. 200 executions take well under a second; the deadline only bounds a stall.
    store, sandbox = SlowRecordStore(due=50), InstantSandbox(0.0)
    made = replica(store, sandbox, resync_interval_seconds=60, poll_interval_seconds=60)
    made._listening = True  # no polling either: only the loop's own wake-ups make it claim

    async def until_enough() -> None:
        deadline = time.monotonic() + 20
        while len(store.outcomes) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    asyncio.run(run_for(made, 0.0, until_enough))
    assert len(store.outcomes) >= 200, f"the loop stalled after {len(store.outcomes)} executions"
    assert store.recorded_twice == [] and set(sandbox.ran.values()) == {1}
