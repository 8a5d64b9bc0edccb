"""The broker over real PostgreSQL: paper trading across executions, limits, the orders record,
live calls through the fake CoinDCX with sealed credentials,."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.crypto import CredentialCipher, Credentials, generate_key
from reconciler.exchange import errors
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.coindcx import RetryPolicy
from reconciler.exchange.feed import SIM_MARKETS, SimulatedFeed, sim_price
from reconciler.outcome import BrokerCall, BrokerError
from reconciler.settings import Settings
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.tables import orders, strategy_credentials
from tests.exchange.fake_coindcx import API_KEY, API_SECRET, FakeCoinDCX
from tests.exchange.helpers import add_execution, add_strategy

T0 = 1_790_000_000.0
KEY = generate_key("k1")
BTCUSDT = next(m for m in SIM_MARKETS if m.market == "BTCUSDT")
FAST = RetryPolicy(attempts=3, budget_seconds=5, initial_wait=0.01, max_wait=0.02)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def settings_for(fake_url: str = "http://127.0.0.1:9") -> Settings:
    return Settings(coindcx_api_url=fake_url, coindcx_public_url=fake_url, exchange_timeout_seconds=2)


def run(database_url: str, body: Callable[[AsyncEngine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        engine = create_async_engine(database_url)
        try:
            return await body(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def execute(
    factory: BrokerFactory,
    engine: AsyncEngine,
    strategy_id: str,
    calls: Callable[[BrokerCall], Awaitable[Any]],
    *,
    exchange: str = "paper",
    config: dict[str, Any] | None = None,
) -> Any:
    """One "execution": an executions row, a broker session around it, the strategy's calls."""
    execution_id = await add_execution(engine, strategy_id)
    async with factory.session(
        strategy_id=strategy_id, execution_id=execution_id, exchange=exchange, config=config or {}
    ) as call:
        return await calls(call)


async def order_rows(engine: AsyncEngine, strategy_id: str = "strat-1") -> list[Any]:
    async with engine.connect() as conn:
        query = select(orders).where(orders.c.strategy_id == strategy_id).order_by(orders.c.created_at)
        return list((await conn.execute(query)).mappings().all())


def test_paper_strategy_over_several_executions_and_a_restart(database_url: str) -> None:
    clock = Clock()
    price0 = round(sim_price(BTCUSDT, T0), 2)
    sell_at = round(price0 * 1.003, 2)

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        cipher = CredentialCipher.from_key_string(KEY)

        def new_factory() -> BrokerFactory:
            return BrokerFactory(settings_for(), ExchangeStore(engine), cipher, feed=SimulatedFeed(clock=clock))

        factory = new_factory()

        async def first(call: BrokerCall) -> Any:
            bought = await call(
                "create_order",
                {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.01},
            )
            resting = await call(
                "create_order",
                {
                    "side": "sell",
                    "order_type": "limit_order",
                    "market": "BTCUSDT",
                    "total_quantity": 0.01,
                    "price_per_unit": sell_at,
                    "client_order_id": "take-profit",
                },
            )
            return bought, resting, await call("get_balances", {})

        bought, resting, balances1 = await execute(factory, engine, "strat-1", first)
        await factory.aclose()

        # A replica restart: a new factory, a later time at which the price has crossed sell_at.
        steps = range(int(T0) + 600, int(T0) + 86400 * 30, 600)
        feed = SimulatedFeed(clock=clock)
        for t in steps:
            if (await feed.price_range("BTCUSDT", T0, t))[1] >= sell_at:
                clock.t = t
                break
        factory = new_factory()

        async def second(call: BrokerCall) -> Any:
            status = await call("get_order_status", {"client_order_id": "take-profit"})
            return status, await call("get_balances", {}), await call("get_active_orders", {"market": None})

        status, balances2, active = await execute(factory, engine, "strat-1", second)
        await factory.aclose()
        return bought, resting, balances1, status, balances2, active, await order_rows(engine)

    bought, resting, balances1, status, balances2, active, rows = run(database_url, body)
    wallet1 = {b["currency"]: b for b in balances1}
    wallet2 = {b["currency"]: b for b in balances2}
    cost = 0.01 * price0 * 1.001
    assert bought["status"] == "filled" and bought["avg_price"] == price0
    assert resting["status"] == "open"
    assert wallet1["USDT"]["balance"] == pytest.approx(10_000 - cost)
    assert wallet1["BTC"] == {"currency": "BTC", "balance": 0.0, "locked_balance": 0.01}
    assert status["status"] == "filled" and status["avg_price"] == sell_at
    assert wallet2["BTC"] == {"currency": "BTC", "balance": 0.0, "locked_balance": 0.0}
    assert wallet2["USDT"]["balance"] == pytest.approx(10_000 - cost + 0.01 * sell_at * 0.999)
    assert active == []
    # Both orders are on record, each with the execution that placed it, and the fill was mirrored.
    assert [(r["side"], r["status"]) for r in rows] == [("buy", "filled"), ("sell", "filled")]
    assert rows[0]["execution_id"] == rows[1]["execution_id"] is not None
    assert rows[1]["client_order_id"] == "take-profit" and rows[1]["exchange_order_id"] == resting["id"]
    assert rows[0]["client_order_id"].startswith("se-")


