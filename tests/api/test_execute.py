"""POST /strategies/{id}/execute: a run request row; with ?wait, the execution a replica ran for it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from reconciler.reconcile import decide
from reconciler.settings import Settings
from reconciler.storage.api_store import Store
from reconciler.storage.db import Database, create_engine, libpq_url
from reconciler.storage.replica_store import ReplicaStore
from tests.api.conftest import AUTH, TOKEN, deploy_body
from tests.api.replica import write_execution, write_status


@pytest.fixture
def deployed(client: TestClient) -> TestClient:
    assert client.post("/strategies/deploy", json=deploy_body()).status_code == 201
    return client


def test_execute_records_a_run_request(deployed: TestClient, pg_conn: psycopg.Connection) -> None:
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 202
    body = response.json()
    assert body["strategy_id"] == "s1"
    assert body["claimed_at"] is None and body["execution_id"] is None
    assert body["already_pending"] is False and body["request_count"] == 1
    row = pg_conn.execute("SELECT run_request_id, strategy_id, claimed_at, execution_id FROM run_requests").fetchall()
    assert row == [(body["run_request_id"], "s1", None, None)]
    # The API never writes executions.
    assert pg_conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


def _claim(conn: psycopg.Connection, run_request_id: int) -> uuid.UUID:
    """What a claim does to a pending request: an execution started for it, the request marked."""
    with conn.transaction():
        execution_id = write_execution(conn, status="running", trigger="manual", scheduled_for="2026-01-01T00:00:00Z")
        conn.execute(
            "UPDATE run_requests SET claimed_at = now(), execution_id = %s WHERE run_request_id = %s",
            (execution_id, run_request_id),
        )
    return execution_id


def test_an_execute_while_a_run_is_pending_joins_it(deployed: TestClient, pg_conn: psycopg.Connection) -> None:
    first = deployed.post("/strategies/s1/execute")
    again = deployed.post("/strategies/s1/execute")
    assert first.status_code == again.status_code == 202
    assert first.json()["already_pending"] is False
    assert again.json()["already_pending"] is True
    assert again.json()["run_request_id"] == first.json()["run_request_id"]
    assert again.json()["requested_at"] == first.json()["requested_at"]  # its place in the queue kept
    assert again.json()["request_count"] == 2
    rows = pg_conn.execute("SELECT run_request_id, request_count FROM run_requests").fetchall()
    assert rows == [(first.json()["run_request_id"], 2)]

    # Once a replica has claimed it, it is no longer pending: the next click is a run of its own.
    execution_id = _claim(pg_conn, first.json()["run_request_id"])
    later = deployed.post("/strategies/s1/execute").json()
    assert later["already_pending"] is False and later["request_count"] == 1
    assert later["run_request_id"] != first.json()["run_request_id"]
    claimed = pg_conn.execute(
        "SELECT execution_id, request_count FROM run_requests WHERE run_request_id = %s",
        (first.json()["run_request_id"],),
    ).fetchone()
    assert claimed == (execution_id, 2)


def test_twenty_concurrent_executes_leave_one_pending_request(deployed: TestClient, database_url: str) -> None:
    """Twenty clicks at once, each on a connection of its own: the unique index, not a read before the
    insert, decides, so exactly one inserts and the nineteen others join it."""

    async def click_twenty() -> list[httpx.Response]:
        engine = create_engine(database_url, pool_size=10)  # up to 20 connections: one per request
        app = create_app(Settings(executor_api_token=TOKEN), Store(engine), check_code=lambda code: None)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=AUTH) as client:
                return list(await asyncio.gather(*(client.post("/strategies/s1/execute") for _ in range(20))))
        finally:
            await engine.dispose()

    responses = asyncio.run(click_twenty())
    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses if r.status_code != 202]
    bodies = [r.json() for r in responses]
    assert len({b["run_request_id"] for b in bodies}) == 1
    assert sorted(b["already_pending"] for b in bodies) == [False] + [True] * 19
    assert sorted(b["request_count"] for b in bodies) == list(range(1, 21))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        rows = conn.execute("SELECT run_request_id, claimed_at, request_count FROM run_requests").fetchall()
    assert rows == [(bodies[0]["run_request_id"], None, 20)]


class SimulatedReplica(threading.Thread):
    """Claims the pending run request, then finishes its execution, from its own connection. With
    `min_requests`, it waits until the pending request stands for that many."""

    def __init__(
        self, database_url: str, *, finish_after: float, status: str = "succeeded", min_requests: int = 1
    ) -> None:
        super().__init__(daemon=True)
        self.url = libpq_url(database_url)
        self.finish_after = finish_after
        self.status = status
        self.min_requests = min_requests
        self.execution_id: uuid.UUID | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    row = conn.execute(
                        "SELECT run_request_id FROM run_requests WHERE claimed_at IS NULL AND request_count >= %s",
                        (self.min_requests,),
                    ).fetchone()
                    if row:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError("no run request appeared")
                self.execution_id = _claim(conn, row[0])
                time.sleep(self.finish_after)
                conn.execute(
                    "UPDATE executions SET status = %s, finished_at = now(), output = 'done\n' WHERE execution_id = %s",
                    (self.status, self.execution_id),
                )
        except BaseException as exc:
            self.error = exc


def test_wait_returns_the_execution_a_replica_ran(
    deployed: TestClient, database_url: str, pg_conn: psycopg.Connection
) -> None:
    replica = SimulatedReplica(database_url, finish_after=0.3, status="failed")
    replica.start()
    started = time.monotonic()
    response = deployed.post("/strategies/s1/execute?wait=10")
    elapsed = time.monotonic() - started
    replica.join(5)
    assert replica.error is None
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["execution_id"] == str(replica.execution_id)
    assert body["status"] == "failed"
    assert body["trigger"] == "manual"
    assert body["output"] == "done\n"
    assert body["finished_at"] is not None
    assert elapsed < 5
    # The request waited on committed rows only: no transaction left open by the API.
    idle = pg_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
    ).fetchone()
    assert idle == (0,)


def test_a_wait_on_a_joined_request_returns_the_execution_of_the_pending_one(
    deployed: TestClient, database_url: str, pg_conn: psycopg.Connection
) -> None:
    first = deployed.post("/strategies/s1/execute").json()
    # The replica claims only once the second request has joined the first, as one claim would.
    replica = SimulatedReplica(database_url, finish_after=0.3, min_requests=2)
    replica.start()
    response = deployed.post("/strategies/s1/execute?wait=10")
    replica.join(5)
    assert replica.error is None
    assert response.status_code == 200, response.text
    assert response.json()["execution_id"] == str(replica.execution_id)
    assert response.json()["status"] == "succeeded"
    rows = pg_conn.execute("SELECT run_request_id, execution_id, request_count FROM run_requests").fetchall()
    assert rows == [(first["run_request_id"], replica.execution_id, 2)]


def test_a_wait_on_a_joined_request_that_times_out_says_it_joined(deployed: TestClient) -> None:
    first = deployed.post("/strategies/s1/execute").json()
    response = deployed.post("/strategies/s1/execute?wait=0.2")
    assert response.status_code == 202
    body = response.json()
    assert body["run_request_id"] == first["run_request_id"]
    assert body["already_pending"] is True and body["request_count"] == 2
    assert body["execution"] is None


def _halt(pg_conn: psycopg.Connection, *, resume_at: str | None) -> None:
    write_status(
        pg_conn,
        status="halted",
        halted_at="2026-11-27T10:00:00Z",
        halt_limit="max_daily_loss",
        halt_value=61.5,
        halt_threshold=50,
        resume_at=resume_at,
        status_reason="halted by max_daily_loss: the loss today is 61.5 USDT, over the limit of 50 USDT",
    )


def test_execute_of_a_paused_strategy_is_409_saying_since_when_why_and_until_when(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    _halt(pg_conn, resume_at="2030-01-02T00:00:00Z")
    for path in ("/strategies/s1/execute", "/strategies/s1/execute?wait=5"):
        response = deployed.post(path)
        assert response.status_code == 409
        assert response.json() == {
            "error": "strategy_halted",
            "message": "strategy 's1' is halted by its risk guard since 2026-11-27T10:00:00Z (halted by"
            " max_daily_loss: the loss today is 61.5 USDT, over the limit of 50 USDT); it resumes by itself at"
            " 2030-01-02T00:00:00Z, or at once with POST /strategies/s1/start. No run was requested: run it"
            " once it has resumed.",
            # What the status's `halt` says, for a client to act on without parsing the message.
            "halt": {
                "limit": "max_daily_loss",
                "value": "61.5",
                "threshold": "50",
                "halted_at": "2026-11-27T10:00:00Z",
                "resume_at": "2030-01-02T00:00:00Z",
            },
        }
        assert response.json()["halt"] == deployed.get("/strategies/s1/status").json()["halt"]
    # Nothing recorded: no request piles up behind the halt.
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)


def test_execute_of_a_strategy_halted_until_started_is_409_naming_start(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    _halt(pg_conn, resume_at=None)
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 409
    message = response.json()["message"]
    assert "since 2026-11-27T10:00:00Z" in message
    assert "it stays halted until POST /strategies/s1/start resumes it" in message
    # resume_at stays in the object, null: no pause ends by itself, as the status says.
    assert response.json()["halt"] == deployed.get("/strategies/s1/status").json()["halt"]
    assert response.json()["halt"]["resume_at"] is None
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)
    # Being deleted outranks the halt: that refusal is the one that will still hold later.
    assert deployed.delete("/strategies/s1").status_code == 202
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 409
    assert response.json()["message"] == "strategy 's1' is being deleted; it can no longer be run"


def test_a_halt_whose_limit_was_not_recorded_is_still_a_clear_answer(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    """A `halted` row without its limit, value and threshold (the schema allows it; an operator's
    UPDATE can write it): the 409 and the status say what is known and null for the rest, never a 500."""
    write_status(pg_conn, status="halted", halted_at="2026-11-27T10:00:00Z")
    expected_halt = {
        "limit": None,
        "value": None,
        "threshold": None,
        "halted_at": "2026-11-27T10:00:00Z",
        "resume_at": None,
    }
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 409, response.text
    assert response.json() == {
        "error": "strategy_halted",
        "message": "strategy 's1' is halted by its risk guard since 2026-11-27T10:00:00Z (no limit is on"
        " record); it stays halted until POST /strategies/s1/start resumes it. No run was requested: run it"
        " once it has resumed.",
        "halt": expected_halt,
    }
    status = deployed.get("/strategies/s1/status")
    assert status.status_code == 200, status.text
    assert status.json()["halt"] == expected_halt
    # Start, the way out of a halt, answers with the status too (still `halted` until a pass runs).
    started = deployed.post("/strategies/s1/start")
    assert started.status_code == 200, started.text
    assert started.json()["halt"] == expected_halt
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)


@pytest.mark.parametrize(
    "lifted_by",
    ["a start after the halt", "a stop", "the end of the pause"],
)
def test_execute_once_the_spec_lifts_the_halt_is_recorded_before_a_replica_clears_it(
    deployed: TestClient, pg_conn: psycopg.Connection, lifted_by: str
) -> None:
    """The status row says `halted` until a reconcile pass has seen the change; the pass will lift it,
    so the request is recorded, and claimed once it has (`start` then `execute` in a script works)."""
    if lifted_by == "the end of the pause":
        _halt(pg_conn, resume_at="2026-01-01T00:00:00Z")  # in the past: the next pass resumes it
    else:
        _halt(pg_conn, resume_at=None)
        action = "start" if lifted_by == "a start after the halt" else "stop"
        pg_conn.execute("UPDATE strategy_status SET halted_at = now() - interval '1 minute'")
        assert deployed.post(f"/strategies/s1/{action}").status_code == 200
    assert pg_conn.execute("SELECT status FROM strategy_status").fetchone() == ("halted",)
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 202, response.text
    assert pg_conn.execute("SELECT count(*) FROM run_requests WHERE claimed_at IS NULL").fetchone() == (1,)


def _pass_then_claim(database_url: str) -> list[str]:
    """A real replica's reconcile pass, then its claim: the strategies it claimed a run of."""

    async def compiles(code: str) -> str | None:
        return None

    async def main() -> list[str]:
        engine = create_engine(database_url, pool_size=2)
        store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)
        try:
            await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
            await store.reconcile(decide, compiles)
            return [c.strategy_id for c in (await store.claim(5)).claims]
        finally:
            await store.db.close_lanes()
            await engine.dispose()

    return asyncio.run(main())


