"""GET /health: public, counts from the database, 503 (fast) when the database cannot answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields

import psycopg
import pytest
from starlette.testclient import TestClient

from reconciler.health import health_app
from reconciler.loop import ReplicaHealth
from reconciler.storage.db import libpq_url
from tests.api.conftest import BuildClient, deploy_body
from tests.api.replica import write_replica


def test_healthy_without_replicas(client: TestClient) -> None:
    client.post("/strategies/deploy", json=deploy_body(strategy_id="a"))
    client.post("/strategies/deploy", json=deploy_body(strategy_id="b", auto_start=False))
    client.post("/strategies/deploy", json=deploy_body(strategy_id="c"))
    client.delete("/strategies/c")
    response = client.get("/health", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "database": "ok",
        "active_strategies": 1,
        "scheduler_running": False,
        "replicas": 0,
        "sandbox_layers": {},
        "reason": None,
        "replica": None,
    }


def test_live_replicas_and_their_merged_sandbox_layers(client: TestClient, pg_conn: psycopg.Connection) -> None:
    write_replica(pg_conn, "a", layers='{"policy": true, "seccomp": true, "netns": true}')
    write_replica(pg_conn, "b", layers='{"policy": true, "seccomp": false, "rlimits": true}')
    write_replica(pg_conn, "expired", layers='{"policy": false}', lease="-1 second")
    body = client.get("/health").json()
    assert body["scheduler_running"] is True
    assert body["replicas"] == 2
    # A layer counts as active only where every live replica has it.
    assert body["sandbox_layers"] == {"netns": False, "policy": True, "rlimits": False, "seccomp": False}


def test_only_expired_replicas_means_no_scheduler(client: TestClient, pg_conn: psycopg.Connection) -> None:
    write_replica(pg_conn, "gone", lease="-5 seconds")
    body = client.get("/health").json()
    assert (body["scheduler_running"], body["replicas"]) == (False, 0)


def test_unreachable_database_is_503(build_client: BuildClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    client = build_client(url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["database"] == "unavailable"
    assert "database unavailable" in body["reason"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung database server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_hung_database_is_503_within_the_timeout(build_client: BuildClient, silent_server: int) -> None:
    client = build_client(url=f"postgresql+psycopg://nobody@127.0.0.1:{silent_server}/x", health_timeout=0.5)
    started = time.monotonic()
    response = client.get("/health")
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert "0.5 seconds" in response.json()["reason"]


def test_stopped_database_is_503(build_client: BuildClient, database_url: str, pg_admin_url: str) -> None:
    client = build_client()
    assert client.get("/health").status_code == 200
    # Take the database away under the running app (its pooled connections are terminated).
    name = database_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"
        response = client.get("/strategies")
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert client.get("/health").status_code == 200


def test_hung_database_during_a_request_is_503_within_the_timeout(
    build_client: BuildClient, silent_server: int
) -> None:
    client = build_client(url=f"postgresql+psycopg://nobody@127.0.0.1:{silent_server}/x", operation_timeout=0.5)
    started = time.monotonic()
    response = client.post("/strategies/deploy", json=deploy_body())
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"


@dataclass
class FakeReplicaHealth:
    """The shape of reconciler.loop.ReplicaHealth."""

    replica_id: str = "local-1"
    database_ok: bool = True
    running: bool = True
    in_flight: int = 2
    claimed_waiting: int = 3
    executed: int = 40
    last_error: str | None = None
    layers: dict[str, bool] = field(default_factory=lambda: {"seccomp": True, "netns": False})


def test_the_local_replica_is_reported(build_client: BuildClient) -> None:
    replica = FakeReplicaHealth()
    client = build_client(replica=replica)
    body = client.get("/health").json()
    assert body["replica"] == {
        "replica_id": "local-1",
        "database_ok": True,
        "running": True,
        "in_flight": 2,
        "claimed_waiting": 3,
        "executed": 40,
        "last_error": None,
        "layers": {"seccomp": True, "netns": False},
    }
    replica.in_flight = replica.claimed_waiting = 0  # read live, not copied at start-up
    assert client.get("/health").json()["replica"]["in_flight"] == 0
    assert client.get("/health").json()["replica"]["claimed_waiting"] == 0


def test_a_worker_reports_the_same_figures_at_the_top_of_its_own_health() -> None:
    assert [f.name for f in fields(FakeReplicaHealth)] == [f.name for f in fields(ReplicaHealth)]
    health = ReplicaHealth(**asdict(FakeReplicaHealth()))
    body = TestClient(health_app(health)).get("/health").json()
    assert (body["status"], body["in_flight"], body["claimed_waiting"]) == ("healthy", 2, 3)


def test_the_local_replica_is_reported_while_the_database_is_away(build_client: BuildClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = build_client(
        url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/x", replica=FakeReplicaHealth(database_ok=False)
    )
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["replica"]["database_ok"] is False
