"""The paper exchange against a real PostgreSQL: fills, locks, persistence, rejections."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from reconciler.exchange import errors
from reconciler.exchange.errors import ExchangeError
from reconciler.exchange.feed import SIM_MARKETS, SimulatedFeed, sim_price
from reconciler.exchange.paper import PaperExchange
from reconciler.storage.exchange_store import ExchangeStore
from tests.exchange.helpers import add_strategy

T0 = 1_790_000_000.0
BTCUSDT = next(m for m in SIM_MARKETS if m.market == "BTCUSDT")
WALLET = {"USDT": 10_000.0, "INR": 1_000_000.0}


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(database_url: str, clock: Clock, use: Callable[[Callable[[], PaperExchange]], Awaitable[Any]]) -> Any:
    """Run `use` with a factory of fresh PaperExchange objects (as successive executions would get)."""

    async def main() -> Any:
        engine = create_async_engine(database_url)
        try:
            await add_strategy(engine)
            feed = SimulatedFeed(clock=clock)
            return await use(
                lambda: PaperExchange(ExchangeStore(engine), feed, strategy_id="strat-1", initial_balances=WALLET)
            )
        finally:
            await engine.dispose()

    return asyncio.run(main())


def balances_of(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    return {r["currency"]: (r["balance"], r["locked_balance"]) for r in rows}


def test_wallet_seeded_once_from_the_initial_balances(database_url: str) -> None:
    async def use(paper: Callable[[], PaperExchange]) -> Any:
        return await paper().get_balances(), await paper().get_balances()

    first, second = run(database_url, Clock(), use)
    assert balances_of(first) == {"INR": (1_000_000.0, 0.0), "USDT": (10_000.0, 0.0)}
    assert first == second


def test_market_buy_fills_at_the_current_price_with_fee(database_url: str) -> None:
    price = round(sim_price(BTCUSDT, T0), 2)

    async def use(paper: Callable[[], PaperExchange]) -> Any:
        order = await paper().create_order("buy", "market_order", "BTCUSDT", 0.01, client_order_id="b1")
        return order, await paper().get_balances()

    order, balances = run(database_url, Clock(), use)
    assert order["status"] == "filled" and order["avg_price"] == price and order["remaining_quantity"] == 0
    cost = Decimal("0.01") * Decimal(str(price))
    fee = cost * Decimal("0.001")
    assert order["fee_amount"] == float(fee)
    assert balances_of(balances)["USDT"] == (float(Decimal(10_000) - cost - fee), 0.0)
    assert balances_of(balances)["BTC"] == (0.01, 0.0)


def test_resting_limit_buy_locks_funds_then_fills_when_the_price_crosses(database_url: str) -> None:
    clock = Clock()
    feed = SimulatedFeed(clock=clock)
    limit = round(sim_price(BTCUSDT, T0) * 0.995, 2)
    # Find when the simulated path first touches the limit (the test's own look at the same pure function).
    steps = range(int(T0) + 600, int(T0) + 86400 * 30, 600)
    crossing = next(t for t in steps if feed_low(feed, T0, t) <= limit)

    async def use(paper: Callable[[], PaperExchange]) -> Any:
        order = await paper().create_order("buy", "limit_order", "BTCUSDT", 0.01, limit, "l1")
        resting = await paper().get_balances()
        clock.t = crossing
        status = await paper().get_order_status(id=order["id"])
        return order, resting, status, await paper().get_balances(), await paper().get_active_orders()

    order, resting, status, after, active = run(database_url, clock, use)
    lock = Decimal("0.01") * Decimal(str(limit)) * Decimal("1.001")
    assert order["status"] == "open"
    assert balances_of(resting)["USDT"] == (float(Decimal(10_000) - lock), float(lock))
    assert status["status"] == "filled" and status["avg_price"] == limit
    assert balances_of(after)["USDT"] == (float(Decimal(10_000) - lock), 0.0)
    assert balances_of(after)["BTC"] == (0.01, 0.0)
    assert active == []


def feed_low(feed: SimulatedFeed, start: float, end: float) -> float:
    return asyncio.run(feed.price_range("BTCUSDT", start, end))[0]


def test_cancel_releases_the_lock(database_url: str) -> None:
    async def use(paper: Callable[[], PaperExchange]) -> Any:
        order = await paper().create_order("sell", "limit_order", "ETHUSDT", 1, 999_999, "s-too-high")
        return order, await paper().cancel_order(id=order["id"]), await paper().get_balances()

    with pytest.raises(ExchangeError, match="Insufficient funds: needs 1 ETH, available 0"):
        run(database_url, Clock(), use)

    async def buy_then_sell(paper: Callable[[], PaperExchange]) -> Any:
        await paper().create_order("buy", "market_order", "ETHUSDT", 1, client_order_id="e1")
        order = await paper().create_order("sell", "limit_order", "ETHUSDT", 1, 999_999, "e2")
        locked = await paper().get_balances()
        result = await paper().cancel_order(client_order_id="e2")
        status = await paper().get_order_status(id=order["id"])
        return order, locked, result, await paper().get_balances(), status

    order, locked, result, after, status = run(database_url, Clock(), buy_then_sell)
    assert order["status"] == "open"
    assert balances_of(locked)["ETH"] == (0.0, 1.0)
    assert result == {"message": "success", "status": 200, "code": 200}
    assert balances_of(after)["ETH"] == (1.0, 0.0)
    assert status["status"] == "cancelled"


def test_rejections_change_nothing(database_url: str) -> None:
    async def use(paper: Callable[[], PaperExchange]) -> Any:
        await paper().create_order("buy", "market_order", "BTCUSDT", 0.001, client_order_id="dup")
        before = await paper().get_balances()
        failures = []
        for args in (
            ("buy", "market_order", "BTCUSDT", 0.001, None, "dup"),  # duplicate client_order_id
            ("buy", "market_order", "BTCUSDT", 1.0, None, "big"),  # insufficient funds
            ("buy", "market_order", "BTCUSDT", 0.0000001, None, "tiny"),  # precision
            ("buy", "market_order", "NOPEUSDT", 1, None, "nope"),  # unknown market
            ("buy", "limit_order", "BTCUSDT", 0.001, None, "noprice"),  # limit without price
        ):
            try:
                await paper().create_order(*args)
            except ExchangeError as exc:
                failures.append((exc.kind, exc.message))
        return before, failures, await paper().get_balances()

    before, failures, after = run(database_url, Clock(), use)
    assert before == after
    assert [kind for kind, _ in failures] == [errors.REJECTED] * 5
    messages = [message for _, message in failures]
    assert "Duplicate client order id 'dup'" in messages[0]
    assert messages[1].startswith("Insufficient funds: needs")
    assert "more than 5 decimals" in messages[2]
    assert "unknown market 'NOPEUSDT'" in messages[3]
    assert "price_per_unit must be a number" in messages[4]


def test_unknown_order_is_not_found(database_url: str) -> None:
    async def use(paper: Callable[[], PaperExchange]) -> Any:
        return await paper().get_order_status(id="00000000-0000-0000-0000-000000000000")

    with pytest.raises(ExchangeError) as info:
        run(database_url, Clock(), use)
    assert info.value.kind == errors.NOT_FOUND
