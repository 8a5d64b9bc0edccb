"""Fencing against a real PostgreSQL: every effect of an execution is written only under its token.

The outcome, STATE and each order request are recorded only while the execution is still running,
still owned by the replica, under the token it was claimed with and within its lease, checked in the
statement that records them; an expired lease is never renewed; a replica that lost its own lease
claims nothing; re-registering draws a new epoch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest

from reconciler.exchange.feed import SimulatedFeed
from reconciler.exchange.paper import PaperExchange
from reconciler.outcome import ExecutionOutcome
from reconciler.reconcile import decide
from reconciler.risk import Breach, Resume
from reconciler.storage.db import Database, create_engine
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.storage.fence import Fence, Fenced
from reconciler.storage.replica_store import Claim, ReplicaStore

T = TypeVar("T")


def with_store(url: str, work: Callable[[ReplicaStore, ExchangeStore], Awaitable[T]], replica_id: str = "r1") -> T:
    async def main() -> T:
        engine = create_engine(url, pool_size=2, pre_ping=False)
        store = ReplicaStore(Database(engine), replica_id=replica_id, lease_seconds=30)
        try:
            await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
            exchange = ExchangeStore(engine)
            return await work(store, exchange)
        finally:
            await store.db.close_lanes()
            await exchange.aclose()
            await engine.dispose()

    return asyncio.run(main())


@pytest.fixture
def claim(database_url: str, pg_conn: psycopg.Connection) -> Claim:
    deploy_s1(pg_conn)

    async def work(store: ReplicaStore, _: ExchangeStore) -> Claim:
        await store.reconcile(decide, no_check)
        (claimed,) = (await store.claim(5)).claims
        return claimed

    return with_store(database_url, work)


async def no_check(code: str) -> str | None:
    return None


def deploy_s1(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
        " VALUES ('s1', 'u', 's1', 'x=1', 5)"
    )


def order(client_order_id: str, execution_id: Any) -> dict[str, Any]:
    return {
        "strategy_id": "s1",
        "execution_id": execution_id,
        "exchange": "paper",
        "client_order_id": client_order_id,
        "market": "BTCUSDT",
        "side": "buy",
        "order_type": "market_order",
        "total_quantity": 1,
        "price_per_unit": None,
        "status": "submitting",
        "request": {"side": "buy"},
    }


def record(url: str, values: dict[str, Any], fence: Fence) -> Any:
    return with_store(url, lambda _, orders: orders.record_order(values, fence))


def test_orders_are_recorded_only_under_the_fence(database_url: str, pg_conn: psycopg.Connection, claim: Claim) -> None:
    fence = claim.fence
    assert record(database_url, order("ok", claim.execution_id), fence) is not None
    # The same client_order_id again: not fenced, a duplicate (None).
    assert record(database_url, order("ok", claim.execution_id), fence) is None
    # Another replica's name, or another token: refused, nothing written.
    with pytest.raises(Fenced):
        record(database_url, order("other-replica", claim.execution_id), replace(fence, replica_id="r2"))
    with pytest.raises(Fenced):
        record(database_url, order("other-token", claim.execution_id), replace(fence, token=fence.token + 1))
    # The lease ran out: refused.
    pg_conn.execute("UPDATE executions SET lease_expires_at = now() - interval '1 second'")
    with pytest.raises(Fenced):
        record(database_url, order("expired", claim.execution_id), fence)
    assert [r[0] for r in pg_conn.execute("SELECT client_order_id FROM orders").fetchall()] == ["ok"]


def test_an_expired_lease_is_never_renewed_and_its_outcome_is_refused(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    pg_conn.execute("UPDATE executions SET lease_expires_at = now() - interval '1 second'")

    async def work(store: ReplicaStore, _: ExchangeStore) -> tuple[Any, Any, Any]:
        beat = await store.heartbeat(renew=[claim.fence])
        outcome = ExecutionOutcome(status="succeeded", duration=0.1, state={"written": True})
        completion = await store.complete(claim.fence, outcome)
        lost = await store.heartbeat(mark_lost=True)
        return beat, completion, lost

    beat, completion, lost = with_store(database_url, work)
    assert beat.renewed == frozenset() and beat.fenced == {claim.execution_id}  # the replica kills it
    assert completion.recorded is False
    assert lost.lost == [claim.execution_id]
    status, token = pg_conn.execute("SELECT status, fencing_token FROM executions").fetchone()
    assert status == "lost" and token != claim.fence.token  # marking it lost drew a new token
    assert pg_conn.execute("SELECT state FROM strategy_status").fetchone() == ({},)  # STATE untouched


def test_a_live_lease_is_renewed_and_the_outcome_recorded(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    async def work(store: ReplicaStore, _: ExchangeStore) -> tuple[Any, Any, Any]:
        beat = await store.heartbeat(renew=[claim.fence])
        completion = await store.complete(claim.fence, ExecutionOutcome("succeeded", 0.1, state={"n": 1}))
        # A heartbeat that still names it (its outcome committed meanwhile): neither renewed nor fenced.
        after = await store.heartbeat(renew=[claim.fence])
        return beat, completion, after

    beat, completion, after = with_store(database_url, work)
    assert beat.renewed == frozenset({claim.execution_id}) and beat.fenced == frozenset()
    assert completion.recorded
    assert after.renewed == frozenset() and after.fenced == frozenset()
    assert pg_conn.execute("SELECT state FROM strategy_status").fetchone() == ({"n": 1},)


def test_a_replica_without_a_live_lease_claims_nothing_and_reregistering_draws_a_new_epoch(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    deploy_s1(pg_conn)

    async def work(store: ReplicaStore, _: ExchangeStore) -> tuple[int, list[Claim], int, list[Claim]]:
        first = store.epoch
        await store.reconcile(decide, no_check)
        async with store.db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text("UPDATE replicas SET lease_expires_at = now() - interval '1 second'"))
        stale = (await store.claim(5)).claims
        second = await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
        fresh = (await store.claim(5)).claims
        return first, stale, second, fresh

    first, stale, second, fresh = with_store(database_url, work)
    assert stale == []
    assert second > first
    assert len(fresh) == 1 and fresh[0].fence.token == second


def test_a_paper_fill_happens_only_under_the_fence(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """The paper exchange checks the fence in the transaction that fills, and holds it to commit: an
    execution that lost its lease fills nothing and moves no balance, whatever it recorded before."""

    async def trade(store: ReplicaStore, exchange: ExchangeStore, fence: Fence) -> Any:
        paper = PaperExchange(
            exchange, SimulatedFeed(), strategy_id="s1", initial_balances={"USDT": 10_000.0}, fence=fence
        )
        return await paper.create_order(side="buy", order_type="market_order", market="BTCUSDT", total_quantity=0.01)

    def holdings() -> dict[str, Any]:
        return dict(pg_conn.execute("SELECT currency, balance FROM paper_balances WHERE strategy_id = 's1'").fetchall())

    filled = with_store(database_url, lambda store, exchange: trade(store, exchange, claim.fence))
    assert filled["status"] == "filled"
    after_fill = holdings()
    assert after_fill["BTC"] == Decimal("0.01")
    with pytest.raises(Fenced):
        with_store(database_url, lambda store, exchange: trade(store, exchange, replace(claim.fence, token=0)))
    pg_conn.execute("UPDATE executions SET lease_expires_at = now() - interval '1 second'")
    with pytest.raises(Fenced):
        with_store(database_url, lambda store, exchange: trade(store, exchange, claim.fence))
    assert holdings() == after_fill
    assert pg_conn.execute("SELECT count(*) FROM paper_orders").fetchone() == (1,)


def test_the_risk_guards_memory_and_halts_are_written_only_under_the_fence(
    database_url: str, pg_conn: psycopg.Connection, claim: Claim
) -> None:
    """The equity memory an execution measured and a halt it found are effects of that execution: a
    replica that lost its lease writes neither (nor the halt's alert), like its orders and outcome."""
    breach = Breach(limit="max_daily_loss", value=Decimal(60), threshold=Decimal(50), message="lost 60 of 50")
    pg_conn.execute(
        "INSERT INTO webhooks (user_id, url, events, key_id, secret)"
        " VALUES ('u', 'http://127.0.0.1:9/hook', ARRAY['halted'], 'k', '\\x00')"
    )

    def equity(fence: Fence) -> Any:
        return with_store(
            database_url,
            lambda _, exchange: exchange.save_equity_state(
                "s1", day=None, day_start_equity=Decimal(100), peak=Decimal(120), fence=fence
            ),
        )

    def halt(fence: Fence) -> Any:
        return with_store(database_url, lambda _, exchange: exchange.halt("s1", breach, Resume(), fence=fence))

    def status() -> tuple[Any, ...]:
        return pg_conn.execute("SELECT status, day_start_equity, equity_peak FROM strategy_status").fetchone()

    stale = replace(claim.fence, token=claim.fence.token + 1)
    with pytest.raises(Fenced):
        equity(stale)
    with pytest.raises(Fenced):
        halt(stale)
    assert status() == ("running", None, None)
    assert pg_conn.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (0,)

    equity(claim.fence)
    assert status() == ("running", Decimal(100), Decimal(120))
    assert halt(claim.fence) is True
    assert status()[0] == "halted"
    assert pg_conn.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (1,)