def test_a_halt_no_pass_will_lift_is_refused_not_left_waiting(
    deployed: TestClient, pg_conn: psycopg.Connection, database_url: str
) -> None:
    """A halt written by hand on a strategy whose stop a replica has already reconciled: no pass looks
    at it again and no claim takes a halted strategy's requests, so a 202 would wait forever. Refused
    with the halt; a stop made now lifts it (an ordinary stop), and the run is claimed."""
    assert deployed.post("/strategies/s1/stop").status_code == 200
    assert _pass_then_claim(database_url) == []
    pg_conn.execute(
        "UPDATE strategy_status SET status = 'halted', halted_at = now() - interval '1 hour',"
        " schedule_anchor_at = NULL, schedule_interval = NULL, next_execution_at = NULL"
    )
    refused = deployed.post("/strategies/s1/execute")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "strategy_halted"
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)
    # What the refusal agrees with: a pass and a claim leave the halt and take nothing.
    assert _pass_then_claim(database_url) == []
    assert pg_conn.execute("SELECT status FROM strategy_status").fetchone() == ("halted",)

    assert deployed.post("/strategies/s1/stop").status_code == 200
    assert deployed.post("/strategies/s1/execute").status_code == 202
    assert _pass_then_claim(database_url) == ["s1"]


def test_a_start_before_the_halt_does_not_lift_it(deployed: TestClient, pg_conn: psycopg.Connection) -> None:
    assert deployed.post("/strategies/s1/start").status_code == 200
    _halt(pg_conn, resume_at=None)
    pg_conn.execute("UPDATE strategy_status SET halted_at = now() + interval '1 second'")
    assert deployed.post("/strategies/s1/execute").status_code == 409


