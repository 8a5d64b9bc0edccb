"""start, stop, delete and status: desired state written, status read back."""

from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

from reconciler.storage.db import libpq_url
from tests.api.conftest import deploy_body
from tests.api.replica import write_status


def spec(conn: psycopg.Connection, strategy_id: str = "s1") -> tuple[object, ...] | None:
    return conn.execute(
        "SELECT desired_state, generation, delete_requested_at IS NOT NULL FROM strategies WHERE strategy_id = %s",
        (strategy_id,),
    ).fetchone()


@pytest.fixture
def deployed(client: TestClient) -> TestClient:
    assert client.post("/strategies/deploy", json=deploy_body()).status_code == 201
    return client


def test_stop_then_start_set_desired_state_and_bump_generation(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    response = deployed.post("/strategies/s1/stop")
    assert response.status_code == 200
    assert response.json()["desired_state"] == "stopped"
    assert response.json()["generation"] == 2
    assert spec(pg_conn) == ("stopped", 2, False)
    response = deployed.post("/strategies/s1/start")
    assert response.status_code == 200
    assert spec(pg_conn) == ("running", 3, False)


def test_delete_requests_deletion_and_reports_deleting(deployed: TestClient, pg_conn: psycopg.Connection) -> None:
    write_status(pg_conn, status="running")
    response = deployed.delete("/strategies/s1")
    assert response.status_code == 202
    assert response.json()["status"] == "deleting"
    assert response.json()["delete_requested_at"] is not None
    assert spec(pg_conn) == ("running", 2, True)
    # Repeating it changes nothing.
    assert deployed.delete("/strategies/s1").status_code == 202
    assert spec(pg_conn) == ("running", 2, True)
    assert deployed.get("/strategies/s1/status").json()["status"] == "deleting"


def test_start_stop_execute_of_a_strategy_being_deleted_are_409_and_change_nothing(
    deployed: TestClient, pg_conn: psycopg.Connection
) -> None:
    """A conflict, as for a deploy (its status still shows it, `deleting`), not an unknown strategy."""
    deployed.delete("/strategies/s1")
    for action in ("start", "stop", "execute"):
        response = deployed.post(f"/strategies/s1/{action}")
        assert response.status_code == 409, action
        assert response.json()["error"] == "conflict"
    assert spec(pg_conn) == ("running", 2, True)
    assert pg_conn.execute("SELECT count(*) FROM run_requests").fetchone() == (0,)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/strategies/nope/start"),
        ("POST", "/strategies/nope/stop"),
        ("POST", "/strategies/nope/execute"),
        ("DELETE", "/strategies/nope"),
        ("GET", "/strategies/nope"),
        ("GET", "/strategies/nope/status"),
        ("GET", "/strategies/nope/executions"),
        ("GET", "/strategies/nope/orders"),
        ("GET", "/executions/00000000-0000-0000-0000-000000000000"),
    ],
)
def test_unknown_ids_are_404_json(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "nope" in response.json()["message"] or "0000" in response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/strategies/bad%20id/start", "strategy_id"),
        ("POST", "/strategies/-x/stop", "strategy_id"),
        ("DELETE", "/strategies/a;b", "strategy_id"),
        ("GET", "/strategies/" + "x" * 65, "strategy_id"),
        ("GET", "/strategies/%C3%A9/status", "strategy_id"),
    ],
)
def test_ids_with_bad_characters_are_422(client: TestClient, method: str, path: str, field: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == field


@pytest.mark.parametrize("raw", ["not-a-uuid", "null", "0" * 32, "{00000000-0000-0000-0000-000000000000}"])
def test_an_execution_id_that_is_no_uuid_names_no_execution(client: TestClient, raw: str) -> None:
    # The OpenAPI document's pattern is the one form accepted; anything else is an unknown id.
    response = client.get(f"/executions/{raw}")
    assert response.status_code == 404
    assert "execution ids are UUIDs" in response.json()["message"]


def test_status_is_pending_until_a_replica_writes_it(deployed: TestClient, pg_conn: psycopg.Connection) -> None:
    body = deployed.get("/strategies/s1/status").json()
    assert body["status"] == "pending"
    assert body["observed_generation"] == 0
    assert body["next_execution_at"] is None
    assert body["stats"] == {
        "total_executions": 0,
        "successful_executions": 0,
        "failed_executions": 0,
        "avg_execution_time": None,
        "last_execution_at": None,
        "last_error": None,
        "last_execution_duration": None,
        "missed_executions": 0,
        "consecutive_failures": 0,
    }

    write_status(
        pg_conn,
        status="error",
        status_reason="last run failed",
        observed_generation=1,
        next_execution_at="2026-01-01T00:00:05Z",
        execution_count=10,
        successful_executions=7,
        failed_executions=3,
        missed_executions=2,
        avg_execution_time=0.5,
        last_execution_duration=0.75,
        last_execution_at="2026-01-01T00:00:00Z",
        last_error="ZeroDivisionError: division by zero",
    )
    body = deployed.get("/strategies/s1/status").json()
    assert body["strategy_id"] == "s1"
    assert body["status"] == "error"
    assert body["status_reason"] == "last run failed"
    assert body["desired_state"] == "running"
    assert (body["generation"], body["observed_generation"]) == (1, 1)
    assert body["execution_interval"] == 5
    assert body["next_execution_at"] == "2026-01-01T00:00:05Z"
    assert (body["exchange"], body["name"], body["user_id"]) == ("paper", "first", "u1")
    assert body["stats"] == {
        "total_executions": 10,
        "successful_executions": 7,
        "failed_executions": 3,
        "avg_execution_time": 0.5,
        "last_execution_at": "2026-01-01T00:00:00Z",
        "last_error": "ZeroDivisionError: division by zero",
        "last_execution_duration": 0.75,
        "missed_executions": 2,
        "consecutive_failures": 0,
    }


def test_get_strategy_returns_the_spec_but_never_credentials(client: TestClient) -> None:
    body = deploy_body(exchange="coindcx", api_key="KEY-PLAINTEXT", api_secret="SECRET-PLAINTEXT")
    client.post("/strategies/deploy", json=body)
    response = client.get("/strategies/s1")
    assert response.status_code == 200
    spec_body = response.json()
    assert spec_body["code"] == "x = 1\n"
    assert spec_body["config"] == {"pair": "BTCUSDT"}
    assert spec_body["has_credentials"] is True
    assert "api_key" not in spec_body and "api_secret" not in spec_body
    for path in ("/strategies/s1", "/strategies/s1/status", "/strategies?include_code=true"):
        assert "PLAINTEXT" not in client.get(path).text


def test_every_desired_state_write_wakes_the_replicas(client: TestClient, database_url: str) -> None:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")

        def woken() -> list[str]:
            return [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]

        client.post("/strategies/deploy", json=deploy_body())
        assert woken() == ["s1"]
        client.post("/strategies/s1/stop")
        assert woken() == ["s1"]
        client.post("/strategies/s1/execute")
        assert woken() == ["s1"]
        client.delete("/strategies/s1")
        assert woken() == ["s1"]
        client.get("/strategies/s1/status")  # reads and refusals wake nobody
        client.post("/strategies/s1/start")
        assert woken() == []
