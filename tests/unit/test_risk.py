"""The risk guard's pure decisions and the reconcile decision for halted strategies. No database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from reconciler import risk
from reconciler.reconcile import NoChange, SetStatus, Spec, Status, decide
from reconciler.risk import Breach, EquityState, RiskLimits, RiskSpecError

D = Decimal
TODAY = date(2026, 11, 27)


def limits(**spec: object) -> RiskLimits:
    return RiskLimits.parse(spec)


# --- parsing --------------------------------------------------------------------------------------


def test_an_empty_spec_enforces_nothing() -> None:
    assert not RiskLimits.parse({}).active
    assert not RiskLimits.parse(None).active


def test_a_full_spec_parses() -> None:
    parsed = limits(
        max_daily_loss=50,
        max_drawdown_pct=12.5,
        max_position={"BTCUSDT": 0.5},
        max_consecutive_failures=3,
        on_breach="pause",
        resume_after=600,
        currency="inr",
    )
    assert parsed.max_daily_loss == D(50)
    assert parsed.max_drawdown_pct == D("12.5")
    assert parsed.position_cap("BTCUSDT") == D("0.5")
    assert parsed.position_cap("ETHUSDT") is None
    assert parsed.currency == "INR"
    assert limits(max_position=2).position_cap("ANY") == D(2)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"max_daily_loss": 0}, "max_daily_loss"),
        ({"max_daily_loss": -5}, "max_daily_loss"),
        ({"max_daily_loss": "lots"}, "max_daily_loss"),
        ({"max_daily_loss": True}, "max_daily_loss"),
        ({"max_drawdown_pct": 100}, "max_drawdown_pct"),
        ({"max_position": {"BTCUSDT": -1}}, "max_position"),
        ({"max_position": {}}, "max_position"),
        ({"max_consecutive_failures": 0}, "max_consecutive_failures"),
        ({"max_consecutive_failures": 2.5}, "max_consecutive_failures"),
        ({"on_breach": "explode"}, "on_breach"),
        ({"max_drawdown_pct": 10, "on_breach": "pause"}, "resume_after"),
        ({"max_daily_loss": 10, "resume_after": 60}, "resume_after"),
        ({"resume_after": 0, "on_breach": "pause"}, "resume_after"),
        ({"currency": "US DOLLAR"}, "currency"),
        ({"max_loss": 10}, "max_loss"),
    ],
)
def test_bad_specs_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(RiskSpecError) as caught:
        RiskLimits.parse(spec)
    assert caught.value.field == field


def test_a_daily_loss_pause_needs_no_resume_after() -> None:
    assert limits(max_daily_loss=10, on_breach="pause").on_breach == "pause"


def test_lenient_keeps_every_limit_that_parses() -> None:
    kept = RiskLimits.lenient({"max_daily_loss": 10, "max_drawdown_pct": 400, "on_breach": "pause"})
    assert kept.max_daily_loss == D(10)
    assert kept.max_drawdown_pct is None
    assert kept.on_breach == "stop"  # a malformed pause fails safe: stopped until a person looks


# --- equity ----------------------------------------------------------------------------------------


def test_daily_loss_is_measured_from_the_first_measure_of_the_utc_day() -> None:
    rules = limits(max_daily_loss=100)
    state, breach = risk.observe_equity(rules, EquityState(), D(10_000), TODAY)
    assert breach is None and state.day_start_equity == D(10_000) and state.day == TODAY
    state, breach = risk.observe_equity(rules, state, D(9_950), TODAY)
    assert breach is None
    state, breach = risk.observe_equity(rules, state, D(9_900), TODAY)
    assert breach is not None and breach.limit == "max_daily_loss"
    assert breach.value == D(100) and breach.threshold == D(100)
    assert "max_daily_loss" in breach.message and "100" in breach.message


def test_a_new_utc_day_starts_a_new_baseline() -> None:
    rules = limits(max_daily_loss=100)
    state, _ = risk.observe_equity(rules, EquityState(), D(10_000), TODAY)
    state, _ = risk.observe_equity(rules, state, D(9_950), TODAY)
    state, breach = risk.observe_equity(rules, state, D(9_870), TODAY + timedelta(days=1))
    assert breach is None
    assert state.day_start_equity == D(9_870)


def test_drawdown_is_measured_from_the_peak_not_the_start() -> None:
    rules = limits(max_drawdown_pct=10)
    state = EquityState()
    for equity in (10_000, 11_000, 12_000):  # a peak reached mid-way
        state, breach = risk.observe_equity(rules, state, D(equity), TODAY)
        assert breach is None
    state, breach = risk.observe_equity(rules, state, D(10_900), TODAY)  # 9.2 % below the peak
    assert breach is None
    state, breach = risk.observe_equity(rules, state, D(10_800), TODAY)  # still 8 % above the start
    assert breach is not None and breach.limit == "max_drawdown_pct"
    assert breach.value == D(10) and state.peak == D(12_000)
    assert "is 10% below its peak of 12000 USDT" in breach.message


def test_a_tiny_drawdown_limit_shows_the_value_it_recorded() -> None:
    rules = limits(max_drawdown_pct=D("0.0002"))
    state, _ = risk.observe_equity(rules, EquityState(), D("21676.8"), TODAY)
    state, breach = risk.observe_equity(rules, state, D("21676.418"), TODAY)
    assert breach is not None and breach.value == D("0.0018")
    assert "is 0.0018% below its peak" in breach.message


def test_a_new_peak_is_never_a_drawdown() -> None:
    rules = limits(max_drawdown_pct=1)
    state, _ = risk.observe_equity(rules, EquityState(peak=D(100)), D(150), TODAY)
    assert state.peak == D(150)


def test_position_cap_refuses_the_buy_that_would_cross_it_and_never_a_sell() -> None:
    rules = limits(max_position={"BTCUSDT": D("0.5")})
    assert risk.check_position(rules, "BTCUSDT", "BTC", D("0.4"), "buy", D("0.1")) is None
    breach = risk.check_position(rules, "BTCUSDT", "BTC", D("0.4"), "buy", D("0.2"))
    assert breach is not None and breach.value == D("0.6") and breach.threshold == D("0.5")
    assert risk.check_position(rules, "BTCUSDT", "BTC", D("5"), "sell", D("1")) is None
    assert risk.check_position(rules, "ETHUSDT", "ETH", D("5"), "buy", D("1")) is None


def test_failures_halt_at_the_limit_and_alert_once_per_streak() -> None:
    rules = limits(max_consecutive_failures=3)
    assert risk.check_failures(rules, 2) is None
    breach = risk.check_failures(rules, 3)
    assert breach is not None and breach.limit == "max_consecutive_failures"
    assert [n for n in range(1, 8) if risk.failure_alert_due(rules, n)] == [3]
    assert [n for n in range(1, 8) if risk.failure_alert_due(RiskLimits(), n)] == [risk.DEFAULT_FAILURE_ALERT]


def test_resume_rules() -> None:
    halted_at = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)
    daily = Breach("max_daily_loss", D(1), D(1), "")
    drawdown = Breach("max_drawdown_pct", D(1), D(1), "")
    assert risk.resume_rule(limits(max_daily_loss=1), daily).at(halted_at) is None
    paused = limits(max_daily_loss=1, max_drawdown_pct=5, on_breach="pause", resume_after=90)
    assert risk.resume_rule(paused, daily).at(halted_at) == datetime(2026, 11, 28, tzinfo=UTC)
    assert risk.resume_rule(paused, drawdown).at(halted_at) == halted_at + timedelta(seconds=90)


# --- the reconcile decision and a halt -------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def spec(**changes: object) -> Spec:
    base: dict[str, object] = {
        "strategy_id": "s1",
        "generation": 3,
        "desired_state": "running",
        "execution_interval": 10,
        "delete_requested": False,
    }
    return Spec(**{**base, **changes})  # type: ignore[arg-type]


def halted(**changes: object) -> Status:
    base: dict[str, object] = {
        "status": "halted",
        "observed_generation": 2,
        "schedule_anchor_at": None,
        "schedule_interval": None,
        "next_execution_at": None,
        "running_execution_id": None,
        "status_reason": "halted by max_daily_loss: ...",
        "halted_at": NOW - timedelta(hours=1),
        "resume_at": None,
    }
    return Status(**{**base, **changes})  # type: ignore[arg-type]


def test_a_spec_change_does_not_lift_a_halt() -> None:
    action = decide(spec(), halted(), NOW)
    assert action == SetStatus("halted", 3, None, None, None, status_reason="halted by max_daily_loss: ...")
    assert decide(spec(generation=2), halted(), NOW) == NoChange()


def test_a_start_after_the_halt_lifts_it_and_one_before_does_not() -> None:
    action = decide(spec(started_at=NOW - timedelta(minutes=1)), halted(), NOW)
    assert action == SetStatus("running", 3, NOW, 10, NOW, resumed=True)
    before = decide(spec(started_at=NOW - timedelta(hours=2)), halted(), NOW)
    assert isinstance(before, SetStatus) and before.status == "halted"


def test_a_pause_lifts_at_its_time_and_not_before() -> None:
    waiting = decide(spec(generation=2), halted(resume_at=NOW + timedelta(seconds=1)), NOW)
    assert waiting == NoChange()
    due = decide(spec(generation=2), halted(resume_at=NOW), NOW)
    assert due == SetStatus("running", 2, NOW, 10, NOW, resumed=True)


def test_a_pause_shorter_than_the_interval_resumes_one_interval_after_the_halt() -> None:
    halted_at = NOW - timedelta(seconds=3)
    short = decide(spec(generation=2), halted(halted_at=halted_at, resume_at=NOW), NOW)
    first = halted_at + timedelta(seconds=10)
    assert short == SetStatus("running", 2, first, 10, first, resumed=True)
    # A start lifts it with a run at once, whatever the interval.
    started = decide(spec(started_at=NOW, changed_at=NOW), halted(halted_at=halted_at, resume_at=None), NOW)
    assert started == SetStatus("running", 3, NOW, 10, NOW, resumed=True)


def test_stop_and_delete_win_over_a_halt() -> None:
    stopped = decide(spec(desired_state="stopped"), halted(), NOW)
    assert isinstance(stopped, SetStatus) and stopped.status == "stopped" and not stopped.resumed
    assert decide(spec(delete_requested=True), halted(), NOW).__class__.__name__ == "Finalize"
