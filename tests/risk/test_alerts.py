"""The webhook sender over real PostgreSQL and a real local receiver: signed bodies, retries with
backoff recorded per attempt, giving up, and a stable event id across attempts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from reconciler import alerts
from reconciler.alerts import WebhookSender
from reconciler.crypto import CredentialCipher, generate_key
from reconciler.settings import Settings
from reconciler.storage.alert_store import AlertStore
from reconciler.storage.db import create_engine
from reconciler.storage.risk_writes import enqueue_alert
from reconciler.webhook_secrets import new_secret, seal_secret
from tests.risk.receiver import Receiver

CIPHER = CredentialCipher.from_key_string(generate_key("alerts"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.start()
    try:
        yield hook
    finally:
        hook.stop()


def register(conn: psycopg.Connection, url: str, events: list[str], user_id: str = "u1") -> str:
    webhook_id = uuid.uuid4()
    secret = new_secret()
    sealed = seal_secret(CIPHER, webhook_id, secret)
    conn.execute(
        "INSERT INTO webhooks (webhook_id, user_id, url, events, key_id, secret) VALUES (%s, %s, %s, %s, %s, %s)",
        (webhook_id, user_id, url, events, sealed.key_id, sealed.ciphertext),
    )
    return secret


def strategy(conn: psycopg.Connection, strategy_id: str = "s1", user_id: str = "u1") -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval) VALUES (%s, %s, %s, 'x=1', 5)",
        (strategy_id, user_id, strategy_id),
    )


def send(database_url: str, events: list[tuple[str, str, dict[str, Any]]], passes: int, **settings: Any) -> int:
    """Enqueue the events (each in its own transaction, as their causes do), then run sender passes."""

    async def main() -> int:
        engine = create_engine(database_url, pool_size=2)
        sender = WebhookSender(
            Settings(**{"alert_timeout_seconds": 2.0, **settings}), AlertStore(engine, replica_id="r1"), CIPHER
        )
        try:
            for strategy_id, event, payload in events:
                async with engine.begin() as conn:
                    await enqueue_alert(conn, strategy_id, event, payload)
            for _ in range(passes):
                wait = await sender.pass_once()
                if wait > 1:
                    break
                await asyncio.sleep(wait)
            return sender.sent
        finally:
            await sender._http.aclose()
            await engine.dispose()

    return asyncio.run(main())


def test_an_alert_is_signed_and_delivered_once_to_each_webhook_that_wants_it(
    database_url: str, pg_conn: psycopg.Connection, receiver: Receiver
) -> None:
    hook_url = receiver.url
    strategy(pg_conn)
    strategy(pg_conn, "other-users", user_id="u2")
    receiver.secrets.append(register(pg_conn, hook_url, ["halted"]))
    receiver.secrets.append(register(pg_conn, hook_url, ["halted", "resumed"]))
    register(pg_conn, hook_url, ["halted"], user_id="u2")  # another user's webhook hears nothing of u1
    sent = send(database_url, [("s1", "halted", {"limit": "max_daily_loss"}), ("s1", "resumed", {})], passes=3)
    assert sent == 3
    assert sorted(r.event for r in receiver.requests) == ["halted", "halted", "resumed"]
    assert all(r.signature_ok for r in receiver.requests)
    body = receiver.requests[0].body
    assert body["strategy_id"] == "s1" and body["user_id"] == "u1" and body["id"] == receiver.requests[0].event_id
    assert body["data"]["strategy_id"] == "s1"
    rows = pg_conn.execute(
        "SELECT d.delivery_id, d.delivered_at IS NOT NULL, d.attempts, a.status_code, a.finished_at IS NOT NULL "
        "FROM alert_deliveries d JOIN alert_attempts a USING (delivery_id)"
    ).fetchall()
    assert len(rows) == 3 and all(r[1:] == (True, 1, 200, True) for r in rows)
    assert sorted(str(r[0]) for r in rows) == sorted(receiver.processed)


def test_failures_are_retried_with_backoff_and_every_attempt_is_recorded(
    database_url: str, pg_conn: psycopg.Connection, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts, "BACKOFF_BASE_SECONDS", 0.05)
    hook_url = receiver.url
    strategy(pg_conn)
    receiver.secrets.append(register(pg_conn, hook_url, ["execution_lost"]))
    receiver.failures.extend([500, 503])
    assert send(database_url, [("s1", "execution_lost", {"execution_id": "e1"})], passes=10) == 1
    assert [r.attempt for r in receiver.requests] == [1, 2, 3]
    assert len(set(receiver.ids())) == 1  # the same event id on every attempt
    assert len(receiver.processed) == 1
    attempts = pg_conn.execute("SELECT attempt, status_code, error FROM alert_attempts ORDER BY attempt").fetchall()
    assert attempts == [(1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 200, None)]
    (delivered, last_error) = pg_conn.execute("SELECT delivered_at, last_error FROM alert_deliveries").fetchone()  # type: ignore[misc]
    assert delivered is not None and last_error is None


def test_an_unreachable_webhook_is_given_up_after_the_last_attempt(
    database_url: str, pg_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts, "BACKOFF_BASE_SECONDS", 0.05)
    strategy(pg_conn)
    register(pg_conn, "http://127.0.0.1:9/nothing-listens", ["halted"])
    assert send(database_url, [("s1", "halted", {})], passes=10, alert_max_attempts=3) == 0
    row = pg_conn.execute("SELECT attempts, abandoned_at, delivered_at, last_error FROM alert_deliveries").fetchone()
    assert row is not None
    attempts, abandoned, delivered, error = row
    assert attempts == 3 and abandoned is not None and delivered is None and "ConnectError" in error
    (recorded,) = pg_conn.execute("SELECT count(*) FROM alert_attempts WHERE finished_at IS NOT NULL").fetchone()  # type: ignore[misc]
    assert recorded == 3


def test_the_body_is_the_same_bytes_on_every_attempt(database_url: str, pg_conn: psycopg.Connection) -> None:
    strategy(pg_conn)
    register(pg_conn, "http://127.0.0.1:9/", ["halted"])

    async def claim_twice() -> tuple[bytes, bytes]:
        engine = create_engine(database_url, pool_size=2)
        try:
            async with engine.begin() as conn:
                await enqueue_alert(conn, "s1", "halted", {"value": "61.5"})
            store = AlertStore(engine, replica_id="r1")
            (first,) = await store.claim(5, lease_seconds=0.01)
            await asyncio.sleep(0.05)  # the lease runs out, as if the sender died
            (second,) = await AlertStore(engine, replica_id="r2").claim(5, lease_seconds=30)
            assert (first.attempt, second.attempt) == (1, 2)
            return alerts.body_of(first), alerts.body_of(second)
        finally:
            await engine.dispose()

    first, second = asyncio.run(claim_twice())
    assert first == second
    assert json.loads(first)["data"] == {"strategy_id": "s1", "value": "61.5"}
