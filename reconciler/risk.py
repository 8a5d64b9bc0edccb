"""The risk guard's decisions: pure functions from (limits, what was measured, now) to a verdict.

The limits live in the strategy's spec (`risk`, beside `config`), so the strategy's own code can
neither read them as something to negotiate nor change them: the broker, outside the sandbox,
measures and enforces. Nothing here does I/O; the broker (`reconciler.exchange.risk_guard`) measures
equity and positions and writes halts, the replica store counts failures, and the reconcile
decision lifts halts. Each is tested without a database.

Limits, all optional:
- `max_daily_loss`: equity may fall at most this far (quote currency, realised plus unrealised)
  below where it stood when the UTC day began (the first measure of the day).
- `max_drawdown_pct`: equity may fall at most this many percent below its peak (the highest
  measure since deploy, or since the last resume), not below where it started.
- `max_position`: per market, the most of the traded coin the strategy may hold after a buy
  (`{"BTCUSDT": 0.5}`, or one number for every market).
- `max_consecutive_failures`: executions in a row that end other than `succeeded`.
`on_breach`: `"stop"` (halted until a person starts the strategy again) or `"pause"` (resumes by
itself: at the next UTC midnight after a daily-loss breach, otherwise `resume_after` seconds later).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

DAILY_LOSS = "max_daily_loss"
DRAWDOWN = "max_drawdown_pct"
POSITION = "max_position"
FAILURES = "max_consecutive_failures"
LIMIT_NAMES = (DAILY_LOSS, DRAWDOWN, POSITION, FAILURES)
DEFAULT_CURRENCY = "USDT"
# The `consecutive_failures` alert fires at this streak when no failure limit is set.
DEFAULT_FAILURE_ALERT = 3

OnBreach = Literal["stop", "pause"]


class RiskSpecError(ValueError):
    """A `risk` object that cannot be enforced; `field` names the offending key."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"risk.{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_daily_loss: Decimal | None = None
    max_drawdown_pct: Decimal | None = None
    # Per market, and "*" for every market not named.
    max_position: Mapping[str, Decimal] | None = None
    max_consecutive_failures: int | None = None
    on_breach: OnBreach = "stop"
    resume_after: int | None = None  # seconds
    currency: str = DEFAULT_CURRENCY  # what equity is valued in

    @property
    def measures_equity(self) -> bool:
        return self.max_daily_loss is not None or self.max_drawdown_pct is not None

    @property
    def active(self) -> bool:
        return self.measures_equity or self.max_position is not None or self.max_consecutive_failures is not None

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> RiskLimits:
        """Validate a spec's `risk` object; raise RiskSpecError naming the key at fault."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise RiskSpecError("risk", "must be an object")
        known = {*LIMIT_NAMES, "on_breach", "resume_after", "currency"}
        for key in spec:
            if key not in known:
                raise RiskSpecError(str(key), f"unknown key; known keys are {', '.join(sorted(known))}")
        daily = _positive(spec, DAILY_LOSS)
        drawdown = _positive(spec, DRAWDOWN)
        if drawdown is not None and drawdown >= 100:
            raise RiskSpecError(DRAWDOWN, "must be below 100 (a percentage of the peak equity)")
        position = _positions(spec.get(POSITION))
        failures = spec.get(FAILURES)
        if failures is not None and (not isinstance(failures, int) or isinstance(failures, bool) or failures < 1):
            raise RiskSpecError(FAILURES, "must be a whole number >= 1")
        on_breach = spec.get("on_breach", "stop")
        if on_breach not in ("stop", "pause"):
            raise RiskSpecError("on_breach", "must be 'stop' or 'pause'")
        resume_after = spec.get("resume_after")
        if resume_after is not None and (
            not isinstance(resume_after, int) or isinstance(resume_after, bool) or not 1 <= resume_after <= 30 * 86_400
        ):
            raise RiskSpecError("resume_after", "must be a whole number of seconds between 1 and 2592000 (30 days)")
        pausing_limits = [
            name
            for name, value in ((DRAWDOWN, drawdown), (POSITION, position), (FAILURES, failures))
            if value is not None
        ]
        if on_breach == "pause" and pausing_limits and resume_after is None:
            raise RiskSpecError(
                "resume_after",
                f"required with on_breach 'pause' and {', '.join(pausing_limits)}: how many seconds to pause "
                f"(a {DAILY_LOSS} pause always ends at the next UTC midnight)",
            )
        if resume_after is not None and on_breach != "pause":
            raise RiskSpecError("resume_after", "only used with on_breach 'pause'")
        currency = spec.get("currency", DEFAULT_CURRENCY)
        if not isinstance(currency, str) or not currency.isalnum() or not 1 <= len(currency) <= 12:
            raise RiskSpecError("currency", "must be a currency code such as 'USDT' or 'INR'")
        return cls(daily, drawdown, position, failures, on_breach, resume_after, currency.upper())

    @classmethod
    def lenient(cls, spec: Mapping[str, Any] | None) -> RiskLimits:
        """What a replica enforces: the spec was validated at deploy; should it not parse now, the
        limits that do parse still hold (never silently none of them)."""
        try:
            return cls.parse(spec)
        except RiskSpecError:
            pass
        kept: dict[str, Any] = {}
        for key, value in (spec or {}).items():
            try:
                cls.parse({key: value, "on_breach": "stop"} if key != "on_breach" else {})
            except RiskSpecError:
                continue
            kept[key] = value
        kept.pop("resume_after", None)
        kept.pop("on_breach", None)
        return cls.parse(kept)

    def position_cap(self, market: str) -> Decimal | None:
        if self.max_position is None:
            return None
        return self.max_position.get(market, self.max_position.get("*"))

    def failure_alert_at(self) -> int:
        return self.max_consecutive_failures or DEFAULT_FAILURE_ALERT


@dataclass(frozen=True, slots=True)
class EquityState:
    """What the guard remembers between measures (columns of strategy_status)."""

    day: date | None = None
    day_start_equity: Decimal | None = None
    peak: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Breach:
    limit: str  # one of LIMIT_NAMES
    value: Decimal  # what was measured
    threshold: Decimal  # the limit it crossed
    message: str


@dataclass(frozen=True, slots=True)
class Resume:
    """When a halt lifts by itself: `at_next_utc_day`, or `after_seconds`, or never (both unset)."""

    at_next_utc_day: bool = False
    after_seconds: int | None = None

    def at(self, halted_at: datetime) -> datetime | None:
        if self.at_next_utc_day:
            midnight = halted_at.replace(hour=0, minute=0, second=0, microsecond=0)
            return midnight + timedelta(days=1)
        if self.after_seconds is not None:
            return halted_at + timedelta(seconds=self.after_seconds)
        return None


def observe_equity(
    limits: RiskLimits, state: EquityState, equity: Decimal, today: date
) -> tuple[EquityState, Breach | None]:
    """Fold one equity measure into the state; the breach it reveals, if any.

    The day's baseline is the first measure of each UTC day; the peak only ever rises (until a resume
    resets the state). Both are updated before the check, so a new peak is never a drawdown.
    """
    if state.day != today or state.day_start_equity is None:
        state = replace(state, day=today, day_start_equity=equity)
    if state.peak is None or equity > state.peak:
        state = replace(state, peak=equity)
    assert state.day_start_equity is not None and state.peak is not None
    currency = limits.currency
    if limits.max_daily_loss is not None:
        loss = state.day_start_equity - equity
        if loss >= limits.max_daily_loss:
            return state, Breach(
                DAILY_LOSS,
                loss,
                limits.max_daily_loss,
                f"the loss today is {_plain(loss)} {currency} (equity {_plain(equity)} against "
                f"{_plain(state.day_start_equity)} at the start of the UTC day), at or over "
                f"risk.max_daily_loss of {_plain(limits.max_daily_loss)} {currency}",
            )
    if limits.max_drawdown_pct is not None and state.peak > 0:
        drawdown = (state.peak - equity) / state.peak * 100
        if drawdown >= limits.max_drawdown_pct:
            # The message shows the value recorded as halt_value (4 decimals): at 2, a breach of a
            # 0.0002 % limit read "is 0% below its peak".
            value = drawdown.quantize(Decimal("0.0001"))
            return state, Breach(
                DRAWDOWN,
                value,
                limits.max_drawdown_pct,
                f"equity {_plain(equity)} {currency} is {_plain(value)}% below its "
                f"peak of {_plain(state.peak)} {currency}, at or over risk.max_drawdown_pct of "
                f"{_plain(limits.max_drawdown_pct)}%",
            )
    return state, None


def check_position(
    limits: RiskLimits, market: str, coin: str, held: Decimal, side: str, quantity: Decimal
) -> Breach | None:
    """Would this order leave more of `coin` held than the market's cap? Sells only ever reduce it."""
    cap = limits.position_cap(market)
    if cap is None or side != "buy":
        return None
    after = held + quantity
    if after <= cap:
        return None
    return Breach(
        POSITION,
        after,
        cap,
        f"buying {_plain(quantity)} {coin} would hold {_plain(after)} {coin} in {market}, over "
        f"risk.max_position of {_plain(cap)}",
    )


