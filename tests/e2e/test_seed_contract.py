"""The seed backend's contract and the exchange's edges, through the real service and the real sandbox.

The platform's existing backend deploys `{strategy_id, user_id, code, config, execution_interval,
api_key, api_secret}` and expects the strategy to trade live; a strategy's numbers come back as it
left them; hostile numbers in client calls are refused as ExchangeErrors and recorded.
"""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.e2e.exchange_service import run_once
from tests.e2e.harness import TOKEN, Service
from tests.exchange.fake_coindcx import API_KEY, API_SECRET, FakeCoinDCX

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_seed_backends_deploy_trades_live(exchange_service: tuple[Service, str], exchange: FakeCoinDCX) -> None:
    _, base = exchange_service
    body = {
        "strategy_id": "seed-1",
        "user_id": "42",
        "code": "RESULT = [b['currency'] for b in client.get_balances()]",
        "config": {},
        "execution_interval": 3600,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
    }
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        deployed = client.post("/strategies/deploy", json=body)
        assert deployed.status_code == 201, deployed.text
        assert deployed.json()["exchange"] == "coindcx"
        outcome = run_once(client, "seed-1")
        # Another user deploying the same public key, with any secret, is refused without a name.
        stolen = client.post("/strategies/deploy", json={**body, "strategy_id": "thief", "user_id": "7"})
    assert outcome["status"] == "succeeded", outcome.get("error")
    assert outcome["result"] == ["USDT"] or "USDT" in outcome["result"]  # type: ignore[operator]
    assert any(h.get("x-auth-apikey") == API_KEY for _, _, _, h in exchange.state.requests)
    assert stolen.status_code == 409 and "42" not in stolen.text and "seed-1" not in stolen.text


FLOATS = """
STATE["f"] = STATE.get("f", 1.5e300)
STATE["runs"] = STATE.get("runs", 0) + 1
RESULT = {"big": 1.5e300, "e16": 1e16, "tiny": 1.5e-300, "int": 10**20, "seen": STATE["f"], "runs": STATE["runs"]}
"""


def test_floats_come_back_as_floats(exchange_service: tuple[Service, str], pg_conn: psycopg.Connection) -> None:
    _, base = exchange_service
    body = {"strategy_id": "floats", "user_id": "u1", "code": FLOATS, "execution_interval": 3600, "auto_start": False}
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        assert client.post("/strategies/deploy", json=body).status_code == 201
        run_once(client, "floats")
        second = run_once(client, "floats")  # reads back the STATE the first run stored
        listed = client.get("/strategies/floats/executions").json()["items"][0]
    assert second["status"] == "succeeded", second.get("error")
    for result in (second["result"], listed["result"]):
        assert result == {"big": 1.5e300, "e16": 1e16, "tiny": 1.5e-300, "int": 10**20, "seen": 1.5e300, "runs": 2}
        assert isinstance(result["big"], float) and isinstance(result["seen"], float)  # type: ignore[index]
        assert isinstance(result["e16"], float) and isinstance(result["int"], int)  # type: ignore[index]


HOSTILE = """
refused = []
for quantity in (1e999999, 1e-999999, 10**20000, "9" * 20000, "0.010000000000000000000000000001"):
    try:
        client.create_order("buy", "limit_order", "BTCUSDT", quantity, 10)
        refused.append(None)
    except ExchangeError as error:
        refused.append([error.kind, str(error)[:80]])
try:
    client.get_trade_history(from_timestamp=10**18)
except ExchangeError as error:
    refused.append([error.kind, str(error)[:80]])
RESULT = refused
"""


def test_hostile_numbers_are_refused_and_recorded(
    exchange_service: tuple[Service, str], pg_conn: psycopg.Connection
) -> None:
    _, base = exchange_service
    body = {"strategy_id": "edges", "user_id": "u1", "code": HOSTILE, "execution_interval": 3600, "auto_start": False}
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as client:
        assert client.post("/strategies/deploy", json=body).status_code == 201
        outcome = run_once(client, "edges")
        listed = client.get("/strategies/edges/orders").json()["items"]
    assert outcome["status"] == "succeeded", outcome.get("error")
    refused = outcome["result"]
    assert isinstance(refused, list) and len(refused) == 6
    for kind, message in refused[:5]:
        assert kind == "invalid_request" and message.startswith("create_order: total_quantity"), message
    assert refused[5][0] == "invalid_request" and "from_timestamp" in refused[5][1]
    rows = pg_conn.execute("SELECT status, total_quantity FROM orders WHERE strategy_id = 'edges'").fetchall()
    assert rows == [("refused", None)] * 5
    assert len(listed) == 5 and all(o["status"] == "refused" for o in listed)
