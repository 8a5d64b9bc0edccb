"""The pure reconcile decision, as a table of (spec, status, now) -> action. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.reconcile import Finalize, NoChange, SetStatus, Spec, Status, decide

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
T = timedelta(seconds=1)


def spec(**changes: object) -> Spec:
    base = {
        "strategy_id": "s1",
        "generation": 2,
        "desired_state": "running",
        "execution_interval": 10,
        "delete_requested": False,
    }
    return Spec(**{**base, **changes})  # type: ignore[arg-type]


def status(**changes: object) -> Status:
    base = {
        "status": "running",
        "observed_generation": 1,
        "schedule_anchor_at": NOW - 100 * T,
        "schedule_interval": 10,
        "next_execution_at": NOW + 5 * T,
        "running_execution_id": None,
    }
    return Status(**{**base, **changes})  # type: ignore[arg-type]


def test_new_running_strategy_is_due_now_on_a_grid_anchored_now() -> None:
    assert decide(spec(), None, NOW) == SetStatus("running", 2, NOW, 10, NOW)


def test_a_new_strategy_is_anchored_when_it_was_deployed_and_due_at_once() -> None:
    deployed = NOW - 2 * T
    assert decide(spec(changed_at=deployed), None, NOW) == SetStatus("running", 2, deployed, 10, deployed)


def test_strategies_deployed_one_after_another_keep_their_own_phases_when_reconciled_together() -> None:
    # One pass (one `now`) reconciles a burst of deploys: each keeps the phase of its own deploy.
    anchors = {decide(spec(strategy_id=f"s{i}", changed_at=NOW - i * T / 1000), None, NOW) for i in range(20)}
    assert len({action.schedule_anchor_at for action in anchors if isinstance(action, SetStatus)}) == 20


def test_a_start_older_than_an_interval_anchors_now() -> None:
    # Nothing was scheduled meanwhile (no replica up, say): no tick is owed for that time.
    assert decide(spec(changed_at=NOW - 11 * T), None, NOW) == SetStatus("running", 2, NOW, 10, NOW)
    # A restart after a stop is anchored at the start.
    stopped = status(status="stopped", schedule_anchor_at=None, schedule_interval=None, next_execution_at=None)
    started = NOW - 50 * T / 1000
    assert decide(spec(changed_at=started), stopped, NOW) == SetStatus("running", 2, started, 10, started)


def test_code_change_keeps_the_schedule_and_observes_the_generation() -> None:
    action = decide(spec(), status(), NOW)
    assert action == SetStatus("running", 2, NOW - 100 * T, 10, NOW + 5 * T)


def test_fully_reconciled_strategy_needs_nothing() -> None:
    assert decide(spec(), status(observed_generation=2), NOW) == NoChange()


def test_interval_change_moves_only_the_next_tick() -> None:
    # Last tick was at NOW-5s (next at NOW+5s with 10 s); with 30 s the next is at NOW+25s.
    action = decide(spec(execution_interval=30), status(), NOW)
    assert action == SetStatus("running", 2, NOW - 5 * T, 30, NOW + 25 * T)


def test_interval_shortened_past_now_is_simply_due() -> None:
    action = decide(spec(execution_interval=2), status(next_execution_at=NOW + 9 * T), NOW)
    # Last tick at NOW-1s; one new interval later is NOW+1s (and the claim handles a past tick).
    assert action == SetStatus("running", 2, NOW - 1 * T, 2, NOW + 1 * T)


def test_interval_shortened_below_the_time_since_the_last_tick_runs_now_and_counts_nothing_missed() -> None:
    # Last tick at NOW-5s; with 2 s the new grid's points NOW-3s and NOW-1s were never a schedule: the
    # grid is anchored at its latest point at or before now, due at once, so the claim coalesces nothing.
    action = decide(spec(execution_interval=2), status(), NOW)
    assert action == SetStatus("running", 2, NOW - 1 * T, 2, NOW - 1 * T)


@pytest.mark.parametrize("running", [None, "e1"])
def test_stop_clears_the_schedule_whether_or_not_an_execution_is_in_flight(running: str | None) -> None:
    action = decide(spec(desired_state="stopped"), status(running_execution_id=running), NOW)
    assert action == SetStatus("stopped", 2, None, None, None)


def test_restart_after_stop_runs_now_on_a_new_grid() -> None:
    stopped = status(status="stopped", schedule_anchor_at=None, schedule_interval=None, next_execution_at=None)
    assert decide(spec(), stopped, NOW) == SetStatus("running", 2, NOW, 10, NOW)


def test_code_that_no_longer_compiles_puts_the_strategy_in_error() -> None:
    action = decide(spec(), status(), NOW, compile_error="line 3, column 1: invalid syntax")
    assert action == SetStatus("error", 2, None, None, None, "line 3, column 1: invalid syntax")


def test_fixed_code_after_error_schedules_afresh() -> None:
    errored = status(status="error", schedule_anchor_at=None, schedule_interval=None, next_execution_at=None)
    assert decide(spec(generation=3), errored, NOW) == SetStatus("running", 3, NOW, 10, NOW)


def test_deletion_waits_for_the_execution_in_flight() -> None:
    action = decide(spec(delete_requested=True), status(running_execution_id="e1"), NOW)
    assert action == SetStatus("deleting", 2, None, None, None)
    already = status(
        status="deleting",
        observed_generation=2,
        running_execution_id="e1",
        schedule_anchor_at=None,
        schedule_interval=None,
        next_execution_at=None,
    )
    assert decide(spec(delete_requested=True), already, NOW) == NoChange()


@pytest.mark.parametrize("current", [None, status(), status(status="deleting", running_execution_id=None)])
def test_deletion_with_nothing_in_flight_finalizes(current: Status | None) -> None:
    assert decide(spec(delete_requested=True), current, NOW) == Finalize()


def test_deletion_wins_over_a_compile_error() -> None:
    assert decide(spec(delete_requested=True), None, NOW, compile_error="bad") == Finalize()
