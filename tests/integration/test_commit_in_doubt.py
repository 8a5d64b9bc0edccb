"""Commits in doubt: the server committed, the connection broke before the client read the answer.

The store sees `DatabaseUnavailable` and the transaction boundary runs the write again on a fresh
connection (`Database.run`). Each test loses a real reply (`LostReply`, a proxy between the store and
PostgreSQL) and checks that the second run finds what the first did instead of doing it again or
mistaking its own write for someone else's: one order row, one outcome (reported as recorded), one
alert, and a claim whose executions run rather than wait to be marked lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from reconciler.exchange.feed import SimulatedFeed
from reconciler.exchange.paper import PaperExchange
from reconciler.outcome import ExecutionOutcome
from reconciler.storage.db import Database, create_engine
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.storage.replica_store import Claim, ReplicaStore
from tests.integration.lost_reply import LostReply
from tests.integration.test_fencing import claim, order

__all__ = ["claim"]  # the fixture, shared with the fencing tests

# Each test reproduces a harm of the code before its fix (seen failing for the reason its docstring
# gives, or its assertion).

T = TypeVar("T")
T0 = 1_790_000_000.0  # the simulated feed's clock (a fixed price)


def through_proxy(url: str, work: Callable[[ReplicaStore, ExchangeStore, LostReply], Awaitable[T]]) -> T:
    """`work` on a replica store and an exchange store whose every connection goes through the proxy."""

    async def main() -> T:
        async with LostReply(url) as proxy:
            engine = create_engine(proxy.url, pool_size=2, pre_ping=False)
            store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)
            exchange = ExchangeStore(engine)
            try:
                await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
                result = await work(store, exchange, proxy)
                assert proxy.cuts == 1, "the reply was not lost: the test proves nothing"
                return result
            finally:
                await store.db.close_lanes()
                await exchange.aclose()
                await engine.dispose()

    return asyncio.run(main())


def add_webhook(conn: psycopg.Connection, events: list[str]) -> None:
    conn.execute(
        "INSERT INTO webhooks (user_id, url, events, key_id, secret) VALUES ('u', 'http://127.0.0.1:9/', %s, 'k', 'x')",
        (events,),
    )


def test_an_order_whose_commit_reply_is_lost_is_recorded_once_and_returned(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """Before: the retry's insert met its own row's client_order_id and answered None, "already used":
    the broker refused the order it had just recorded, left that row `submitting` for ever, and
    recorded a second row for the refusal."""

    async def work(_: ReplicaStore, exchange: ExchangeStore, proxy: LostReply) -> Any:
        proxy.arm(after=b"in-doubt-order", cut=b"COMMIT")
        return await exchange.record_order(order("in-doubt-order", claim.execution_id), claim.fence)

    order_id = through_proxy(database_url, work)
    rows = pg_conn.execute("SELECT order_id, client_order_id, status FROM orders").fetchall()
    assert rows == [(order_id, "in-doubt-order", "submitting")]


def test_an_order_answer_whose_commit_reply_is_lost_enqueues_its_alert_once(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """Before: the retry enqueued the `order_refused` alert a second time, under a new event id that
    no receiver could tell from another refusal."""
    add_webhook(pg_conn, ["order_refused"])
    recorded = recorded_order(database_url, claim)

    async def work(_: ReplicaStore, exchange: ExchangeStore, proxy: LostReply) -> None:
        proxy.arm(after=b"rejected by the exchange", cut=b"COMMIT")
        await exchange.update_order(
            recorded, "s1", status="error", error="rejected by the exchange", alert=("order_refused", {"n": 1})
        )

    through_proxy(database_url, work)
    assert pg_conn.execute("SELECT status FROM orders").fetchall() == [("error",)]
    assert pg_conn.execute("SELECT event FROM alert_deliveries").fetchall() == [("order_refused",)]


def test_a_paper_order_whose_commit_reply_is_lost_fills_once_and_is_answered(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """Before: the retry filled the order again (its balances moved twice), then its insert met the
    first attempt's row and the call raised "Duplicate client order id" for an order that had filled:
    the broker recorded it refused."""

    async def work(_: ReplicaStore, exchange: ExchangeStore, proxy: LostReply) -> Any:
        feed = SimulatedFeed(clock=lambda: T0)
        paper = PaperExchange(exchange, feed, strategy_id="s1", initial_balances={"USDT": 10_000.0}, fence=claim.fence)
        proxy.arm(after=b"in-doubt-paper", cut=b"COMMIT")
        return await paper.create_order("buy", "market_order", "BTCUSDT", 0.01, client_order_id="in-doubt-paper")

    answer = through_proxy(database_url, work)
    assert answer["status"] == "filled" and answer["client_order_id"] == "in-doubt-paper"
    rows = pg_conn.execute("SELECT paper_order_id::text, status FROM paper_orders").fetchall()
    assert rows == [(answer["id"], "filled")]
    bought = pg_conn.execute("SELECT balance FROM paper_balances WHERE currency = 'BTC'").fetchall()
    assert bought == [(Decimal("0.01"),)]


def recorded_order(url: str, claim: Claim) -> Any:
    async def main() -> Any:
        engine = create_engine(url, pool_size=1, pre_ping=False)
        try:
            return await ExchangeStore(engine).record_order(order("sent", claim.execution_id), claim.fence)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_an_outcome_whose_reply_is_lost_is_recorded_once_and_reported_recorded(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """Before: the retry found the execution finished and answered "fenced off" (recorded False), so
    the loop logged a lost lease that never happened and missed the run request that waited for it."""
    pg_conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('s1')")

    async def work(store: ReplicaStore, _: ExchangeStore, proxy: LostReply) -> Any:
        proxy.arm(after=str(claim.execution_id).encode(), cut=str(claim.execution_id).encode())
        return await store.complete(claim.fence, ExecutionOutcome("succeeded", 0.1, state={"n": 1}))

    completion = through_proxy(database_url, work)
    assert completion.recorded and completion.run_requested
    assert pg_conn.execute("SELECT status FROM executions").fetchall() == [("succeeded",)]
    assert pg_conn.execute("SELECT execution_count, state FROM strategy_status").fetchone() == (1, {"n": 1})


def test_a_failed_outcome_whose_commit_reply_is_lost_is_counted_once(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    async def work(store: ReplicaStore, _: ExchangeStore, proxy: LostReply) -> Any:
        proxy.arm(after=str(claim.execution_id).encode(), cut=b"COMMIT")
        return await store.complete(claim.fence, ExecutionOutcome("failed", 0.1, error="boom"))

    completion = through_proxy(database_url, work)
    assert completion.recorded
    row = pg_conn.execute("SELECT execution_count, failed_executions, consecutive_failures FROM strategy_status")
    assert row.fetchone() == (1, 1, 1)
