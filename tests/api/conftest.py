"""The executor API over a real Store on the test's own migrated database, with a fixed token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from reconciler.settings import Settings
from reconciler.storage.api_store import Store
from reconciler.storage.db import create_engine

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY_ID = "test-key-1"


def fake_seal(strategy_id: str, api_key: str, api_secret: str) -> tuple[str, bytes]:
    """Not encryption: a reversible scramble, so tests can tell sealed bytes from plaintext."""
    return KEY_ID, bytes(b ^ 0x5A for b in json.dumps([strategy_id, api_key, api_secret]).encode())


def unseal(ciphertext: bytes) -> list[str]:
    return json.loads(bytes(b ^ 0x5A for b in ciphertext))


BuildClient = Callable[..., TestClient]


@pytest.fixture
def build_client(database_url: str) -> Iterator[BuildClient]:
    """Build a client over an app; keyword arguments override settings and create_app's options.

    The TestClient is entered (one event loop for its lifetime, as the async engine's pool needs) and
    the engine is disposed on that loop at the end: the app itself owns no engine.
    """
    with ExitStack() as stack:

        def build(
            *, url: str | None = None, health_timeout: float = 2.0, operation_timeout: float = 10.0, **overrides: Any
        ) -> TestClient:
            names = ("seal_credentials", "check_code", "replica", "seal_webhook_secret")
            app_options = {k: overrides.pop(k) for k in names if k in overrides}
            app_options.setdefault("seal_credentials", fake_seal)
            settings = Settings(**{"executor_api_token": TOKEN, **overrides})
            engine = create_engine(url or database_url, pool_size=2)
            app = create_app(
                settings,
                Store(engine, health_timeout=health_timeout, operation_timeout=operation_timeout),
                **app_options,
            )
            client = stack.enter_context(TestClient(app, headers=AUTH, raise_server_exceptions=False))
            portal = client.portal
            assert portal is not None
            stack.callback(lambda: portal.call(engine.dispose))
            return client

        yield build


@pytest.fixture
def client(build_client: BuildClient) -> TestClient:
    return build_client()


def deploy_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy_id": "s1",
        "user_id": "u1",
        "name": "first",
        "code": "x = 1\n",
        "config": {"pair": "BTCUSDT"},
        "execution_interval": 5,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}
