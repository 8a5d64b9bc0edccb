"""A live strategy's risk limits and order alerts, through the fake CoinDCX: equity is read from the
exchange's balances with the strategy's own key and valued at its ticker; a fill and a refusal are
each one alert, enqueued with the order record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from reconciler.crypto import CredentialCipher, Credentials, generate_key
from reconciler.exchange.broker import BrokerFactory
from reconciler.exchange.coindcx import RetryPolicy
from reconciler.outcome import BrokerError
from reconciler.settings import Settings
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.tables import strategy_credentials
from tests.exchange.fake_coindcx import API_KEY, API_SECRET, FakeCoinDCX
from tests.exchange.helpers import add_execution

KEY = generate_key("live-risk")
ORDER = {
    "side": "buy",
    "order_type": "limit_order",
    "market": "BTCUSDT",
    "total_quantity": 0.001,
    "price_per_unit": 50000,
}


@pytest.fixture
def fake() -> Iterator[FakeCoinDCX]:
    server = FakeCoinDCX().start()
    try:
        yield server
    finally:
        server.stop()


def test_live_equity_halts_and_orders_alert_once(
    database_url: str, pg_conn: psycopg.Connection, fake: FakeCoinDCX
) -> None:
    pg_conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, exchange, risk) "
        "VALUES ('live', 'u1', 'live', 'pass', 60, 'coindcx', %s)",
        (json.dumps({"max_daily_loss": 50}),),
    )
    pg_conn.execute(
        "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES ('live', 'running', 1)"
    )
    pg_conn.execute(
        "INSERT INTO webhooks (user_id, url, events, key_id, secret) VALUES ('u1', 'http://127.0.0.1:9/', "
        "ARRAY['halted','order_filled','order_refused'], 'k', '\\x00'::bytea)"
    )
    cipher = CredentialCipher.from_key_string(KEY)

    async def main() -> list[str]:
        engine = create_async_engine(database_url)
        sealed = cipher.encrypt(Credentials(API_KEY, API_SECRET), strategy_id="live")
        async with engine.begin() as conn:
            await conn.execute(
                insert(strategy_credentials).values(
                    strategy_id="live", key_id=sealed.key_id, credentials=sealed.ciphertext
                )
            )
        settings = Settings(coindcx_api_url=fake.url, coindcx_public_url=fake.url, exchange_timeout_seconds=2)
        factory = BrokerFactory(
            settings, ExchangeStore(engine), cipher, retry=RetryPolicy(attempts=2, budget_seconds=3)
        )
        seen: list[str] = []
        try:
            # Run 1: equity 1 000 USDT + 0.01 BTC at 60 000 = 1 600 USDT; the order goes out.
            execution = await add_execution(engine, "live")
            async with factory.session(
                strategy_id="live", execution_id=execution, exchange="coindcx", config={}
            ) as call:
                order = await call("create_order", dict(ORDER))
                seen.append(order["status"])
                fake.state.orders[order["id"]]["status"] = "filled"
                for _ in range(2):  # the fill is seen twice; it is one alert
                    seen.append((await call("get_order_status", {"id": order["id"]}))["status"])
            # Run 2: BTC at 50 000: equity 1 500, 100 below the day's start: the order is refused.
            fake.state.btc_price = 50_000.0
            await asyncio.sleep(1.1)  # the ticker is cached for a second
            execution = await add_execution(engine, "live")
            async with factory.session(
                strategy_id="live", execution_id=execution, exchange="coindcx", config={}
            ) as call:
                try:
                    await call("create_order", dict(ORDER))
                except BrokerError as exc:
                    seen.append(exc.message)
            return seen
        finally:
            await factory.aclose()
            await engine.dispose()

    seen = asyncio.run(main())
    assert seen[:3] == ["open", "filled", "filled"]
    assert "refused by risk limit max_daily_loss: the loss today is 100" in seen[3]
    status = pg_conn.execute(
        "SELECT status, halt_limit, halt_value FROM strategy_status WHERE strategy_id = 'live'"
    ).fetchone()
    assert status == ("halted", "max_daily_loss", 100)
    # The measures were the exchange's balances, read with the strategy's own (signed) key.
    balance_reads = [h for m, p, _, h in fake.state.requests if p == "/exchange/v1/users/balances"]
    assert len(balance_reads) >= 2 and all(h.get("x-auth-apikey") == API_KEY for h in balance_reads)
    # Exactly one create reached the exchange: the refused one was never sent.
    assert fake.state.calls("/exchange/v1/orders/create") == 1
    events = pg_conn.execute("SELECT event, payload FROM alert_deliveries ORDER BY created_at").fetchall()
    assert [e for e, _ in events] == ["order_filled", "halted", "order_refused"]
    filled: dict[str, Any] = events[0][1]
    assert filled["market"] == "BTCUSDT" and filled["exchange"] == "coindcx" and filled["exchange_order_id"]
    assert "max_daily_loss" in events[2][1]["reason"]
