"""The risk guard over real PostgreSQL: the broker refuses the crossing order and every later one,
halts the strategy with the limit, the measured value and the time, and the replica store halts on
a failure streak and lifts a pause on schedule. Prices come from a feed the test moves by hand."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import func, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.crypto import CredentialCipher, generate_key
from reconciler.exchange import errors
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.feed import SimulatedFeed
from reconciler.outcome import BrokerCall, BrokerError, ExecutionOutcome
from reconciler.reconcile import decide
from reconciler.settings import Settings
from reconciler.storage.db import Database
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.storage.replica_store import ReplicaStore
from reconciler.tables import executions

START = {"BTCUSDT": 60_000.0}


async def compiles(code: str) -> str | None:
    return None


class MovableFeed(SimulatedFeed):
    """The simulated market's shapes, at prices the test sets (a falling market on demand)."""

    def __init__(self) -> None:
        super().__init__()
        self.prices = dict(START)

    async def price(self, market: str) -> float:
        self.spec(market)
        return self.prices.get(market, await super().price(market))

    async def price_range(self, market: str, start: float, end: float) -> tuple[float, float]:
        price = await self.price(market)
        return price, price


def deploy(conn: psycopg.Connection, strategy_id: str, risk: dict[str, Any], user_id: str = "u1") -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, risk) "
        "VALUES (%s, %s, %s, 'pass', 60, %s)",
        (strategy_id, user_id, strategy_id, json.dumps(risk)),
    )
    conn.execute("INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES (%s, 'running', 1)",
                 (strategy_id,))  # fmt: skip
    # A webhook of the owner that wants every event: the outbox shows what would be sent.
    conn.execute(
        "INSERT INTO webhooks (user_id, url, events, key_id, secret) VALUES (%s, 'http://127.0.0.1:9/', "
        "ARRAY['halted','resumed','consecutive_failures','order_filled','order_refused','execution_lost'], 'k', "
        "'\\x00'::bytea)",
        (user_id,),
    )


def status_of(conn: psycopg.Connection, strategy_id: str) -> dict[str, Any]:
    cursor = conn.execute("SELECT * FROM strategy_status WHERE strategy_id = %s", (strategy_id,))
    row = cursor.fetchone()
    assert row is not None and cursor.description is not None
    return dict(zip([d.name for d in cursor.description], row, strict=True))


