"""Each paper execution records its wallet's value at the feed's prices when the run ends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.crypto import CredentialCipher, generate_key
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.feed import SIM_MARKETS, SimMarket, SimulatedFeed
from reconciler.exchange.wallet import wallet_value
from reconciler.settings import Settings
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.tables import executions
from tests.exchange.helpers import add_strategy

T0 = 1_790_000_000.0


def test_the_value_converts_each_currency_through_a_market() -> None:
    feed = SimulatedFeed(clock=lambda: T0)

    async def price(market: str) -> Decimal:
        return Decimal(str(await feed.price(market)))

    async def main() -> None:
        holdings = {"USDT": Decimal(100), "BTC": Decimal("0.01"), "INR": Decimal(8500), "XYZ": Decimal(5)}
        valued = await wallet_value(holdings, feed)
        expected = 100 + Decimal("0.01") * await price("BTCUSDT") + 8500 / await price("USDTINR")
        assert valued.currency == "USDT"
        assert abs(valued.value - expected) < Decimal("0.00000001")
        assert valued.unpriced == ("XYZ",)

    asyncio.run(main())


def test_a_coin_listed_only_against_inr_is_valued_through_inr() -> None:
    markets = (SimMarket("ABC", "INR", "I", 850.0, 0.01, 2, 2, 100.0), *SIM_MARKETS)
    feed = SimulatedFeed(clock=lambda: T0, markets=markets)

    async def main() -> None:
        valued = await wallet_value({"ABC": Decimal(2)}, feed)
        abc_inr = Decimal(str(await feed.price("ABCINR")))
        usdt_inr = Decimal(str(await feed.price("USDTINR")))
        assert abs(valued.value - 2 * abc_inr / usdt_inr) < Decimal("0.00000001")
        assert valued.unpriced == ()

    asyncio.run(main())


async def _running_execution(engine: AsyncEngine, strategy_id: str) -> uuid.UUID:
    execution_id = uuid.uuid4()
    async with engine.begin() as conn:
        # The strategy names its execution in flight first (the database holds every running execution
        # to that: fk_executions_in_flight).
        await conn.execute(
            text(
                "INSERT INTO strategy_status (strategy_id, running_execution_id) VALUES (:s, :e)"
                " ON CONFLICT (strategy_id) DO UPDATE SET running_execution_id = EXCLUDED.running_execution_id"
            ),
            {"s": strategy_id, "e": execution_id},
        )
        await conn.execute(
            insert(executions).values(
                execution_id=execution_id, strategy_id=strategy_id, trigger="manual",
                scheduled_for=datetime.now(UTC), generation=1, status="running", replica_id="test",
            )
        )  # fmt: skip
    return execution_id


async def _finish(engine: AsyncEngine, execution_id: uuid.UUID) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(executions)
            .where(executions.c.execution_id == execution_id)
            .values(status="succeeded", finished_at=datetime.now(UTC))
        )
        await conn.execute(
            text("UPDATE strategy_status SET running_execution_id = NULL WHERE running_execution_id = :e"),
            {"e": execution_id},
        )


async def _recorded(engine: AsyncEngine, execution_id: uuid.UUID) -> tuple[Any, Any]:
    async with engine.connect() as conn:
        query = select(executions.c.wallet_value, executions.c.wallet_currency).where(
            executions.c.execution_id == execution_id
        )
        row = (await conn.execute(query)).one()
    return row.wallet_value, row.wallet_currency


def test_the_broker_records_the_value_as_each_paper_run_ends(database_url: str) -> None:
    clock = {"t": T0}
    feed = SimulatedFeed(clock=lambda: clock["t"])
    settings = Settings(paper_initial_balances={"USDT": 1000.0})

    async def main() -> None:
        engine = create_async_engine(database_url)
        factory = BrokerFactory(
            settings, ExchangeStore(engine), CredentialCipher.from_key_string(generate_key("k")), feed=feed
        )
        try:
            await add_strategy(engine, "trader")
            await add_strategy(engine, "idle")
            # A run that never touches its client: its starting wallet, valued.
            idle = await _running_execution(engine, "idle")
            async with factory.session(strategy_id="idle", execution_id=str(idle), exchange="paper", config={}):
                pass
            assert await _recorded(engine, idle) == (Decimal("1000.00000000"), "USDT")
            await _finish(engine, idle)

            # A run that buys BTC: USDT left plus the BTC at the price when the run ends (minus the fee).
            first = await _running_execution(engine, "trader")
            async with factory.session(
                strategy_id="trader", execution_id=str(first), exchange="paper", config={}
            ) as call:
                order = await call(
                    "create_order",
                    {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": 0.01},
                )
                clock["t"] = T0 + 3600  # the price moves before the run ends
            end_price = Decimal(str(await feed.price("BTCUSDT")))
            paid = Decimal(str(order["avg_price"])) * Decimal("0.01") * Decimal("1.001")
            await _finish(engine, first)
            value, currency = await _recorded(engine, first)
            assert currency == "USDT"
            assert abs(value - (Decimal(1000) - paid + Decimal("0.01") * end_price)) < Decimal("0.0001")
            assert value != Decimal(1000)

            # A later run of the same strategy values the same wallet at a later price.
            clock["t"] = T0 + 7200
            second = await _running_execution(engine, "trader")
            async with factory.session(strategy_id="trader", execution_id=str(second), exchange="paper", config={}):
                pass
            await _finish(engine, second)
            later, _ = await _recorded(engine, second)
            later_price = Decimal(str(await feed.price("BTCUSDT")))
            assert later - value == (Decimal("0.01") * (later_price - end_price)).quantize(Decimal("0.00000001"))

            # A live (coindcx) execution records no wallet value.
            live = await _running_execution(engine, "idle")
            async with factory.session(strategy_id="idle", execution_id=str(live), exchange="coindcx", config={}):
                pass
            assert await _recorded(engine, live) == (None, None)
        finally:
            await factory.aclose()
            await engine.dispose()

    asyncio.run(main())


def test_a_replica_takes_the_closing_value_to_record_with_the_outcome(database_url: str) -> None:
    feed = SimulatedFeed(clock=lambda: T0)
    settings = Settings(paper_initial_balances={"USDT": 1000.0})

    async def main() -> None:
        engine = create_async_engine(database_url)
        cipher = CredentialCipher.from_key_string(generate_key("k"))
        factory = BrokerFactory(settings, ExchangeStore(engine), cipher, feed=feed)
        try:
            await add_strategy(engine, "idle")
            await add_strategy(engine, "trader")
            measures: list[tuple[Decimal, str]] = []
            # A run that placed no order (one read of limits and wallet), and one that traded.
            for strategy_id, trades in (("idle", False), ("trader", True)):
                execution = await _running_execution(engine, strategy_id)
                async with factory.session(
                    strategy_id=strategy_id,
                    execution_id=str(execution),
                    exchange="paper",
                    config={},
                    record_measure=lambda value, currency: measures.append((value, currency)),
                ) as call:
                    if trades:
                        order = {"side": "buy", "order_type": "market_order", "market": "BTCUSDT"}
                        await call("create_order", {**order, "total_quantity": 0.01})
                # The replica records it with the outcome; the session wrote nothing itself.
                assert await _recorded(engine, execution) == (None, None)
            assert measures[0] == (Decimal("1000.00000000"), "USDT")
            assert measures[1][1] == "USDT" and measures[1][0] != Decimal(1000)
        finally:
            await factory.aclose()
            await engine.dispose()

    asyncio.run(main())
