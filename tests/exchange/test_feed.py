"""The price feeds: the simulated market is deterministic and self-consistent; the CoinDCX feed
serves the exchange's public data."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from reconciler.exchange import errors
from reconciler.exchange.coindcx import CoinDCXClient
from reconciler.exchange.errors import ExchangeError
from reconciler.exchange.feed import SIM_MARKETS, CoinDCXFeed, SimulatedFeed, sim_price
from tests.exchange.fake_coindcx import FakeCoinDCX

T0 = 1_790_000_000.0


def feed_at(t: float) -> SimulatedFeed:
    return SimulatedFeed(clock=lambda: t)


def test_price_is_a_pure_function_of_market_and_time() -> None:
    btc, eth = SIM_MARKETS[0], SIM_MARKETS[1]
    assert sim_price(btc, T0) == sim_price(btc, T0)
    assert sim_price(btc, T0) != sim_price(btc, T0 + 60)
    assert sim_price(btc, T0) / btc.start_price != pytest.approx(sim_price(eth, T0) / eth.start_price)
    first = asyncio.run(feed_at(T0).price("BTCUSDT"))
    assert first == asyncio.run(feed_at(T0).price("BTCUSDT")) == round(sim_price(btc, T0), 2)


def test_price_moves_like_a_market_but_stays_in_range() -> None:
    btc = SIM_MARKETS[0]
    prices = [sim_price(btc, T0 + k * 3600) for k in range(24 * 60)]  # two months, hourly
    moves = [abs(b / a - 1) for a, b in itertools.pairwise(prices)]
    assert 0.001 < sum(moves) / len(moves) < 0.05  # hourly moves of a fraction of a percent
    assert min(prices) / btc.start_price > 0.5 and max(prices) / btc.start_price < 2


def test_candles_are_consistent_with_each_other_and_the_ticker() -> None:
    feed = feed_at(T0)

    async def main() -> Any:
        return await feed.candles("B-BTC_USDT", "15m", 50, None, None), await feed.ticker()

    candles, ticker = asyncio.run(main())
    assert len(candles) == 50
    times = [c["time"] for c in candles]
    assert times == sorted(times, reverse=True) and times[0] <= T0 * 1000 < times[0] + 900_000
    for newer, older in itertools.pairwise(candles):
        assert newer["time"] - older["time"] == 900_000
        assert older["close"] == newer["open"]  # one continuous price path
    for c in candles:
        assert c["low"] <= min(c["open"], c["close"]) <= max(c["open"], c["close"]) <= c["high"]
    btc = next(t for t in ticker if t["market"] == "BTCUSDT")
    assert float(btc["last_price"]) == candles[0]["close"]
    assert float(btc["bid"]) < float(btc["last_price"]) < float(btc["ask"])


def test_candle_window_and_limits() -> None:
    feed = feed_at(T0)
    end = int(T0 // 60) * 60_000 - 3_600_000  # on a minute boundary
    start = end - 10 * 60_000
    candles = asyncio.run(feed.candles("B-BTC_USDT", "1m", None, start, end))
    assert all(start <= c["time"] <= end for c in candles) and len(candles) == 11
    with pytest.raises(ExchangeError, match="limit must be an integer from 1 to 1000"):
        asyncio.run(feed.candles("B-BTC_USDT", "1m", 5000, None, None))
    with pytest.raises(ExchangeError, match="unknown interval '7m'"):
        asyncio.run(feed.candles("B-BTC_USDT", "7m", 5, None, None))
    with pytest.raises(ExchangeError, match="did you mean pair 'B-BTC_USDT'") as info:
        asyncio.run(feed.candles("BTCUSDT", "1m", 5, None, None))
    assert info.value.kind == errors.REJECTED


def test_orderbook_and_trades_shapes() -> None:
    feed = feed_at(T0)
    book = asyncio.run(feed.orderbook("B-ETH_USDT"))
    trades = asyncio.run(feed.trades("B-ETH_USDT", 5))
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert max(map(float, book["bids"])) < min(map(float, book["asks"]))
    assert len(trades) == 5 and set(trades[0]) == {"p", "q", "s", "T", "m"}
    assert trades[0]["s"] == "ETHUSDT" and trades[0]["T"] > trades[1]["T"]


def test_markets_details_name_both_forms() -> None:
    details = asyncio.run(feed_at(T0).markets_details())
    btc_inr = next(d for d in details if d["coindcx_name"] == "BTCINR")
    assert btc_inr["pair"] == "I-BTC_INR"
    assert (btc_inr["target_currency_short_name"], btc_inr["base_currency_short_name"]) == ("BTC", "INR")


def test_price_range_sees_the_extremes_between_two_times() -> None:
    btc = SIM_MARKETS[0]
    low, high = asyncio.run(feed_at(T0).price_range("BTCUSDT", T0, T0 + 3600))
    samples = [sim_price(btc, T0 + s) for s in range(0, 3601, 10)]
    assert low == pytest.approx(min(samples)) and high == pytest.approx(max(samples))


def test_coindcx_feed_serves_public_data(fake: FakeCoinDCX) -> None:
    async def main() -> Any:
        feed = CoinDCXFeed(CoinDCXClient(api_url=fake.url, public_url=fake.url))
        try:
            return (
                await feed.price("BTCUSDT"),
                await feed.price_range("BTCUSDT", 0, 1),
                await feed.candles("B-BTC_USDT", "1m", 2, None, None),
                await feed.markets_details(),
                await feed.markets_details(),  # cached: one request
            )
        finally:
            await feed.aclose()

    price, price_range, candles, details, _ = asyncio.run(main())
    assert price == 60000.0 and price_range == (60000.0, 60000.0)
    assert len(candles) == 2 and details[0]["coindcx_name"] == "BTCUSDT"
    assert fake.state.calls("/exchange/v1/markets_details") == 1
