"""Risk limits and alerts through real replica processes: a strategy buying in a falling market is
halted at its daily-loss limit and sends nothing after the breach; a crashing one halts after three
failures and resumes on schedule; a local receiver gets every alert exactly once (deduplicating on
the event id) with a valid signature, across a replica killed with SIGKILL between sending an alert
and recording that it was delivered."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from reconciler.crypto import CredentialCipher
from reconciler.webhook_secrets import new_secret, seal_secret
from tests.e2e.harness import ENCRYPTION_KEY, Service, service_env, wait_for
from tests.exchange.fake_coindcx import FakeCoinDCX
from tests.risk.receiver import Receiver

pytestmark = pytest.mark.slow

EVENTS = ["halted", "resumed", "consecutive_failures", "order_filled", "order_refused", "execution_lost"]

# Buys high in a falling market, twice per run: the second order shows nothing is sent after a breach.
LOSER = """
for quantity in (0.015, 0.001):
    try:
        client.create_order('buy', 'market_order', 'BTCUSDT', quantity)
        print('bought', quantity)
    except Exception as error:
        print('refused', error)
"""
CRASHY = "RESULT = 1 / 0\n"
SLEEPER = "import time\ntime.sleep(4)\n"


@pytest.fixture
def fake_exchange() -> Iterator[FakeCoinDCX]:
    server = FakeCoinDCX().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver(hold_first=True)
    hook.start()
    try:
        yield hook
    finally:
        hook.stop()


def deploy(conn: psycopg.Connection, strategy_id: str, code: str, risk: dict[str, object] | None = None) -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, risk) "
        "VALUES (%s, 'u1', %s, %s, 1, %s)",
        (strategy_id, strategy_id, code, json.dumps(risk or {})),
    )


def register_webhook(conn: psycopg.Connection, url: str) -> str:
    """What POST /webhooks stores (the API's own tests cover the route): the secret sealed with the
    service's ENCRYPTION_KEY, which the replicas open to sign."""
    webhook_id = uuid.uuid4()
    secret = new_secret()
    sealed = seal_secret(CredentialCipher.from_key_string(ENCRYPTION_KEY), webhook_id, secret)
    conn.execute(
        "INSERT INTO webhooks (webhook_id, user_id, url, events, key_id, secret) VALUES (%s, 'u1', %s, %s, %s, %s)",
        (webhook_id, url, EVENTS, sealed.key_id, sealed.ciphertext),
    )
    return secret


def status_of(conn: psycopg.Connection, strategy_id: str) -> dict[str, object]:
    cursor = conn.execute("SELECT * FROM strategy_status WHERE strategy_id = %s", (strategy_id,))
    row = cursor.fetchone()
    if row is None or cursor.description is None:
        return {}
    return dict(zip([d.name for d in cursor.description], row, strict=True))


def test_limits_halt_and_every_alert_arrives_once_across_a_killed_replica(
    database_url: str,
    pg_conn: psycopg.Connection,
    fake_exchange: FakeCoinDCX,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    receiver.secrets.append(register_webhook(pg_conn, receiver.url))
    deploy(pg_conn, "loser", LOSER, {"max_daily_loss": 30, "on_breach": "pause"})
    deploy(pg_conn, "crashy", CRASHY, {"max_consecutive_failures": 3, "on_breach": "pause", "resume_after": 2})
    deploy(pg_conn, "sleeper", SLEEPER)
    env = service_env(
        database_url,
        paper_price_feed="coindcx",
        coindcx_api_url=fake_exchange.url,
        coindcx_public_url=fake_exchange.url,
        paper_initial_balances='{"USDT": 10000}',
        alert_timeout_seconds=2,
    )
    services = [Service("worker", env, tmp_path, "worker-a")]
    falling = threading.Event()

    def fall() -> None:
        # A falling market: 0.5 % down every half second, whatever the replicas are doing.
        while not falling.wait(0.5):
            fake_exchange.state.btc_price *= 0.995

    mover = threading.Thread(target=fall, daemon=True)
    mover.start()
    try:
        # The first alert to arrive is held by the receiver: the replica has sent it and waits for
        # the answer. Killed now, it never records the delivery.
        assert receiver.held.wait(90), services[0].log()
        held_id = receiver.requests[0].event_id
        services[0].kill()
        receiver.release.set()
        attempt = pg_conn.execute(
            "SELECT attempt, finished_at FROM alert_attempts WHERE delivery_id = %s", (held_id,)
        ).fetchall()
        assert attempt == [(1, None)]  # on record as started, never finished

        services.append(Service("worker", env, tmp_path, "worker-b"))
        # The survivor sends it again once the dead sender's lease runs out: same event id.
        wait_for(lambda: receiver.ids().count(held_id) >= 2, 60, "the held alert to be sent again")
        # The sleeper's execution on the killed replica is lost: an alert of its own.
        wait_for(lambda: any(r.event == "execution_lost" for r in receiver.requests), 60, "the execution_lost alert")
        wait_for(lambda: status_of(pg_conn, "loser").get("status") == "halted", 90, "the loser to be halted")
        # The crashing strategy halts after three failures, pauses 2 s, resumes, and halts again.
        wait_for(
            lambda: [r.body["strategy_id"] for r in receiver.requests if r.event == "resumed"].count("crashy") >= 1,
            60,
            "the crashing strategy to resume",
        )
        # Every alert in the outbox delivered: nothing lost.
        wait_for(
            lambda: (
                pg_conn.execute("SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NULL").fetchone()[0] == 0
            ),
            60,
            "every alert to be delivered",
        )
    finally:
        falling.set()
        for service in services:
            service.stop()

    # --- the loser: halted within the execution that crossed the limit, nothing sent after it -----
    loser = status_of(pg_conn, "loser")
    assert loser["halt_limit"] == "max_daily_loss" and loser["halt_value"] >= 30  # type: ignore[operator]
    assert loser["resume_at"] is not None  # the next UTC midnight
    orders = pg_conn.execute(
        "SELECT execution_id, status, error, created_at FROM orders WHERE strategy_id = 'loser' ORDER BY created_at"
    ).fetchall()
    refusals = [i for i, o in enumerate(orders) if o[1] == "refused"]
    if refusals:
        # The guard saw the breach at an order: that order and every later one of the run refused.
        first_refusal = refusals[0]
        assert "max_daily_loss" in orders[first_refusal][2]
        assert all(o[1] == "refused" for o in orders[first_refusal:])  # nothing was sent after the breach
        assert len({o[0] for o in orders[first_refusal:]}) == 1  # the breaching execution was the last to trade
        breach_at = orders[first_refusal][3]
    else:
        # The market fell past the limit between the run's orders and its end: the closing equity
        # measure of that same execution saw the breach and halted it.
        breach_at = loser["halted_at"]
    (sent_after,) = pg_conn.execute(
        "SELECT count(*) FROM paper_orders WHERE strategy_id = 'loser' AND created_at > %s", (breach_at,)
    ).fetchone()  # type: ignore[misc]
    assert sent_after == 0
    (later_runs,) = pg_conn.execute(
        "SELECT count(*) FROM executions WHERE strategy_id = 'loser' AND claimed_at > %s", (loser["halted_at"],)
    ).fetchone()  # type: ignore[misc]
    assert later_runs == 0  # a halted strategy is not claimed

    # --- the alerts, as a receiver deduplicating on the event id sees them ---------------------------
    assert all(r.signature_ok for r in receiver.requests)
    delivered = {str(d): e for d, e in pg_conn.execute("SELECT delivery_id, event FROM alert_deliveries").fetchall()}
    assert sorted(receiver.processed) == sorted(delivered)  # each event exactly once...
    assert len(receiver.processed) == len(set(receiver.processed))
    assert receiver.ids().count(held_id) == 2  # ...though the held one was sent twice
    attempts = pg_conn.execute(
        "SELECT attempt, replica_id, finished_at IS NOT NULL, status_code FROM alert_attempts "
        "WHERE delivery_id = %s ORDER BY attempt",
        (held_id,),
    ).fetchall()
    assert [(a[0], a[2], a[3]) for a in attempts] == [(1, False, None), (2, True, 200)]
    assert attempts[0][1] != attempts[1][1]  # sent by the killed replica, then by the survivor
    by_strategy = [(r.body["strategy_id"], r.event) for r in receiver.requests if r.event_id in receiver.processed]
    assert ("loser", "halted") in by_strategy
    assert ("crashy", "consecutive_failures") in by_strategy and ("crashy", "halted") in by_strategy
    assert ("crashy", "resumed") in by_strategy and ("sleeper", "execution_lost") in by_strategy
    halted = next(r.body for r in receiver.requests if r.event == "halted" and r.body["strategy_id"] == "loser")
    assert halted["data"]["limit"] == "max_daily_loss" and float(halted["data"]["value"]) >= 30
    assert not any(r.event.startswith("order_") for r in receiver.requests)  # paper orders send no order alerts


def test_a_short_pause_ends_on_time_and_its_schedule_runs_no_tick_twice(
    database_url: str, pg_conn: psycopg.Connection, tmp_path: Path
) -> None:
    """A 2 s pause of a strategy with a 60 s interval, halted in its first execution: it resumes about
    2 s later (the halt wakes the replicas' reconcile pass, which learns when the pause ends), not at
    the next resync a minute away; its next run is one interval after the halt, not at once (nor on
    the tick that already ran); and the other strategy's claims go on throughout."""
    pg_conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, risk) "
        "VALUES ('pauser', 'u1', 'pauser', %s, 60, %s)",
        (CRASHY, json.dumps({"max_consecutive_failures": 1, "on_breach": "pause", "resume_after": 2})),
    )
    pg_conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval) "
        "VALUES ('ticker', 'u1', 'ticker', 'RESULT = 1', 1)"
    )
    service = Service("worker", service_env(database_url, resync_interval_seconds=60), tmp_path, "worker")
    try:
        halt = wait_for(
            lambda: status_of(pg_conn, "pauser").get("status") == "halted" and status_of(pg_conn, "pauser"),
            60,
            "the first execution to halt the strategy",
        )
        assert halt["resume_at"] is not None
        wait_for(lambda: status_of(pg_conn, "pauser").get("status") == "running", 15, "the pause to end")
        (late,) = pg_conn.execute("SELECT clock_timestamp() - %s", (halt["resume_at"],)).fetchone()  # type: ignore[misc]
        assert late.total_seconds() < 5, late
        # The other strategy's claims went on meanwhile: no claim failed on the paused one's tick.
        (after,) = pg_conn.execute(
            "SELECT count(*) FROM executions WHERE strategy_id = 'ticker' AND claimed_at > %s", (halt["resume_at"],)
        ).fetchone()  # type: ignore[misc]
        wait_for(
            lambda: (
                pg_conn.execute(
                    "SELECT count(*) FROM executions WHERE strategy_id = 'ticker' AND claimed_at > %s",
                    (halt["resume_at"],),
                ).fetchone()[0]  # type: ignore[index]
                >= after + 2
            ),
            15,
            "the other strategy to keep running",
        )
    finally:
        service.stop()
    ticks = pg_conn.execute(
        "SELECT count(*), count(DISTINCT scheduled_for) FROM executions WHERE strategy_id = 'pauser'"
    ).fetchone()
    assert ticks == (1, 1)  # its next tick is a minute after the first
    status = status_of(pg_conn, "pauser")
    assert status["next_execution_at"] == halt["halted_at"] + timedelta(seconds=60)  # type: ignore[operator]
    assert "duplicate key" not in service.log() and "Traceback" not in service.log(), service.log()
