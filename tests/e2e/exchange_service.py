"""A `serve` process trading against a fake CoinDCX, shared by the exchange and seed-contract tests
(registered for every end-to-end module by `tests/e2e/conftest.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Service, service_env
from tests.e2e.test_service import start_serve
from tests.exchange.fake_coindcx import FakeCoinDCX


@pytest.fixture
def exchange() -> Iterator[FakeCoinDCX]:
    fake = FakeCoinDCX().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def exchange_service(database_url: str, tmp_path: Path, exchange: FakeCoinDCX) -> Iterator[tuple[Service, str]]:
    """`serve` on the test database, its exchange hosts pointed at the fake; its exit code checked."""
    env = service_env(database_url, coindcx_api_url=exchange.url, coindcx_public_url=exchange.url)
    started, base = start_serve(env, tmp_path, "serve")
    try:
        yield started, base
    finally:
        assert started.terminate() == 0, started.log()[-3000:]


def run_once(client: httpx.Client, strategy_id: str) -> dict[str, object]:
    """Run the strategy now and wait for its outcome (the API's execute?wait)."""
    response = client.post(f"/strategies/{strategy_id}/execute", params={"wait": 30})
    assert response.status_code == 200, response.text
    return dict(response.json())
