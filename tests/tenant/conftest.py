"""The tenant API over a real Store on the test's own migrated database, with a fixed JWT secret."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from api.tenant_auth import TenantAuth
from tests.api.conftest import BuildClient, build_client  # noqa: F401 - the fixture, re-exported

JWT_SECRET = "tenant-test-secret-0123456789abcdef-xyz"
AUTH = TenantAuth(JWT_SECRET)
CODE = "STATE['n'] = STATE.get('n', 0) + 1\nprint('run', STATE['n'])\n"


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {AUTH.mint(user_id)}"}


def raw_token(claims: dict[str, Any], *, key: str = JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm)


def future() -> int:
    return int(time.time()) + 3600


def start_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "bot-1", "code": CODE, "config": {"pair": "BTCUSDT"}, "executionInterval": 5}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.fixture
def tenant_client(build_client: BuildClient) -> TestClient:  # noqa: F811
    client = build_client(jwt_secret=JWT_SECRET)
    client.headers.pop("Authorization")  # the executor token: each test says who it is
    return client