def test_wait_that_times_out_returns_202_with_the_request_so_far(deployed: TestClient, database_url: str) -> None:
    replica = SimulatedReplica(database_url, finish_after=3)
    replica.start()
    started = time.monotonic()
    response = deployed.post("/strategies/s1/execute?wait=0.6")
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert 0.5 < elapsed < 2.5
    body = response.json()
    assert body["run_request_id"] >= 1
    if body["execution"] is not None:  # claimed within the wait, still running
        assert body["execution"]["status"] == "running"
        assert body["execution_id"] == str(replica.execution_id)
    replica.join(5)


def test_wait_without_any_replica_times_out(deployed: TestClient) -> None:
    response = deployed.post("/strategies/s1/execute?wait=0.2")
    assert response.status_code == 202
    assert response.json()["execution"] is None


@pytest.mark.parametrize("wait", ["0", "-1", "61", "abc", "nan"])
def test_wait_out_of_range_is_422(deployed: TestClient, pg_conn: psycopg.Connection, wait: str) -> None:
    response = deployed.post(f"/strategies/s1/execute?wait={wait}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "wait"
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)


def test_unknown_query_parameter_is_422(deployed: TestClient) -> None:
    response = deployed.post("/strategies/s1/execute?wiat=5")
    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": "wiat", "reason": "unknown query parameter"}]


def test_execute_of_a_strategy_being_deleted_says_so_and_of_an_unknown_one_is_404(deployed: TestClient) -> None:
    assert deployed.delete("/strategies/s1").status_code == 202
    response = deployed.post("/strategies/s1/execute")
    assert response.status_code == 409
    assert response.json()["message"] == "strategy 's1' is being deleted; it can no longer be run"
    assert deployed.post("/strategies/nope/execute").status_code == 404


def test_a_wait_cut_short_by_the_strategy_deleted_is_409_not_pending(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    def finalize() -> None:
        # What a replica does once nothing is in flight: the spec goes, its requests with it.
        time.sleep(0.5)
        pg_conn.execute("UPDATE strategies SET delete_requested_at = now() WHERE strategy_id = 's1'")
        pg_conn.execute("DELETE FROM strategies WHERE strategy_id = 's1'")

    deleter = threading.Thread(target=finalize)
    deleter.start()
    response = deployed.post("/strategies/s1/execute?wait=10")
    deleter.join()
    assert response.status_code == 409
    assert "deleted before this run request was answered" in response.json()["message"]
