"""Where the paper exchange gets its prices: a deterministic simulated market, or CoinDCX's public data.

The simulated market needs no network, so a fresh install trades out of the box. Each market's price
is a pure function of (market, time): the sum of a few octaves of seeded "value noise" (a hash per
knot, interpolated linearly), from ten-second wiggles to week-long swings, with amplitudes growing
like the square root of the period as a random walk's do. Being a pure function, every replica and
every restart sees the same price path, and the ticker, candles, order book and trades are all
derived from that one path, so they agree with each other and with the fills.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from reconciler.exchange import errors
from reconciler.exchange.coindcx import CoinDCXClient
from reconciler.exchange.errors import ExchangeError

INTERVALS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "8h": 28800,
    "1d": 86400,
    "3d": 259200,
    "1w": 604800,
    "1M": 2592000,
}
CANDLE_LIMIT_DEFAULT = 500
CANDLE_LIMIT_MAX = 1000
TRADES_LIMIT_DEFAULT = 30
TRADES_LIMIT_MAX = 500


class PriceFeed(Protocol):
    """The market data the paper exchange serves and fills against, in CoinDCX's response shapes."""

    async def markets_details(self) -> list[dict[str, Any]]: ...
    async def ticker(self) -> list[dict[str, Any]]: ...
    async def price(self, market: str) -> float: ...
    # (low, high) of the price over [start, end] (epoch seconds): limit orders fill when it crosses.
    async def price_range(self, market: str, start: float, end: float) -> tuple[float, float]: ...
    async def candles(
        self, pair: str, interval: str, limit: int | None, start_time: int | None, end_time: int | None
    ) -> list[dict[str, Any]]: ...
    async def orderbook(self, pair: str) -> dict[str, Any]: ...
    async def trades(self, pair: str, limit: int | None) -> list[dict[str, Any]]: ...
    def now(self) -> float: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SimMarket:
    target: str  # the coin bought and sold
    base: str  # the quote coin prices are in
    ecode: str
    start_price: float
    daily_volatility: float  # typical relative move over a day
    price_precision: int
    quantity_precision: int
    min_notional: float

    @property
    def market(self) -> str:
        return self.target + self.base

    @property
    def pair(self) -> str:
        return f"{self.ecode}-{self.target}_{self.base}"


SIM_MARKETS: tuple[SimMarket, ...] = (
    SimMarket("BTC", "USDT", "B", 60_000.0, 0.03, 2, 5, 1.0),
    SimMarket("ETH", "USDT", "B", 3_000.0, 0.04, 2, 4, 1.0),
    SimMarket("SOL", "USDT", "B", 150.0, 0.06, 3, 2, 1.0),
    SimMarket("XRP", "USDT", "B", 0.6, 0.05, 4, 1, 1.0),
    SimMarket("DOGE", "USDT", "B", 0.15, 0.07, 5, 0, 1.0),
    SimMarket("BTC", "INR", "I", 5_000_000.0, 0.03, 0, 5, 100.0),
    SimMarket("ETH", "INR", "I", 250_000.0, 0.04, 0, 4, 100.0),
    SimMarket("USDT", "INR", "I", 85.0, 0.004, 2, 2, 100.0),
)

# (period in seconds, weight): the noise octaves summed into the log-price.
_OCTAVES: tuple[tuple[int, float], ...] = (
    (10, 1.0),
    (60, 1.0),
    (600, 1.0),
    (3600, 1.0),
    (21600, 1.0),
    (86400, 1.0),
    (604800, 0.8),
)
_SPREAD = 0.0004  # relative bid-ask spread of the simulated book


