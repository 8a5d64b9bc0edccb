"""POST /strategies/{id}/execute: a run request row; with ?wait, the execution a replica ran for it."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from starlette.testclient import TestClient

from reconciler.storage.db import libpq_url
from tests.api.conftest import deploy_body
from tests.api.replica import write_execution


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
    row = pg_conn.execute("SELECT run_request_id, strategy_id, claimed_at, execution_id FROM run_requests").fetchall()
    assert row == [(body["run_request_id"], "s1", None, None)]
    # The API never writes executions.
    assert pg_conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


class SimulatedReplica(threading.Thread):
    """Claims the pending run request, then finishes its execution, from its own connection."""

    def __init__(self, database_url: str, *, finish_after: float, status: str = "succeeded") -> None:
        super().__init__(daemon=True)
        self.url = libpq_url(database_url)
        self.finish_after = finish_after
        self.status = status
        self.execution_id: uuid.UUID | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    row = conn.execute("SELECT run_request_id FROM run_requests WHERE claimed_at IS NULL").fetchone()
                    if row:
                        break
                    time.sleep(0.02)
                else:
                    raise AssertionError("no run request appeared")
                with conn.transaction():
                    self.execution_id = write_execution(
                        conn, status="running", trigger="manual", scheduled_for="2026-01-01T00:00:00Z"
                    )
                    conn.execute(
                        "UPDATE run_requests SET claimed_at = now(), execution_id = %s WHERE run_request_id = %s",
                        (self.execution_id, row[0]),
                    )
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
