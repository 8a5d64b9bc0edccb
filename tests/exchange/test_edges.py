"""The broker at its edges, over real PostgreSQL: the notional cap on what can actually trade, the paper
wallet after a failed first call, numbers no exchange accepts, and parameters of the wrong type.

Every refusal here must be an ExchangeError the strategy can read (never `internal`), and every order
request, refused ones included, must be in `orders`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from reconciler.crypto import CredentialCipher
from reconciler.exchange import errors
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.feed import SimulatedFeed, sim_price
from reconciler.outcome import BrokerCall, BrokerError
from reconciler.storage.exchange_store import ExchangeStore
from tests.exchange.fake_coindcx import API_SECRET, FakeCoinDCX
from tests.exchange.helpers import add_strategy
from tests.exchange.test_broker import (
    BTCUSDT,
    FAST,
    KEY,
    T0,
    Clock,
    _store_credentials,
    execute,
    order_rows,
    run,
    settings_for,
)

PRICE = Decimal(str(round(sim_price(BTCUSDT, T0), 2)))


def paper_factory(engine: AsyncEngine) -> BrokerFactory:
    return BrokerFactory(
        settings_for(), ExchangeStore(engine), CredentialCipher.from_key_string(KEY), feed=SimulatedFeed(clock=Clock())
    )


def attempt(call: BrokerCall, method: str, params: dict[str, Any]) -> Any:
    async def go() -> Any:
        try:
            return await call(method, params)
        except BrokerError as exc:
            return exc

    return go()


# --- the notional cap holds on what can actually trade -------------------------------------------------


def test_a_limit_sell_priced_far_below_the_market_is_capped_at_the_market_price(database_url: str) -> None:
    # 0.009 BTC at a tenth of the market is 50 USDT on its limit price, but it fills at the market (~500).
    quantity = Decimal("0.009")
    limit = (PRICE / 10).quantize(Decimal("0.01"))
    order = {
        "side": "sell",
        "order_type": "limit_order",
        "market": "BTCUSDT",
        "total_quantity": float(quantity),
        "price_per_unit": float(limit),
    }

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            refused = await execute(
                factory,
                engine,
                "strat-1",
                lambda c: attempt(c, "create_order", order),
                config={"max_order_notional": 100},
            )
        finally:
            await factory.aclose()
        return refused, await order_rows(engine)

    refused, rows = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.REFUSED, refused
    assert f"({quantity} x {PRICE.normalize():f})" in refused.message
    assert "over CONFIG['max_order_notional'] of 100 USDT" in refused.message
    assert [(r["status"], r["side"], r["price_per_unit"]) for r in rows] == [("refused", "sell", limit)]


def test_a_limit_buy_priced_above_the_market_is_capped_at_its_limit_price(database_url: str) -> None:
    # A buy priced above the market may fill at its limit: the larger price counts.
    order = {
        "side": "buy",
        "order_type": "limit_order",
        "market": "BTCUSDT",
        "total_quantity": 0.001,
        "price_per_unit": float((PRICE * 3).quantize(Decimal("0.01"))),
    }

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        cap = float(PRICE * Decimal("0.002"))  # above 0.001 x market, below 0.001 x 3 x market
        try:
            return await execute(
                factory,
                engine,
                "strat-1",
                lambda c: attempt(c, "create_order", order),
                config={"max_order_notional": cap},
            )
        finally:
            await factory.aclose()

    refused = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.REFUSED, refused


def test_the_live_exchange_applies_the_same_rule(database_url: str, fake: FakeCoinDCX) -> None:
    cipher = CredentialCipher.from_key_string(KEY)
    order = {
        "side": "sell",
        "order_type": "limit_order",
        "market": "BTCUSDT",
        "total_quantity": 0.01,
        "price_per_unit": 100,  # 1 USDT on the limit, hundreds at the fake's market price
    }

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "live-1", exchange="coindcx")
        await _store_credentials(engine, cipher, "live-1", API_SECRET)
        factory = BrokerFactory(settings_for(fake.url), ExchangeStore(engine), cipher, retry=FAST)
        try:
            refused = await execute(
                factory,
                engine,
                "live-1",
                lambda c: attempt(c, "create_order", order),
                exchange="coindcx",
                config={"max_order_notional": 100},
            )
        finally:
            await factory.aclose()
        return refused, await order_rows(engine, "live-1")

    refused, rows = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.REFUSED, refused
    assert [r["status"] for r in rows] == ["refused"]
    assert not [path for method, path, _, _ in fake.state.requests if path.endswith("/orders/create")]


# --- the paper wallet survives a failed first call ---------------------------------------------------------


def test_a_failed_first_call_leaves_the_starting_wallet(database_url: str) -> None:
    async def calls(call: BrokerCall) -> Any:
        missing = await attempt(call, "get_order_status", {"id": "00000000-0000-0000-0000-000000000000"})
        balances = await call("get_balances", {})
        bought = await call(
            "create_order", {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.001}
        )
        return missing, balances, bought

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(factory, engine, "strat-1", calls)
        finally:
            await factory.aclose()

    missing, balances, bought = run(database_url, body)
    assert isinstance(missing, BrokerError) and missing.kind == errors.NOT_FOUND
    assert {b["currency"]: b["balance"] for b in balances} == {"INR": 1_000_000.0, "USDT": 10_000.0}
    assert bought["status"] == "filled"


# --- numbers at the edges --------------------------------------------------------------------------------

EDGE_QUANTITIES = [
    ("1e999999", "must be below 1e+15"),
    ("1e-999999", "more than 18 decimal places"),
    ("9" * 20_000, "at most 64 characters"),
    ("0." + "0" * 19_998 + "1", "at most 64 characters"),
    ("0.010000000000000000000000000001", "more than 18 decimal places"),
    ("0.0000000000000000001", "more than 18 decimal places"),
    ("123456789012.345678901", "21 significant digits"),
    ("<an integer of 66439 bits>", "must be a number"),  # what the sandbox sends for 10**20000
    ("inf", "must be a positive number"),  # ... and for float("inf") (1e999999 as a literal)
    ("nan", "must be a positive number"),
    (0, "must be a positive number"),
    (10**30, "must be below 1e+15"),
    (2**70, "must be below 1e+15, got an integer of 71 bits"),
    ([1], "must be a number, got list"),
    (True, "must be a number, got bool"),
]


@pytest.mark.parametrize(("quantity", "reason"), EDGE_QUANTITIES, ids=[str(q)[:24] for q, _ in EDGE_QUANTITIES])
def test_numbers_no_exchange_accepts_are_refused_clearly_and_recorded(
    database_url: str, quantity: Any, reason: str
) -> None:
    order = {"side": "buy", "order_type": "limit_order", "market": "BTCUSDT", "price_per_unit": 10}

    async def calls(call: BrokerCall) -> Any:
        as_quantity = await attempt(call, "create_order", {**order, "total_quantity": quantity})
        as_price = await attempt(call, "create_order", {**order, "total_quantity": 1, "price_per_unit": quantity})
        return as_quantity, as_price, await call("get_balances", {})

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(factory, engine, "strat-1", calls), await order_rows(engine)
        finally:
            await factory.aclose()

    (as_quantity, as_price, balances), rows = run(database_url, body)
    for name, refused in (("total_quantity", as_quantity), ("price_per_unit", as_price)):
        assert isinstance(refused, BrokerError), refused
        assert refused.kind == errors.INVALID
        assert refused.message.startswith(f"create_order: {name} ") and reason in refused.message
        assert len(refused.message) < 200
    assert [r["status"] for r in rows] == ["refused", "refused"]
    assert rows[0]["total_quantity"] is None and rows[1]["price_per_unit"] is None
    assert rows[0]["error"] == as_quantity.message
    assert all(r["market"] == "BTCUSDT" and r["side"] == "buy" for r in rows)
    assert len(str(rows[0]["request"])) < 2000  # what was asked, cut to a storable size
    # Nothing was minted: the wallet is the starting one.
    assert {b["currency"]: b["balance"] for b in balances} == {"INR": 1_000_000.0, "USDT": 10_000.0}


def test_a_quantity_finer_than_the_market_allows_mints_no_dust(database_url: str) -> None:
    # 18 decimals passes the generic bounds; the market's own precision (BTC: few decimals) refuses it.
    order = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": "0.001000000000000001"}

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(factory, engine, "strat-1", lambda c: attempt(c, "create_order", order))
        finally:
            await factory.aclose()

    refused = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.REJECTED
    assert "decimals allowed for BTCUSDT" in refused.message


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"side": "long"}, "side must be 'buy' or 'sell', got 'long'"),
        ({"side": 7}, "side must be 'buy' or 'sell', got 7"),
        ({"order_type": ["market_order"]}, "order_type must be 'market_order' or 'limit_order', got a list"),
        ({"market": 12}, "market must be a market name"),
        ({"market": "M" * 5000}, "market must be a market name"),
        ({"client_order_id": "x" * 37}, "client_order_id must be a string of 1-36 characters"),
        ({"client_order_id": 5}, "client_order_id must be a string of 1-36 characters"),
    ],
)
def test_malformed_orders_are_recorded_too(database_url: str, params: dict[str, Any], reason: str) -> None:
    order = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.001} | params

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(
                factory, engine, "strat-1", lambda c: attempt(c, "create_order", order)
            ), await order_rows(engine)
        finally:
            await factory.aclose()

    refused, rows = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.INVALID
    assert refused.message == f"create_order: {reason}" or reason in refused.message
    assert [(r["status"], r["error"]) for r in rows] == [("refused", refused.message)]


def test_a_reused_client_order_id_is_refused_and_recorded(database_url: str) -> None:
    order = {
        "side": "buy",
        "order_type": "market_order",
        "market": "BTCUSDT",
        "total_quantity": 0.001,
        "client_order_id": "mine-1",
    }

    async def calls(call: BrokerCall) -> Any:
        return await call("create_order", order), await attempt(call, "create_order", order)

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(factory, engine, "strat-1", calls), await order_rows(engine)
        finally:
            await factory.aclose()

    (placed, again), rows = run(database_url, body)
    assert placed["status"] == "filled"
    assert isinstance(again, BrokerError) and "already used" in again.message
    assert [r["status"] for r in rows] == ["filled", "refused"]
    assert rows[1]["request"]["client_order_id"] == "mine-1"


# --- parameters of the wrong type and out-of-range times -----------------------------------------------

BAD_VALUES: list[Any] = [True, 1.5, -1, 0, 10**30, "x" * 5000, "", [], {}, "2024-01-01", 1e300]
READ_CALLS: dict[str, dict[str, Any]] = {
    "get_candles": {"pair": "B-BTC_USDT", "interval": "1m", "limit": 5, "start_time": None, "end_time": None},
    "get_orderbook": {"pair": "B-BTC_USDT"},
    "get_trades": {"pair": "B-BTC_USDT", "limit": 5},
    "get_order_status": {"id": None, "client_order_id": "abc"},
    "cancel_order": {"id": None, "client_order_id": "abc"},
    "cancel_all_orders": {"market": "BTCUSDT", "side": None},
    "get_active_orders": {"market": "BTCUSDT", "side": None},
    "get_trade_history": {"symbol": "BTCUSDT", "limit": 5, "from_timestamp": None, "to_timestamp": None},
}


@pytest.mark.parametrize("exchange", ["paper", "coindcx"])
def test_wrong_parameter_types_and_times_get_exchange_errors_naming_the_parameter(
    database_url: str, fake: FakeCoinDCX, exchange: str
) -> None:
    cipher = CredentialCipher.from_key_string(KEY)
    cases = [(m, name, value) for m, params in READ_CALLS.items() for name in params for value in BAD_VALUES]

    async def calls(call: BrokerCall) -> Any:
        answers = []
        for method, name, value in cases:
            params = {k: v for k, v in READ_CALLS[method].items() if v is not None} | {name: value}
            answers.append(await attempt(call, method, params))
        return answers

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "s", exchange=exchange)
        await _store_credentials(engine, cipher, "s", API_SECRET)
        factory = BrokerFactory(
            settings_for(fake.url), ExchangeStore(engine), cipher, feed=SimulatedFeed(clock=Clock()), retry=FAST
        )
        factory._limiter._max_wait = 60  # hundreds of calls in one run: this test is not about the rate
        try:
            return await execute(factory, engine, "s", calls, exchange=exchange)
        finally:
            await factory.aclose()

    answers = run(database_url, body)
    unexplained = []
    for (method, name, value), answer in zip(cases, answers, strict=True):
        if isinstance(answer, BrokerError) and answer.kind == "internal":
            unexplained.append((method, name, repr(value)[:30], answer.message))
        valid_time = name in ("start_time", "end_time", "from_timestamp", "to_timestamp") and value in (0, 1.5)
        if isinstance(answer, BrokerError) and answer.kind == errors.INVALID and not valid_time:
            assert name in answer.message, (method, name, answer.message)
    assert not unexplained
    # Every one of these values is wrong for these parameters, except a few that are fine as times, and
    # a date where a market, pair or order id goes (text: the exchange answers "not found" or nothing).
    accepted = [(m, n, v) for (m, n, v), a in zip(cases, answers, strict=True) if not isinstance(a, BrokerError)]
    assert all(
        (n in ("start_time", "end_time", "from_timestamp", "to_timestamp") and v in (0, 1.5))
        or (n in ("pair", "market", "symbol", "client_order_id") and v == "2024-01-01")
        for _, n, v in accepted
    ), accepted


def test_out_of_range_timestamps_say_why(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = paper_factory(engine)
        try:
            return await execute(
                factory,
                engine,
                "strat-1",
                lambda c: attempt(c, "get_trade_history", {"from_timestamp": 10**18}),
            )
        finally:
            await factory.aclose()

    refused = run(database_url, body)
    assert isinstance(refused, BrokerError) and refused.kind == errors.INVALID
    assert refused.message == (
        "get_trade_history: from_timestamp must be a time in epoch milliseconds from 0 to 4102444800000"
        " (2100-01-01), got 1000000000000000000"
    )
