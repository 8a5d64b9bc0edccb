"""The API's side of risk limits and alerts: `risk` validated at deploy and shown by the status
routes with any halt; webhooks registered with a secret shown once and stored sealed."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from api.tenant_auth import TenantAuth
from reconciler.crypto import CredentialCipher, Sealed, generate_key
from reconciler.webhook_secrets import open_secret, seal_secret
from tests.api.conftest import BuildClient, deploy_body

CIPHER = CredentialCipher.from_key_string(generate_key("hooks"))


def seal(webhook_id: uuid.UUID, secret: str) -> tuple[str, bytes]:
    sealed = seal_secret(CIPHER, webhook_id, secret)
    return sealed.key_id, sealed.ciphertext


@pytest.fixture
def hooks(build_client: BuildClient) -> TestClient:
    return build_client(seal_webhook_secret=seal)


RISK = {"max_daily_loss": 50, "max_drawdown_pct": 12.5, "max_position": {"BTCUSDT": 0.5}, "max_consecutive_failures": 3}


def test_risk_is_stored_with_the_spec_and_shown_by_the_routes(client: TestClient) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(risk=RISK))
    assert response.status_code == 201, response.text
    expected = {**RISK, "on_breach": "stop", "currency": "USDT"}
    assert response.json()["risk"] == expected
    assert client.get("/strategies/s1").json()["risk"] == expected
    status = client.get("/strategies/s1/status").json()
    assert status["risk"] == expected and status["halt"] is None
    # Without a risk object: none.
    client.post("/strategies/deploy", json=deploy_body(strategy_id="s2"))
    assert client.get("/strategies/s2/status").json()["risk"] == {}


@pytest.mark.parametrize(
    ("risk", "reason"),
    [
        ({"max_daily_loss": -1}, "greater than 0"),
        ({"max_drawdown_pct": 150}, "less than 100"),
        ({"max_loss": 5}, "unknown field"),
        ({"on_breach": "later"}, "'stop' or 'pause'"),
        ({"max_drawdown_pct": 5, "on_breach": "pause"}, "risk.resume_after: required with on_breach 'pause'"),
        ({"max_position": {"BTCUSDT": 0}}, "risk.max_position"),
        ({"max_consecutive_failures": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_risk_is_a_422_naming_the_field(client: TestClient, risk: dict[str, Any], reason: str) -> None:
    response = client.post("/strategies/deploy", json=deploy_body(risk=risk))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["field"].startswith("risk") and reason in d["reason"] for d in detail), detail


def test_a_halt_is_shown_with_its_limit_value_and_time(client: TestClient, pg_conn: psycopg.Connection) -> None:
    client.post("/strategies/deploy", json=deploy_body(risk={"max_daily_loss": 50, "on_breach": "pause"}))
    pg_conn.execute(
        "INSERT INTO strategy_status (strategy_id, status, observed_generation, halted_at, halt_limit, halt_value, "
        "halt_threshold, resume_at, status_reason) VALUES ('s1', 'halted', 1, '2026-11-27T10:00:00Z', "
        "'max_daily_loss', 61.5, 50, '2026-11-28T00:00:00Z', 'halted by max_daily_loss: ...')"
    )
    status = client.get("/strategies/s1/status").json()
    assert status["status"] == "halted"
    assert status["halt"] == {
        "limit": "max_daily_loss",
        "value": "61.5",
        "threshold": "50",
        "halted_at": "2026-11-27T10:00:00Z",
        "resume_at": "2026-11-28T00:00:00Z",
    }
    assert client.get("/strategies", params={"status": "halted"}).json()["items"][0]["strategy_id"] == "s1"
    # `start` is the person's explicit answer to a halt: it is on record in the spec.
    started = client.post("/strategies/s1/start")
    assert started.status_code == 200
    (started_at,) = pg_conn.execute("SELECT started_at FROM strategies WHERE strategy_id = 's1'").fetchone()  # type: ignore[misc]
    assert started_at is not None


def test_webhooks_secret_is_returned_once_and_sealed(hooks: TestClient, pg_conn: psycopg.Connection) -> None:
    body = {"user_id": "u1", "url": "https://example.test/hook", "events": ["halted", "resumed", "halted"]}
    response = hooks.post("/webhooks", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["events"] == ["halted", "resumed"]
    webhook_id = uuid.UUID(created["webhook_id"])
    # Never again in any answer; sealed in the row, and it opens only for this webhook.
    listed = hooks.get("/webhooks", params={"user_id": "u1"}).json()["items"]
    assert [w["webhook_id"] for w in listed] == [str(webhook_id)] and "secret" not in listed[0]
    assert "secret" not in hooks.get(f"/webhooks/{webhook_id}").json()
    key_id, sealed = pg_conn.execute("SELECT key_id, secret FROM webhooks").fetchone()  # type: ignore[misc]
    assert secret.encode() not in bytes(sealed)
    assert open_secret(CIPHER, webhook_id, Sealed(key_id, bytes(sealed))) == secret
    assert hooks.get(f"/webhooks/{webhook_id}/deliveries").json() == {"items": []}
    assert hooks.delete(f"/webhooks/{webhook_id}").status_code == 200
    assert hooks.get(f"/webhooks/{webhook_id}").status_code == 404
    assert hooks.get("/webhooks").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "url": "ftp://example.test/", "events": ["halted"]}, "url"),
        ({"user_id": "u1", "url": "http:///nohost", "events": ["halted"]}, "url"),
        ({"user_id": "u1", "url": "https://example.test/", "events": []}, "events"),
        ({"user_id": "u1", "url": "https://example.test/", "events": ["everything"]}, "events.0"),
        ({"user_id": "u1", "url": "https://example.test/", "events": ["halted"], "secret": "x"}, "secret"),
    ],
)
def test_bad_webhooks_are_422(hooks: TestClient, body: dict[str, Any], field: str) -> None:
    response = hooks.post("/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field


def test_webhooks_need_an_encryption_key(client: TestClient) -> None:
    response = client.post("/webhooks", json={"user_id": "u1", "url": "https://example.test/", "events": ["halted"]})
    assert response.status_code == 422
    assert "ENCRYPTION_KEY" in response.json()["detail"][0]["reason"]


def test_unknown_webhook_ids(hooks: TestClient) -> None:
    assert hooks.get(f"/webhooks/{uuid.uuid4()}").status_code == 404
    assert hooks.get(f"/webhooks/{uuid.uuid4()}/deliveries").status_code == 404
    assert hooks.delete("/webhooks/not-a-uuid").status_code == 422


def test_the_tenant_api_manages_only_the_token_users_webhooks(build_client: BuildClient) -> None:
    secret = "tenant-test-secret-0123456789-0123456789"
    client = build_client(seal_webhook_secret=seal, jwt_secret=secret)

    def as_user(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TenantAuth(secret).mint(user)}"}

    created = client.post(
        "/api/webhooks", headers=as_user("alice"), json={"url": "https://alice.test/h", "events": ["halted"]}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"webhookId", "url", "events", "createdAt", "secret"}
    assert client.post("/api/webhooks", headers=as_user("alice"), json={"url": "x", "events": []}).status_code == 422
    assert [w["webhookId"] for w in client.get("/api/webhooks", headers=as_user("alice")).json()["items"]] == [
        body["webhookId"]
    ]
    assert client.get("/api/webhooks", headers=as_user("bob")).json()["items"] == []
    # Bob cannot delete Alice's: it answers like a missing one.
    assert client.delete(f"/api/webhooks/{body['webhookId']}", headers=as_user("bob")).status_code == 404
    assert client.delete(f"/api/webhooks/{body['webhookId']}", headers=as_user("alice")).status_code == 200
    assert client.get("/api/webhooks", headers=as_user("alice")).json()["items"] == []
    assert client.get("/api/webhooks").status_code == 401  # the executor token is not a user's JWT