@lru_cache(maxsize=65536)
def _knot(seed: str, octave: int, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{octave}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0  # uniform in [-1, 1)


def _unit(seed: str, salt: str, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{salt}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)


def sim_price(spec: SimMarket, t: float) -> float:
    """The simulated price of a market at epoch second t: a pure function."""
    log_move = 0.0
    market = spec.market  # a property: read once, not twice per octave (every paper execution's closing value)
    for period, weight in _OCTAVES:
        position = t / period
        index = math.floor(position)
        fraction = position - index
        a = _knot(market, period, index)
        b = _knot(market, period, index + 1)
        # Smoothstep between knots: continuous, without the kinks linear interpolation shows in candles.
        fraction = fraction * fraction * (3 - 2 * fraction)
        amplitude = spec.daily_volatility * math.sqrt(period / 86400) * weight
        log_move += amplitude * (a + (b - a) * fraction)
    return spec.start_price * math.exp(log_move)


def _sample_range(spec: SimMarket, start: float, end: float, max_samples: int = 24) -> tuple[float, float]:
    # Every 10 s (the shortest octave) when that is affordable, else max_samples evenly, plus both ends.
    if end <= start:
        price = sim_price(spec, end)
        return price, price
    steps = max(2, min(max_samples, math.ceil((end - start) / 10)))
    prices = [sim_price(spec, start + (end - start) * i / steps) for i in range(steps + 1)]
    return min(prices), max(prices)


def _round(value: float, digits: int) -> float:
    return round(value, digits)


class SimulatedFeed:
    """Deterministic offline market data; `clock` (epoch seconds) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time, markets: tuple[SimMarket, ...] = SIM_MARKETS) -> None:
        self._clock = clock
        self._by_market = {m.market: m for m in markets}
        self._by_pair = {m.pair: m for m in markets}
        self._details: list[dict[str, Any]] | None = None

    def now(self) -> float:
        return self._clock()

    def spec(self, market: str) -> SimMarket:
        spec = self._by_market.get(market)
        if spec is None:
            raise ExchangeError(errors.NOT_FOUND, f"unknown market {market!r} (see get_markets_details())")
        return spec

    def _pair(self, pair: str) -> SimMarket:
        spec = self._by_pair.get(pair)
        if spec is None:
            hint = f"; did you mean pair {self._by_market[pair].pair!r}?" if pair in self._by_market else ""
            raise ExchangeError(errors.REJECTED, f"unknown pair {pair!r}{hint} (see get_markets_details())")
        return spec

    async def markets_details(self) -> list[dict[str, Any]]:
        # Built once: the simulated markets never change, and every paper execution's closing
        # measure asks for them. One list for every caller, as the CoinDCX feed hands out its cache:
        # read-only (the broker only serialises it into a strategy's answer).
        if self._details is None:
            self._details = [_details(spec) for spec in self._by_market.values()]
        return self._details

    async def price(self, market: str) -> float:
        spec = self.spec(market)
        return _round(sim_price(spec, self.now()), spec.price_precision)

    async def price_range(self, market: str, start: float, end: float) -> tuple[float, float]:
        # Fine-grained: whether a limit order's price was touched decides whether it filled.
        return _sample_range(self.spec(market), start, end, max_samples=2000)

    async def ticker(self) -> list[dict[str, Any]]:
        now = self.now()
        rows = []
        for spec in self._by_market.values():
            last = sim_price(spec, now)
            day_ago = sim_price(spec, now - 86400)
            low, high = _sample_range(spec, now - 86400, now, max_samples=48)
            digits = spec.price_precision
            rows.append(
                {
                    "market": spec.market,
                    "change_24_hour": f"{(last / day_ago - 1) * 100:.3f}",
                    "high": f"{high:.{digits}f}",
                    "low": f"{low:.{digits}f}",
                    "volume": f"{_volume(spec, int(now // 3600)) * 24:.3f}",
                    "last_price": f"{last:.{digits}f}",
                    "bid": f"{last * (1 - _SPREAD / 2):.{digits}f}",
                    "ask": f"{last * (1 + _SPREAD / 2):.{digits}f}",
                    "timestamp": int(now),
                }
            )
        return rows

    async def candles(
        self, pair: str, interval: str, limit: int | None, start_time: int | None, end_time: int | None
    ) -> list[dict[str, Any]]:
        spec = self._pair(pair)
        seconds = INTERVALS.get(interval)
        if seconds is None:
            raise ExchangeError(errors.REJECTED, f"unknown interval {interval!r}; one of {', '.join(INTERVALS)}")
        limit = _bounded(limit, CANDLE_LIMIT_DEFAULT, CANDLE_LIMIT_MAX, "limit")
        now = self.now()
        last_open = math.floor(min(now, end_time / 1000 if end_time else now) / seconds) * seconds
        earliest = start_time / 1000 if start_time else -math.inf
        rows: list[dict[str, Any]] = []
        open_at = last_open
        while len(rows) < limit and open_at >= earliest:
            close_at = min(open_at + seconds, now)  # the newest candle is still forming
            low, high = _sample_range(spec, open_at, close_at)
            digits = spec.price_precision
            rows.append(
                {
                    "open": _round(sim_price(spec, open_at), digits),
                    "high": _round(high, digits),
                    "low": _round(low, digits),
                    "volume": round(_volume(spec, int(open_at // 60)) * seconds / 60, 4),
                    "close": _round(sim_price(spec, close_at), digits),
                    "time": int(open_at * 1000),
                }
            )
            open_at -= seconds
        return rows  # newest first, as CoinDCX answers

    async def orderbook(self, pair: str) -> dict[str, Any]:
        spec = self._pair(pair)
        now = self.now()
        mid = sim_price(spec, now)
        second = int(now)
        digits = spec.price_precision
        bids: dict[str, str] = {}
        asks: dict[str, str] = {}
        for level in range(20):
            offset = _SPREAD / 2 + level * _SPREAD / 4
            for book, price, side in ((bids, mid * (1 - offset), "b"), (asks, mid * (1 + offset), "a")):
                quantity = _round(_unit(spec.market, f"book{side}{level}", second) * 2 + 0.01, 4)
                book[f"{price:.{digits}f}"] = f"{quantity}"
        return {"bids": bids, "asks": asks, "timestamp": int(now * 1000)}

    async def trades(self, pair: str, limit: int | None) -> list[dict[str, Any]]:
        spec = self._pair(pair)
        limit = _bounded(limit, TRADES_LIMIT_DEFAULT, TRADES_LIMIT_MAX, "limit")
        # One synthetic trade every 7 seconds of the simulated path, newest first.
        newest = int(self.now() // 7)
        return [
            {
                "p": _round(sim_price(spec, k * 7), spec.price_precision),
                "q": _round(_unit(spec.market, "trade", k) + 0.001, 4),
                "s": spec.market,
                "T": k * 7000,
                "m": _unit(spec.market, "maker", k) < 0.5,
            }
            for k in range(newest, newest - limit, -1)
        ]

    async def aclose(self) -> None:
        return None


def _volume(spec: SimMarket, bucket: int) -> float:
    # Volume in target coin worth roughly 10k-50k of the quote per minute, deterministic per bucket.
    return (1 + 4 * _unit(spec.market, "volume", bucket)) * 10_000 / spec.start_price


def _bounded(value: int | None, default: int, maximum: int, name: str) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ExchangeError(errors.REJECTED, f"{name} must be an integer from 1 to {maximum}")
    return value


def _details(spec: SimMarket) -> dict[str, Any]:
    return {
        "coindcx_name": spec.market,
        "symbol": spec.market,
        "pair": spec.pair,
        "ecode": spec.ecode,
        "base_currency_short_name": spec.base,
        "target_currency_short_name": spec.target,
        "base_currency_name": spec.base,
        "target_currency_name": spec.target,
        "min_quantity": 10.0**-spec.quantity_precision,
        "max_quantity": 1e9,
        "min_price": 10.0**-spec.price_precision,
        "max_price": spec.start_price * 100,
        "min_notional": spec.min_notional,
        "base_currency_precision": spec.price_precision,
        "target_currency_precision": spec.quantity_precision,
        "step": 10.0**-spec.quantity_precision,
        "order_types": ["market_order", "limit_order"],
        "status": "active",
        "max_leverage": None,
        "max_leverage_short": None,
    }


class CoinDCXFeed:
    """Real CoinDCX public data for paper trading (needs network). Fills use the last traded price."""

    def __init__(self, client: CoinDCXClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock
        self._details: tuple[float, list[dict[str, Any]]] | None = None
        self._ticker: tuple[float, list[dict[str, Any]]] | None = None

    def now(self) -> float:
        return self._clock()

    async def markets_details(self) -> list[dict[str, Any]]:
        # Market specs change rarely; one fetch every 5 minutes is plenty.
        if self._details is None or self.now() - self._details[0] > 300:
            self._details = (self.now(), await self._client.get_markets_details())
        return self._details[1]

    async def ticker(self) -> list[dict[str, Any]]:
        if self._ticker is None or self.now() - self._ticker[0] > 1:
            self._ticker = (self.now(), await self._client.get_ticker())
        return self._ticker[1]

    async def price(self, market: str) -> float:
        for row in await self.ticker():
            if row.get("market") == market:
                return float(row["last_price"])
        raise ExchangeError(errors.NOT_FOUND, f"unknown market {market!r} (see get_markets_details())")

    async def price_range(self, market: str, start: float, end: float) -> tuple[float, float]:
        # Only the current price is known cheaply; limit orders fill if it has crossed by now.
        price = await self.price(market)
        return price, price

    async def candles(
        self, pair: str, interval: str, limit: int | None, start_time: int | None, end_time: int | None
    ) -> list[dict[str, Any]]:
        return await self._client.get_candles(pair, interval, limit, start_time, end_time)

    async def orderbook(self, pair: str) -> dict[str, Any]:
        return await self._client.get_orderbook(pair)

    async def trades(self, pair: str, limit: int | None) -> list[dict[str, Any]]:
        return await self._client.get_trades(pair, limit)

    async def aclose(self) -> None:
        await self._client.aclose()