def outbox(conn: psycopg.Connection, strategy_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = conn.execute(
        "SELECT event, payload FROM alert_deliveries WHERE strategy_id = %s ORDER BY created_at", (strategy_id,)
    ).fetchall()
    return [(event, payload) for event, payload in rows]


def run(database_url: str, body: Callable[[AsyncEngine, BrokerFactory], Awaitable[Any]], feed: MovableFeed) -> Any:
    async def main() -> Any:
        engine = create_async_engine(database_url)
        settings = Settings(paper_initial_balances={"USDT": 10_000.0})
        factory = BrokerFactory(
            settings, ExchangeStore(engine), CredentialCipher.from_key_string(generate_key("k")), feed=feed
        )
        try:
            return await body(engine, factory)
        finally:
            await factory.aclose()
            await engine.dispose()

    return asyncio.run(main())


async def execution(
    engine: AsyncEngine,
    factory: BrokerFactory,
    strategy_id: str,
    orders: list[str],
    config: dict[str, Any] | None = None,
) -> list[str]:
    """One execution that places the given quantities of BTC as market buys; what each call answered."""
    execution_id = uuid.uuid4()
    async with engine.begin() as conn:
        # In flight while its broker session is open, as a claimed execution is: its strategy names it
        # (the database holds every running execution to that: fk_executions_in_flight).
        await conn.execute(
            text("UPDATE strategy_status SET running_execution_id = :e WHERE strategy_id = :s"),
            {"e": execution_id, "s": strategy_id},
        )
        await conn.execute(
            insert(executions).values(
                execution_id=execution_id,
                strategy_id=strategy_id,
                trigger="manual",
                scheduled_for=datetime.now(UTC),
                generation=1,
                replica_id="test",
            )
        )
    answers = []
    async with factory.session(
        strategy_id=strategy_id, execution_id=str(execution_id), exchange="paper", config=config or {}
    ) as call:
        for quantity in orders:
            answers.append(await buy(call, quantity))
    async with engine.begin() as conn:
        await conn.execute(
            update(executions)
            .where(executions.c.execution_id == execution_id)
            .values(status="succeeded", finished_at=func.now())
        )
        await conn.execute(
            text("UPDATE strategy_status SET running_execution_id = NULL WHERE strategy_id = :s"), {"s": strategy_id}
        )
    return answers


async def buy(call: BrokerCall, quantity: str) -> str:
    try:
        order = await call(
            "create_order",
            {"side": "buy", "order_type": "market_order", "market": "BTCUSDT", "total_quantity": quantity},
        )
    except BrokerError as exc:
        assert exc.kind == errors.REFUSED, exc
        return f"refused: {exc.message}"
    return str(order["status"])


def test_a_losing_strategy_is_halted_within_the_execution_that_crosses_its_daily_loss(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    deploy(pg_conn, "loser", {"max_daily_loss": 50, "on_breach": "pause"})
    feed = MovableFeed()

    async def body(engine: AsyncEngine, factory: BrokerFactory) -> list[list[str]]:
        runs = []
        # It buys high in a falling market: 60 000, 58 000, 56 000.
        for price in (60_000.0, 58_000.0, 56_000.0):
            feed.prices["BTCUSDT"] = price
            runs.append(await execution(engine, factory, "loser", ["0.015", "0.001"]))
        return runs

    runs = run(database_url, body, feed)
    assert runs[0] == ["filled", "filled"]
    assert runs[1] == ["filled", "filled"]  # 32 USDT down: under the limit
    # At 56 000 the wallet is 9 999.1 - 2 * ... : over 50 USDT below the day's start: the first order
    # of the run is the one refused, and the one after it is refused without being sent.
    first, second = runs[2]
    assert first.startswith("refused: create_order: refused by risk limit max_daily_loss")
    assert second.startswith("refused: create_order: risk limit max_daily_loss was breached earlier in this run")

    status = status_of(pg_conn, "loser")
    assert status["status"] == "halted"
    assert status["halt_limit"] == "max_daily_loss"
    assert status["halt_threshold"] == Decimal(50)
    start = Decimal(10_000)
    equity = start - Decimal("0.016") * 60_000 - Decimal("0.016") * 58_000 + Decimal("0.032") * 56_000
    fees = (Decimal("0.016") * 60_000 + Decimal("0.016") * 58_000) * Decimal("0.001")
    assert status["halt_value"] == start - (equity - fees)
    assert status["next_execution_at"] is None
    # A daily-loss pause ends at the next UTC midnight, by the database's clock.
    (midnight,) = pg_conn.execute(
        "SELECT (date_trunc('day', %s::timestamptz AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'",
        (status["halted_at"],),
    ).fetchone()  # type: ignore[misc]
    assert status["resume_at"] == midnight
    # Every refusal is in the orders record with its reason; nothing was sent after the breach.
    orders = pg_conn.execute(
        "SELECT status, error FROM orders WHERE strategy_id = 'loser' ORDER BY created_at"
    ).fetchall()
    assert [s for s, _ in orders] == ["filled", "filled", "filled", "filled", "refused", "refused"]
    assert all("max_daily_loss" in (error or "") for s, error in orders if s == "refused")
    (paper_orders,) = pg_conn.execute("SELECT count(*) FROM paper_orders WHERE strategy_id = 'loser'").fetchone()  # type: ignore[misc]
    assert paper_orders == 4
    # The equity series: one point per execution, measured by the service.
    snapshots = pg_conn.execute(
        "SELECT wallet_value, wallet_currency FROM executions WHERE strategy_id = 'loser' ORDER BY claimed_at"
    ).fetchall()
    assert len(snapshots) == 3 and {c for _, c in snapshots} == {"USDT"}
    assert snapshots[0][0] > snapshots[1][0] > snapshots[2][0]
    events = outbox(pg_conn, "loser")
    assert [e for e, _ in events] == ["halted"]  # paper orders send no order alerts
    assert events[0][1]["limit"] == "max_daily_loss" and events[0][1]["resume_at"] is not None


def test_drawdown_is_measured_from_a_peak_reached_mid_way_and_the_pause_ends_on_schedule(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    deploy(pg_conn, "peaky", {"max_drawdown_pct": 5, "on_breach": "pause", "resume_after": 1})
    feed = MovableFeed()
    config = {"max_order_notional": 20_000}

    async def body(engine: AsyncEngine, factory: BrokerFactory) -> list[list[str]]:
        runs = [await execution(engine, factory, "peaky", ["0.15"], config)]  # 9 000 USDT of BTC
        for price in (63_000.0, 66_000.0, 64_000.0, 62_000.0):
            feed.prices["BTCUSDT"] = price
            runs.append(await execution(engine, factory, "peaky", [], config))
        feed.prices["BTCUSDT"] = 62_000.0
        runs.append(await execution(engine, factory, "peaky", ["0.001"], config))
        return runs

    runs = run(database_url, body, feed)
    assert runs[0] == ["filled"]
    status = status_of(pg_conn, "peaky")
    # The peak, 66 000, was reached in the third run; at 62 000 equity is still above where it
    # started (10 000) but more than 5 % below the peak: halted at the end of that run.
    assert status["status"] == "halted" and status["halt_limit"] == "max_drawdown_pct"
    peak = Decimal(1_000) - Decimal(9) + Decimal("0.15") * 66_000
    assert status["equity_peak"] == peak
    now_equity = Decimal(1_000) - Decimal(9) + Decimal("0.15") * 62_000
    assert now_equity > Decimal(10_000)
    assert status["halt_value"] == ((peak - now_equity) / peak * 100).quantize(Decimal("0.0001"))
    (seconds,) = pg_conn.execute(
        "SELECT extract(epoch FROM resume_at - halted_at) FROM strategy_status WHERE strategy_id = 'peaky'"
    ).fetchone()  # type: ignore[misc]
    assert float(seconds) == 1.0
    assert runs[-1] == [
        "refused: create_order: the strategy is halted by its risk limits; no order is sent until it resumes"
    ]

    # The pause ends on schedule: the reconcile pass after resume_at lifts it, with an alert, and the
    # guard's memory starts afresh (a new peak from the equity at resume).
    async def resume() -> None:
        from reconciler.storage.db import create_engine

        engine = create_engine(database_url, pool_size=2)
        store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)
        try:
            early = await store.reconcile(decide, compiles)
            assert early.seconds_until_resume is not None
            await asyncio.sleep(max(early.seconds_until_resume, 0) + 0.1)
            await store.reconcile(decide, compiles)
        finally:
            await engine.dispose()

    asyncio.run(resume())
    status = status_of(pg_conn, "peaky")
    assert status["status"] == "running" and status["next_execution_at"] is not None
    assert status["halted_at"] is None and status["halt_limit"] is None and status["equity_peak"] is None
    assert [e for e, _ in outbox(pg_conn, "peaky")] == ["halted", "resumed"]


def test_a_position_cap_refuses_the_buy_that_would_cross_it_and_stops_the_strategy(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    deploy(pg_conn, "hoarder", {"max_position": {"BTCUSDT": 0.02}})
    feed = MovableFeed()

    async def body(engine: AsyncEngine, factory: BrokerFactory) -> list[list[str]]:
        return [await execution(engine, factory, "hoarder", ["0.015", "0.01", "0.001"])]

    (answers,) = run(database_url, body, feed)
    assert answers[0] == "filled"
    assert answers[1].startswith("refused: create_order: refused by risk limit max_position: buying 0.01 BTC")
    assert "earlier in this run" in answers[2]  # a buy that would itself fit is not sent either
    status = status_of(pg_conn, "hoarder")
    assert status["status"] == "halted" and status["halt_limit"] == "max_position"
    assert status["halt_value"] == Decimal("0.025") and status["resume_at"] is None  # stop: until a start


def test_three_failures_in_a_row_halt_the_strategy(database_url: str, pg_conn: psycopg.Connection) -> None:
    pg_conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, risk) "
        "VALUES ('crashy', 'u1', 'crashy', 'x = 1', 1, '{\"max_consecutive_failures\": 3}')"
    )
    pg_conn.execute(
        "INSERT INTO webhooks (user_id, url, events, key_id, secret) "
        "VALUES ('u1', 'http://127.0.0.1:9/', ARRAY['halted','consecutive_failures'], 'k', '\\x00'::bytea)"
    )
    failed = ExecutionOutcome(status="failed", duration=0.01, error="ZeroDivisionError: division by zero")

    async def work() -> list[str]:
        from reconciler.storage.db import create_engine

        engine = create_engine(database_url, pool_size=2)
        store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)
        seen = []
        try:
            await store.register(hostname="h", pid=1, slots=1, version="t", layers={})
            for outcome in (failed, ExecutionOutcome(status="succeeded", duration=0.01), failed, failed, failed):
                await store.reconcile(decide, compiles)
                claims = []
                for _ in range(50):
                    claims = (await store.claim(1)).claims
                    if claims:
                        break
                    await asyncio.sleep(0.1)
                assert claims, "nothing became due"
                await store.complete(claims[0].fence, outcome)
                seen.append(status_of(pg_conn, "crashy")["status"])
            await store.reconcile(decide, compiles)
            return seen
        finally:
            await store.db.close_lanes()
            await engine.dispose()

    seen = asyncio.run(work())
    # A success in between resets the streak: halted only at the third failure in a row.
    assert seen == ["running", "running", "running", "running", "halted"]
    status = status_of(pg_conn, "crashy")
    assert status["halt_limit"] == "max_consecutive_failures" and status["halt_value"] == 3
    assert status["consecutive_failures"] == 3 and status["resume_at"] is None
    assert [e for e, _ in outbox(pg_conn, "crashy")] == ["consecutive_failures", "halted"]
    # Halted strategies are not claimed.
    (claimable,) = pg_conn.execute(
        "SELECT count(*) FROM strategy_status WHERE strategy_id = 'crashy' AND status = 'running'"
    ).fetchone()  # type: ignore[misc]
    assert claimable == 0
