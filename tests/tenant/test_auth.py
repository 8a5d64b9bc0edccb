"""Tenant JWTs: HS256 only, `sub` and `exp` required and checked; the executor token and a tenant JWT
never open each other's routes."""

from __future__ import annotations

import base64
import json
import time

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import TOKEN, BuildClient
from tests.tenant.conftest import JWT_SECRET, bearer, future, raw_token, start_body

TENANT_ROUTES = [
    ("POST", "/api/bot/start"),
    ("POST", "/api/bot/stop"),
    ("GET", "/api/bot/deployments"),
    ("GET", "/api/bot/deployments/d1"),
    ("DELETE", "/api/bot/deployments/d1"),
    ("POST", "/api/bot/deployments/d1/run"),
]


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "no token": None,
    "executor token": TOKEN,
    "garbage": "not-a-jwt",
    "alg none": _unsigned({"sub": "alice", "exp": future()}),
    "HS384": raw_token({"sub": "alice", "exp": future()}, algorithm="HS384"),
    "HS512": raw_token({"sub": "alice", "exp": future()}, algorithm="HS512"),
    "wrong key": raw_token({"sub": "alice", "exp": future()}, key="another-secret-0123456789abcdef-xyz"),
    "no exp": raw_token({"sub": "alice"}),
    "expired": raw_token({"sub": "alice", "exp": int(time.time()) - 60}),
    "no sub": raw_token({"exp": future()}),
    "sub not a string": raw_token({"sub": 42, "exp": future()}),
    "sub not a user id": raw_token({"sub": "a b", "exp": future()}),
    "exp not a number": raw_token({"sub": "alice", "exp": "tomorrow"}),
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
def test_every_tenant_route_refuses_a_bad_token(tenant_client: TestClient, name: str) -> None:
    token = BAD_TOKENS[name]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for method, path in TENANT_ROUTES:
        body = start_body() if path == "/api/bot/start" else {"deploymentId": "d1"}
        response = tenant_client.request(method, path, headers=headers, json=body if method == "POST" else None)
        assert response.status_code == 401, (name, method, path, response.text)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_messages_say_what_is_wrong(tenant_client: TestClient) -> None:
    def message(token: str) -> str:
        response = tenant_client.get("/api/bot/deployments", headers={"Authorization": f"Bearer {token}"})
        return str(response.json()["message"])

    assert "expired" in message(str(BAD_TOKENS["expired"]))
    assert "'exp'" in message(str(BAD_TOKENS["no exp"]))
    assert "HS256" in message(str(BAD_TOKENS["HS384"]))
    assert "signature" in message(str(BAD_TOKENS["wrong key"]))


def test_a_tenant_jwt_does_not_open_the_executor_api(tenant_client: TestClient) -> None:
    for method, path in [("GET", "/strategies"), ("POST", "/strategies/deploy"), ("GET", "/strategies/x/status")]:
        response = tenant_client.request(method, path, headers=bearer("alice"))
        assert response.status_code == 401, (method, path)


def test_a_valid_token_is_accepted_and_the_executor_token_still_works_on_its_own_routes(
    tenant_client: TestClient,
) -> None:
    assert tenant_client.get("/api/bot/deployments", headers=bearer("alice")).status_code == 200
    assert tenant_client.get("/strategies", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_jwt_secret_the_tenant_api_says_so(build_client: BuildClient) -> None:
    client = build_client()
    response = client.get("/api/bot/deployments", headers=bearer("alice"))
    assert response.status_code == 503
    assert "JWT_SECRET" in response.json()["message"]


def test_a_token_minted_by_the_cli_is_accepted(tenant_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.cli import main

    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused/db")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["token", "--user", "carol", "--ttl", "120"]) == 0
    token = out.getvalue().strip()
    response = tenant_client.get("/api/bot/deployments", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "carol"
    assert 100 <= claims["exp"] - claims["iat"] <= 120
