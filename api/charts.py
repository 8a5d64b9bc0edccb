"""Small SVG charts drawn on the server: geometry only; the templates turn it into <svg> elements.

No script and no inline style, so they render under the dashboard's strict Content-Security-Policy;
colours come from CSS classes in the service's own stylesheet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

OK_STATUSES = frozenset({"succeeded"})
RUNNING = "running"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # ok, failed, running
    title: str


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    peak: float  # the longest duration shown, seconds


@dataclass(frozen=True, slots=True)
class LineChart:
    width: int
    height: int
    points: str  # "x,y x,y ..." for <polyline points=...>
    dots: list[tuple[float, float, str]]
    low: Decimal
    high: Decimal
    first: Decimal
    last: Decimal
    currency: str


def outcome_class(status: str) -> str:
    if status in OK_STATUSES:
        return "ok"
    return "running" if status == RUNNING else "failed"


def duration_bars(
    executions: Sequence[dict[str, object]], *, width: int = 240, height: int = 48, slots: int = 20
) -> BarChart:
    """One bar per execution, oldest left, height by duration, colour by outcome.

    `executions` come newest first (as the store returns them); at most `slots` are drawn.
    """
    shown = list(reversed(list(executions)[:slots]))
    durations = [float(e.get("duration") or 0.0) for e in shown]  # type: ignore[arg-type]
    peak = max(durations, default=0.0)
    step = width / slots
    bars = []
    for index, (execution, duration) in enumerate(zip(shown, durations, strict=True)):
        # A failed run with no measured time still shows, as a sliver.
        h = max(2.0, (duration / peak) * (height - 2)) if peak > 0 else 2.0
        status = str(execution.get("status"))
        bars.append(
            Bar(
                x=round(index * step + 1, 2),
                y=round(height - h, 2),
                width=round(step - 2, 2),
                height=round(h, 2),
                css=outcome_class(status),
                title=f"{status}, {duration * 1000:.1f} ms",
            )
        )
    return BarChart(width=width, height=height, bars=bars, peak=peak)


def value_line(
    points: Sequence[tuple[datetime, Decimal]], currency: str, *, width: int = 480, height: int = 120, pad: int = 6
) -> LineChart | None:
    """The wallet's value over time (oldest first); None with fewer than one point."""
    if not points:
        return None
    values = [value for _, value in points]
    low, high = min(values), max(values)
    start, end = points[0][0].timestamp(), points[-1][0].timestamp()
    span_t = end - start or 1.0
    span_v = float(high - low) or 1.0
    coords = []
    for at, value in points:
        x = pad + (at.timestamp() - start) / span_t * (width - 2 * pad) if len(points) > 1 else width / 2
        y = pad + (1 - float(value - low) / span_v) * (height - 2 * pad) if high != low else height / 2
        coords.append((round(x, 2), round(y, 2), f"{value:.2f} {currency} at {at:%H:%M:%S}"))
    return LineChart(
        width=width,
        height=height,
        points=" ".join(f"{x},{y}" for x, y, _ in coords),
        dots=coords,
        low=low,
        high=high,
        first=values[0],
        last=values[-1],
        currency=currency,
    )
