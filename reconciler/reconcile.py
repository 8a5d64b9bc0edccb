"""The pure reconcile decision: (spec, status, now) -> what the status row must become.

Level-based, like a controller-runtime Reconciler: it looks only at the current desired and actual
state, never at which API call changed them, so a missed notification or a crashed replica costs a
pass, never a wrong result. Nothing here does I/O; the loop reads the rows, calls `decide`, and
writes what it returns under the rows' locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal


@dataclass(frozen=True, slots=True)
class Spec:
    strategy_id: str
    generation: int
    desired_state: Literal["running", "stopped"]
    execution_interval: int  # seconds
    delete_requested: bool
    # The last explicit `start`: it lifts a halt that happened before it.
    started_at: datetime | None = None
    # The last spec change (deploy, redeploy, start, stop), by the database's clock: where a strategy
    # that becomes runnable anchors its schedule.
    changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    observed_generation: int
    schedule_anchor_at: datetime | None
    schedule_interval: int | None
    next_execution_at: datetime | None
    running_execution_id: str | None
    status_reason: str | None = None
    # While status is "halted": when the risk guard halted it, and when a pause lifts by itself.
    halted_at: datetime | None = None
    resume_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SetStatus:
    """Write these fields to the strategy's status row (creating it if missing)."""

    status: Literal["running", "stopped", "error", "deleting", "halted"]
    observed_generation: int
    schedule_anchor_at: datetime | None
    schedule_interval: int | None
    next_execution_at: datetime | None
    status_reason: str | None = None
    # A halt ends with this write (a pause ran out, or a person started the strategy again): the
    # risk guard's memory (failure streak, equity peak, day baseline) starts afresh, and it is alerted.
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class Finalize:
    """Deletion was requested and nothing is in flight: delete the strategy and everything it owns."""


@dataclass(frozen=True, slots=True)
class NoChange:
    pass


Action = SetStatus | Finalize | NoChange


def decide(spec: Spec, status: Status | None, now: datetime, compile_error: str | None = None) -> Action:
    """What to do with one strategy. `compile_error` is the language policy's verdict on the spec's code."""
    if spec.delete_requested:
        if status is not None and status.running_execution_id is not None:
            # Let the execution in flight finish and be recorded; finalize on a later pass.
            return _set_if_changed(status, _deleting(spec, status))
        return Finalize()

    if spec.desired_state == "stopped":
        return _set_if_changed(
            status,
            SetStatus(
                status="stopped",
                observed_generation=spec.generation,
                schedule_anchor_at=None,
                schedule_interval=None,
                next_execution_at=None,
            ),
        )

    if compile_error is not None:
        return _set_if_changed(
            status,
            SetStatus(
                status="error",
                observed_generation=spec.generation,
                schedule_anchor_at=None,
                schedule_interval=None,
                next_execution_at=None,
                status_reason=compile_error,
            ),
        )

    if status is not None and status.status == "halted":
        if not _halt_lifted(spec, status, now):
            # Halted is actual state, written by the risk guard; a spec change (new code, config)
            # is acknowledged without lifting it. Only `start` or the pause's end does that.
            return _set_if_changed(
                status,
                SetStatus(
                    status="halted",
                    observed_generation=spec.generation,
                    schedule_anchor_at=None,
                    schedule_interval=None,
                    next_execution_at=None,
                    status_reason=status.status_reason,
                ),
            )
        resumed = _schedule(spec, status, now)
        lifted_by_start = spec.started_at is not None and (
            status.halted_at is None or spec.started_at > status.halted_at
        )
        if not lifted_by_start and status.halted_at is not None:
            # A pause that ran out: the strategy runs again one interval after the halt, not at
            # once, so a pause shorter than the interval never makes it run more often than its
            # interval (a strategy failing at every run, paused 3 s on a 30 s interval, ran every
            # ~3 s). A pause longer than that ends with a run at once, as before.
            first = status.halted_at + timedelta(seconds=spec.execution_interval)
            if first > now:
                resumed = SetStatus("running", spec.generation, first, spec.execution_interval, first)
        return SetStatus(
            resumed.status,
            resumed.observed_generation,
            resumed.schedule_anchor_at,
            resumed.schedule_interval,
            resumed.next_execution_at,
            resumed=True,
        )

    return _set_if_changed(status, _schedule(spec, status, now))


def _halt_lifted(spec: Spec, status: Status, now: datetime) -> bool:
    if spec.started_at is not None and (status.halted_at is None or spec.started_at > status.halted_at):
        return True
    return status.resume_at is not None and status.resume_at <= now


def _schedule(spec: Spec, status: Status | None, now: datetime) -> SetStatus:
    interval = spec.execution_interval
    scheduled = (
        status is not None
        and status.status == "running"
        and status.schedule_anchor_at is not None
        and status.schedule_interval is not None
        and status.next_execution_at is not None
    )
    if not scheduled:
        # Newly deployed or (re)started: the grid is anchored when that happened, and its first tick is
        # due at once. Anchored on the pass's `now` instead, every strategy one pass reconciles (a
        # burst of deploys) would share one phase and fall due in one burst, every interval. A change
        # older than an interval (a pause that ran out, no replica up meanwhile) anchors now: no tick
        # is owed for a time nothing was scheduled.
        anchor = now
        if spec.changed_at is not None and spec.changed_at > now - timedelta(seconds=interval):
            anchor = spec.changed_at
        return SetStatus("running", spec.generation, anchor, interval, anchor)
    assert status is not None and status.next_execution_at is not None and status.schedule_interval is not None
    if status.schedule_interval == interval:
        # Same interval (a code or config change): the schedule carries on untouched.
        return SetStatus("running", spec.generation, status.schedule_anchor_at, interval, status.next_execution_at)
    # The interval changed: it applies from the next tick, which is now one *new* interval after the
    # last tick instead of one old interval after it. A next tick already in the past is simply due;
    # the claim coalesces whatever grid points it missed.
    last_tick = status.next_execution_at - timedelta(seconds=status.schedule_interval)
    next_tick = last_tick + timedelta(seconds=interval)
    if next_tick < now:
        # Shortened below the time since the last tick: the new grid's points before now were never
        # a schedule anyone ran on, so none is counted missed. The grid is anchored at its latest
        # point at or before now, which is due at once (and is not the last tick: at least one new
        # interval after it).
        step = timedelta(seconds=interval)
        latest = last_tick + step * ((now - last_tick) // step)
        return SetStatus("running", spec.generation, latest, interval, latest)
    return SetStatus("running", spec.generation, last_tick, interval, next_tick)


def _deleting(spec: Spec, status: Status) -> SetStatus:
    return SetStatus(
        status="deleting",
        observed_generation=spec.generation,
        schedule_anchor_at=None,
        schedule_interval=None,
        next_execution_at=None,
    )


def _set_if_changed(status: Status | None, target: SetStatus) -> Action:
    if status is not None and (
        status.status == target.status
        and status.observed_generation == target.observed_generation
        and status.schedule_anchor_at == target.schedule_anchor_at
        and status.schedule_interval == target.schedule_interval
        and status.next_execution_at == target.next_execution_at
    ):
        return NoChange()
    return target