def test_limits_refuse_with_clear_errors_and_are_recorded(database_url: str) -> None:
    clock = Clock()
    price = round(sim_price(BTCUSDT, T0), 2)
    config = {"allowed_markets": ["BTCUSDT"], "max_order_notional": 100, "max_orders_per_execution": 2}
    small = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.001}

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = BrokerFactory(
            settings_for(),
            ExchangeStore(engine),
            CredentialCipher.from_key_string(KEY),
            feed=SimulatedFeed(clock=clock),
        )
        failures: list[BrokerError] = []

        async def calls(call: BrokerCall) -> None:
            for params in (
                {**small, "total_quantity": 0.01},  # ~600 USDT > 100
                {**small, "market": "ETHUSDT"},  # not allowed
                small,
                small,
                small,  # the third order of this run
            ):
                try:
                    await call("create_order", params)
                except BrokerError as exc:
                    failures.append(exc)

        await execute(factory, engine, "strat-1", calls, config=config)
        # The count is per execution: the next run may place orders again.
        again = await execute(factory, engine, "strat-1", lambda call: call("create_order", small), config=config)
        await factory.aclose()
        return failures, again, await order_rows(engine)

    failures, again, rows = run(database_url, body)
    assert [f.kind for f in failures] == [errors.REFUSED] * 3
    value = Decimal("0.01") * Decimal(str(price))
    assert failures[0].message == (
        f"create_order: order value {value.normalize():f} USDT (0.01 x {price}) is over"
        " CONFIG['max_order_notional'] of 100 USDT"
    )
    assert "market 'ETHUSDT' is not in CONFIG['allowed_markets'] (BTCUSDT)" in failures[1].message
    assert "already placed 2 order(s)" in failures[2].message
    assert again["status"] == "filled"
    assert [r["status"] for r in rows] == ["refused", "refused", "filled", "filled", "refused", "filled"]
    assert rows[0]["error"] == failures[0].message.removeprefix("create_order: ")
    assert rows[0]["request"]["total_quantity"] == 0.01


def test_default_notional_cap_applies_without_config(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = BrokerFactory(
            settings_for(),
            ExchangeStore(engine),
            CredentialCipher.from_key_string(KEY),
            feed=SimulatedFeed(clock=Clock()),
        )
        params = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.1}
        try:
            await execute(factory, engine, "strat-1", lambda call: call("create_order", params))
        finally:
            await factory.aclose()

    with pytest.raises(BrokerError, match=r"over CONFIG\['max_order_notional'\] of 1000 USDT"):
        run(database_url, body)


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("withdraw", {}, "CoinDCXClient has no method 'withdraw'"),
        ("get_candles", {"pair": "B-BTC_USDT"}, "get_candles() is missing required argument(s) interval"),
        ("get_ticker", {"foo": 1}, "get_ticker() got unexpected argument(s) foo; it takes none"),
        (
            "create_order",
            {"side": "long", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 1},
            "create_order: side must be 'buy' or 'sell', got 'long'",
        ),
        (
            "create_order",
            {"side": "buy", "order_type": "limit_order", "market": "BTCUSDT", "total_quantity": 1},
            "create_order: a limit_order needs price_per_unit",
        ),
        (
            "create_order",
            {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": "lots"},
            "create_order: total_quantity must be a number, got 'lots'",
        ),
    ],
)
def test_malformed_calls_are_invalid_requests(
    database_url: str, method: str, params: dict[str, Any], message: str
) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = BrokerFactory(
            settings_for(),
            ExchangeStore(engine),
            CredentialCipher.from_key_string(KEY),
            feed=SimulatedFeed(clock=Clock()),
        )
        try:
            await execute(factory, engine, "strat-1", lambda call: call(method, params))
        finally:
            await factory.aclose()

    with pytest.raises(BrokerError) as info:
        run(database_url, body)
    assert info.value.kind == errors.INVALID
    assert info.value.message == message