def check_failures(limits: RiskLimits, streak: int) -> Breach | None:
    cap = limits.max_consecutive_failures
    if cap is None or streak < cap:
        return None
    return Breach(
        FAILURES,
        Decimal(streak),
        Decimal(cap),
        f"{streak} executions in a row ended other than succeeded, reaching risk.max_consecutive_failures of {cap}",
    )


def failure_alert_due(limits: RiskLimits, streak: int) -> bool:
    """The `consecutive_failures` alert fires once per streak, when it reaches the threshold."""
    return streak == limits.failure_alert_at()


def resume_rule(limits: RiskLimits, breach: Breach) -> Resume:
    if limits.on_breach == "stop":
        return Resume()
    if breach.limit == DAILY_LOSS:
        return Resume(at_next_utc_day=True)
    return Resume(after_seconds=limits.resume_after)


def _positive(spec: Mapping[str, Any], key: str) -> Decimal | None:
    value = spec.get(key)
    if value is None:
        return None
    number = _number(value)
    if number is None or number <= 0:
        raise RiskSpecError(key, "must be a positive number")
    return number


def _positions(value: Any) -> Mapping[str, Decimal] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        number = _number(value)
        if number is None or number <= 0:
            raise RiskSpecError(POSITION, 'must be a positive number or {"BTCUSDT": 0.5, ...}')
        return {"*": number}
    caps: dict[str, Decimal] = {}
    for market, cap in value.items():
        number = _number(cap)
        if not isinstance(market, str) or not market or number is None or number <= 0:
            raise RiskSpecError(POSITION, 'must map market names to positive numbers, e.g. {"BTCUSDT": 0.5}')
        caps[market] = number
    if not caps:
        raise RiskSpecError(POSITION, "must name at least one market")
    return caps


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _plain(number: Decimal) -> str:
    return f"{number.normalize():f}"
