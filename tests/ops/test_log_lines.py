"""A real service's whole log: JSON lines with the execution's fields, and not one secret in it.

The service runs with LOG_LEVEL=DEBUG and LOG_FORMAT=json, a live-exchange strategy with credentials
trades against a fake CoinDCX on loopback (signed requests, a refused order, a wrong key), and then
every byte the service logged is searched for the API secret, the API key, the encryption key and
the API token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import ENCRYPTION_KEY, TOKEN, service_env
from tests.exchange.fake_coindcx import FakeCoinDCX
from tests.ops.conftest import AUTH, start

pytestmark = pytest.mark.slow

API_KEY = "live-key-" + secrets.token_hex(16)
API_SECRET = "live-secret-" + secrets.token_hex(24)
WRONG_SECRET = "wrong-secret-" + secrets.token_hex(24)

TRADER = """\
log("balances", len(client.get_balances()))
ticker = [t for t in client.get_ticker() if t["market"] == "BTCUSDT"][0]
order = client.create_order("buy", "limit_order", "BTCUSDT", 0.001, float(ticker["last_price"]) / 2)
try:
    client.create_order("buy", "market_order", "BTCUSDT", 1000)
except ExchangeError as error:
    log("refused:", error)
RESULT = order["id"]
"""


@pytest.fixture
def exchange() -> Iterator[FakeCoinDCX]:
    fake = FakeCoinDCX().start()
    fake.state.keys[API_KEY] = API_SECRET
    try:
        yield fake
    finally:
        fake.stop()


def test_execution_lines_carry_their_fields_and_no_secret_is_logged(
    database_url: str, tmp_path: Path, exchange: FakeCoinDCX
) -> None:
    env = service_env(
        database_url,
        log_level="DEBUG",
        log_format="json",
        coindcx_api_url=exchange.url,
        coindcx_public_url=exchange.url,
    )
    running = start("serve", env, tmp_path, "serve")
    try:
        with httpx.Client(base_url=running.base, headers=AUTH, timeout=60) as client:
            spec = {"user_id": "u1", "execution_interval": 3600, "auto_start": False, "exchange": "coindcx"}
            for strategy_id, secret in (("trader", API_SECRET), ("wrong", WRONG_SECRET)):
                body = {**spec, "strategy_id": strategy_id, "code": TRADER, "api_key": API_KEY, "api_secret": secret}
                deployed = client.post("/strategies/deploy", json=body)
                assert deployed.status_code == 201, deployed.text
            traded = client.post("/strategies/trader/execute", params={"wait": 30}).json()
            assert traded["status"] == "succeeded", traded
            assert "refused:" in traded["output"]
            wrong = client.post("/strategies/wrong/execute", params={"wait": 30}).json()
            assert wrong["status"] == "failed", wrong  # the exchange refuses the signature
    finally:
        assert running.service.terminate() == 0
    signed = [headers for _, _, _, headers in exchange.state.requests if headers.get("x-auth-apikey") == API_KEY]
    assert signed, "the broker never called the exchange with the strategy's key"

    log = running.service.log()
    for secret in (API_SECRET, WRONG_SECRET, API_KEY, ENCRYPTION_KEY, ENCRYPTION_KEY.partition(":")[2], TOKEN):
        assert secret not in log, f"a secret is in the log: {secret[:12]}..."

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(lines) > 10 and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    ids = {traded["execution_id"]: "trader", wrong["execution_id"]: "wrong"}
    about = [line for line in lines if any(execution_id in line["message"] for execution_id in ids)]
    assert {line["execution_id"] for line in about} == set(ids), about
    for line in about:
        assert line["strategy_id"] == ids[line["execution_id"]] and line["replica"] == traded["replica_id"], line