def test_paper_market_data_and_a_bad_config(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine)
        factory = BrokerFactory(
            settings_for(),
            ExchangeStore(engine),
            CredentialCipher.from_key_string(KEY),
            feed=SimulatedFeed(clock=Clock()),
        )

        async def calls(call: BrokerCall) -> Any:
            return (
                await call("get_ticker", {}),
                await call("get_markets_details", {}),
                await call("get_candles", {"pair": "B-BTC_USDT", "interval": "5m", "limit": 3}),
                await call("get_orderbook", {"pair": "B-BTC_USDT"}),
            )

        data = await execute(factory, engine, "strat-1", calls)
        with pytest.raises(BrokerError, match="max_orders_per_execution"):
            await execute(
                factory,
                engine,
                "strat-1",
                lambda c: c("get_ticker", {}),
                config={"max_orders_per_execution": "x"},
            )
        await factory.aclose()
        return data

    ticker, details, candles, book = run(database_url, body)
    btc = next(t for t in ticker if t["market"] == "BTCUSDT")
    assert float(btc["last_price"]) == round(sim_price(BTCUSDT, T0), 2)
    assert any(d["pair"] == "B-BTC_USDT" and d["coindcx_name"] == "BTCUSDT" for d in details)
    assert len(candles) == 3 and candles[0]["time"] > candles[1]["time"]  # newest first
    assert candles[0]["close"] == float(btc["last_price"])  # one price path for ticker and candles
    assert min(map(float, book["asks"])) > max(map(float, book["bids"]))


async def _store_credentials(engine: AsyncEngine, cipher: CredentialCipher, strategy_id: str, secret: str) -> None:
    sealed = cipher.encrypt(Credentials(API_KEY, secret), strategy_id=strategy_id)
    async with engine.begin() as conn:
        await conn.execute(
            insert(strategy_credentials).values(
                strategy_id=strategy_id, key_id=sealed.key_id, credentials=sealed.ciphertext
            )
        )


def test_live_session_signs_with_the_strategy_credentials_and_records_orders(
    database_url: str, fake: FakeCoinDCX
) -> None:
    cipher = CredentialCipher.from_key_string(KEY)

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "live-1", exchange="coindcx")
        await _store_credentials(engine, cipher, "live-1", API_SECRET)
        factory = BrokerFactory(settings_for(fake.url), ExchangeStore(engine), cipher, retry=FAST)
        rejected: list[BrokerError] = []

        async def calls(call: BrokerCall) -> Any:
            balances = await call("get_balances", {})
            order = await call(
                "create_order",
                {
                    "side": "buy",
                    "order_type": "limit_order",
                    "market": "BTCUSDT",
                    "total_quantity": 0.001,
                    "price_per_unit": 50000,
                },
            )
            try:
                await call(
                    "create_order",
                    {
                        "side": "buy",
                        "order_type": "limit_order",
                        "market": "BTCUSDT",
                        "total_quantity": 0.03,
                        "price_per_unit": 50000,
                    },
                )
            except BrokerError as exc:
                rejected.append(exc)
            await call("cancel_order", {"id": order["id"]})
            status = await call("get_order_status", {"id": order["id"]})
            return balances, order, status

        result = await execute(
            factory, engine, "live-1", calls, exchange="coindcx", config={"max_order_notional": 5000}
        )
        await factory.aclose()
        return result, rejected, await order_rows(engine, "live-1")

    (balances, order, status), rejected, rows = run(database_url, body)
    assert balances[0]["currency"] == "USDT"
    assert order["status"] == "open" and status["status"] == "cancelled"
    assert [e.kind for e in rejected] == [errors.REJECTED]
    assert "Insufficient funds (HTTP 400)" in rejected[0].message
    assert [(r["status"], r["exchange_order_id"]) for r in rows] == [
        ("cancelled", order["id"]),
        ("error", None),
    ]
    assert rows[1]["error"] == rejected[0].message
    # The fake verified every signature; the secret is nowhere in what was recorded.
    assert API_SECRET not in repr([dict(r) for r in rows])
    assert all(h.get("x-auth-apikey") == API_KEY for m, _, _, h in fake.state.requests if m == "POST")


def test_live_session_without_usable_credentials(database_url: str, fake: FakeCoinDCX) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "nokey", exchange="coindcx")
        await add_strategy(engine, "wrongkey", exchange="coindcx")
        await _store_credentials(engine, CredentialCipher.from_key_string(generate_key("old")), "wrongkey", "x" * 20)
        factory = BrokerFactory(
            settings_for(fake.url), ExchangeStore(engine), CredentialCipher.from_key_string(KEY), retry=FAST
        )
        outcomes = {}
        for strategy_id in ("nokey", "wrongkey"):

            async def calls(call: BrokerCall) -> Any:
                ticker = await call("get_ticker", {})  # public data still works
                try:
                    await call("get_balances", {})
                except BrokerError as exc:
                    return ticker, exc
                return ticker, None

            outcomes[strategy_id] = await execute(factory, engine, strategy_id, calls, exchange="coindcx")
        await factory.aclose()
        return outcomes

    outcomes = run(database_url, body)
    for ticker, error in outcomes.values():
        assert ticker[0]["market"] == "BTCUSDT"
        assert error is not None and error.kind == errors.CREDENTIALS
    assert "has no CoinDCX API key" in outcomes["nokey"][1].message
    assert "cannot be decrypted" in outcomes["wrongkey"][1].message
    assert fake.state.calls("/exchange/v1/users/balances") == 0


