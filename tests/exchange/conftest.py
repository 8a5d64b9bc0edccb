"""Fixtures for the exchange tests: the fake CoinDCX server (databases come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.exchange.fake_coindcx import FakeCoinDCX


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeCoinDCX]:
    server = FakeCoinDCX().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeCoinDCX) -> FakeCoinDCX:
    fake_server.state.reset()
    return fake_server
