"""The paper closing reads, batched, over real PostgreSQL: executions that end together read their
limits and wallets in one statement, and each gets its own strategy's answer (or the batch's error)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reconciler.storage.db import Database, StoreError
from reconciler.storage.exchange_store import ExchangeStore
from tests.exchange.helpers import add_strategy
from tests.exchange.test_broker import run


async def seed(engine: AsyncEngine) -> None:
    for strategy_id in ("a", "b", "c"):
        await add_strategy(engine, strategy_id)
    async with engine.begin() as conn:
        await conn.execute(text("""UPDATE strategies SET risk = '{"max_daily_loss": 5}' WHERE strategy_id = 'a'"""))
        await conn.execute(
            text(
                "INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance) VALUES "
                "('a', 'USDT', 90, 10), ('a', 'BTC', 0.5, 0), ('b', 'USDT', 7, 0)"
            )
        )


def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement sent from now on, seen at the driver's cursor, where SQLAlchemy's statements and
    the hot path's (`reconciler.storage.db.Wire`) both pass (the driver's own BEGIN and COMMIT do not)."""
    sent: list[str] = []
    execute = psycopg.AsyncCursor.execute

    async def spy(self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", spy)
    return sent


def test_closing_reads_that_end_together_share_one_statement_and_each_gets_its_own(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seed(engine)
        store = ExchangeStore(engine)
        singles = {
            sid: (await store.risk_view(sid), await store.paper_holdings(sid)) for sid in ("a", "b", "c", "gone")
        }
        begun = statements(monkeypatch)
        together = await asyncio.gather(*(store.risk_view_and_paper_holdings(sid) for sid in ("a", "b", "c", "gone")))
        await store.aclose()
        return singles, dict(zip(("a", "b", "c", "gone"), together, strict=True)), len(begun)

    singles, together, begun = run(database_url, body)
    assert begun == 1
    assert together["a"][1] == {"USDT": Decimal(100), "BTC": Decimal("0.5")}
    assert together["a"][0] is not None and together["a"][0].risk == {"max_daily_loss": 5}
    assert together["b"][1] == {"USDT": Decimal(7)}
    assert together["c"][1] == {}
    assert together["gone"] == (None, {})
    for sid in ("a", "b", "c"):
        view, held = together[sid]
        single_view, single_held = singles[sid]
        assert held == single_held
        assert view is not None and single_view is not None
        assert (view.risk, view.status, view.equity_peak) == (
            single_view.risk,
            single_view.status,
            single_view.equity_peak,
        )


def test_a_lone_closing_read_is_made_at_once_and_a_later_one_by_a_statement_of_its_own(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seed(engine)
        store = ExchangeStore(engine)
        begun = statements(monkeypatch)
        first = await store.risk_view_and_paper_holdings("b")
        second = await store.risk_view_and_paper_holdings("b")
        await store.aclose()
        return first, second, len(begun)

    first, second, begun = run(database_url, body)
    assert first[1] == second[1] == {"USDT": Decimal(7)}
    assert begun == 2


def test_a_batch_that_fails_fails_every_read_in_it_and_the_next_batch_reads_again(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seed(engine)
        store = ExchangeStore(engine)
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE paper_balances RENAME TO paper_balances_away"))
        failed = await asyncio.gather(
            *(store.risk_view_and_paper_holdings(sid) for sid in ("a", "b")), return_exceptions=True
        )
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE paper_balances_away RENAME TO paper_balances"))
        again = await store.risk_view_and_paper_holdings("a")
        await store.aclose()
        return failed, again

    failed, again = run(database_url, body)
    assert all(isinstance(exc, StoreError) for exc in failed)
    assert again[1] == {"USDT": Decimal(100), "BTC": Decimal("0.5")}


def test_a_cancelled_closing_read_leaves_the_others_of_its_batch_answered(database_url: str) -> None:
    async def body(engine: AsyncEngine) -> Any:
        await seed(engine)
        store = ExchangeStore(engine)
        gone = asyncio.ensure_future(store.risk_view_and_paper_holdings("a"))
        kept = asyncio.ensure_future(store.risk_view_and_paper_holdings("b"))
        await asyncio.sleep(0)
        gone.cancel()
        answered = await kept
        await store.aclose()
        return answered, gone

    kept, gone = run(database_url, body)
    assert kept[1] == {"USDT": Decimal(7)}
    with pytest.raises(asyncio.CancelledError):
        gone.result()


def test_a_closing_read_leaves_its_pooled_connection_transactional(database_url: str) -> None:
    # The read runs without a transaction around it; the connection it used (kept by the closing
    # reads until the store is closed), back in the pool, must not stay in autocommit: a transaction
    # that fails after a write on it must leave nothing behind.
    async def body(shared: AsyncEngine) -> Any:
        await seed(shared)
        engine = create_async_engine(database_url, pool_size=1, max_overflow=0)  # one connection for all
        store = ExchangeStore(engine)
        await store.risk_view_and_paper_holdings("a")
        await store.aclose()  # the closing reads' connection goes back to the pool

        async def write_then_fail(conn: Any) -> None:
            await conn.execute(text("UPDATE paper_balances SET balance = 0 WHERE strategy_id = 'b'"))
            await conn.execute(text("SELECT 1 / 0"))

        try:
            with pytest.raises(StoreError):
                await Database(engine).run(write_then_fail)
            return await store.paper_holdings("b")
        finally:
            await engine.dispose()

    held = run(database_url, body)
    assert held == {"USDT": Decimal(7)}


def test_a_paper_session_without_calls_measures_from_its_claims_read_and_one_with_a_call_reads_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.crypto import CredentialCipher
    from reconciler.exchange.broker import BrokerFactory
    from reconciler.exchange.feed import SimulatedFeed
    from reconciler.storage.exchange_store import RiskView
    from tests.exchange.test_broker import KEY, settings_for

    async def body(engine: AsyncEngine) -> Any:
        await seed(engine)
        store = ExchangeStore(engine)
        factory = BrokerFactory(settings_for(), store, CredentialCipher.from_key_string(KEY), feed=SimulatedFeed())
        # What a claim read: a wallet unlike the stored one, so the test sees which was measured.
        view = RiskView(
            risk=None,
            status="running",
            risk_day=None,
            day_start_equity=None,
            equity_peak=None,
            db_now=datetime.now(UTC),
        )
        claimed = (view, {"USDT": Decimal(42)})
        measures: list[tuple[Decimal, str]] = []
        sent = statements(monkeypatch)
        async with factory.session(
            strategy_id="b",
            execution_id=str(uuid.uuid4()),
            exchange="paper",
            config={},
            record_measure=lambda value, currency: measures.append((value, currency)),
            claimed_view=claimed,
        ):
            pass
        quiet = list(sent)
        async with factory.session(
            strategy_id="b",
            execution_id=str(uuid.uuid4()),
            exchange="paper",
            config={},
            record_measure=lambda value, currency: measures.append((value, currency)),
            claimed_view=claimed,
        ) as call:
            await call("get_markets", {})
        await store.aclose()
        return measures, quiet, sent

    measures, quiet, sent = run(database_url, body)
    # No call: the claim's wallet, and no statement at all.
    assert measures[0] == (Decimal(42), "USDT") and quiet == []
    # A call: read again as the run ends (the stored wallet, 7 USDT).
    assert measures[1] == (Decimal(7), "USDT")
    assert any("paper_balances" in statement for statement in sent)