def test_paper_orders_are_recorded_and_the_wallet_persisted(database_url: str, pg_conn: psycopg.Connection) -> None:
    clock = Clock()

    async def body(engine: AsyncEngine) -> None:
        await add_strategy(engine)
        factory = BrokerFactory(
            settings_for(),
            ExchangeStore(engine),
            CredentialCipher.from_key_string(KEY),
            feed=SimulatedFeed(clock=clock),
        )

        async def calls(call: BrokerCall) -> None:
            for n in range(3):
                await call(
                    "create_order",
                    {
                        "side": "buy",
                        "order_type": "market_order",
                        "market": "BTCUSDT",
                        "total_quantity": 0.001,
                        "client_order_id": f"o{n}",
                    },
                )

        await execute(factory, engine, "strat-1", calls)
        await factory.aclose()

    run(database_url, body)
    recorded = pg_conn.execute(
        "SELECT client_order_id, status FROM orders WHERE strategy_id = 'strat-1' ORDER BY created_at DESC"
    ).fetchall()
    assert recorded == [("o2", "filled"), ("o1", "filled"), ("o0", "filled")]
    wallet = dict(pg_conn.execute("SELECT currency, balance FROM paper_balances WHERE strategy_id = 'strat-1'"))
    assert set(wallet) == {"BTC", "USDT", "INR"}
    assert float(wallet["BTC"]) == pytest.approx(0.003)


def test_live_create_that_times_out_is_placed_and_recorded_once(database_url: str, fake: FakeCoinDCX) -> None:
    cipher = CredentialCipher.from_key_string(KEY)
    fake.state.fail("/exchange/v1/orders/create", "place_then_slow")
    settings = Settings(coindcx_api_url=fake.url, coindcx_public_url=fake.url, exchange_timeout_seconds=0.3)

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "live-1", exchange="coindcx")
        await _store_credentials(engine, cipher, "live-1", API_SECRET)
        factory = BrokerFactory(settings, ExchangeStore(engine), cipher, retry=FAST)
        params = {
            "side": "sell",
            "order_type": "limit_order",
            "market": "BTCUSDT",
            "total_quantity": 0.001,
            "price_per_unit": 70000,
            "client_order_id": "once",
        }
        order = await execute(factory, engine, "live-1", lambda call: call("create_order", params), exchange="coindcx")
        await factory.aclose()
        return order, await order_rows(engine, "live-1")

    order, rows = run(database_url, body)
    assert len(fake.state.orders) == 1 and fake.state.calls("/exchange/v1/orders/create") == 1
    assert [(r["client_order_id"], r["status"], r["exchange_order_id"]) for r in rows] == [
        ("once", "open", order["id"])
    ]


def test_no_secret_in_logs_errors_or_records(
    database_url: str, fake: FakeCoinDCX, caplog: pytest.LogCaptureFixture
) -> None:
    cipher = CredentialCipher.from_key_string(KEY)
    fake.state.fail("/exchange/v1/users/balances", "500", "500", "500")
    caplog.set_level(logging.DEBUG)

    async def body(engine: AsyncEngine) -> Any:
        await add_strategy(engine, "live-1", exchange="coindcx")
        await _store_credentials(engine, cipher, "live-1", API_SECRET)
        factory = BrokerFactory(settings_for(fake.url), ExchangeStore(engine), cipher, retry=FAST)
        seen: list[str] = []

        async def calls(call: BrokerCall) -> None:
            seen.append(repr(call))
            for method, params in (
                ("get_balances", {}),
                ("get_order_status", {"id": "missing"}),
                (
                    "create_order",
                    {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 1},
                ),
            ):
                try:
                    await call(method, params)
                except BrokerError as exc:
                    seen.extend([str(exc), repr(exc), exc.message])

        await execute(factory, engine, "live-1", calls, exchange="coindcx")
        await factory.aclose()
        return seen, await order_rows(engine, "live-1")

    seen, rows = run(database_url, body)
    assert len(seen) == 1 + 3 * 3
    for text in [*seen, caplog.text, repr([dict(r) for r in rows])]:
        assert API_SECRET not in text
