"""The database restarted under load: no replica exits, and every execution still gets one outcome."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.embedded import EmbeddedPostgres
from reconciler.storage.migrate import migrate
from tests.e2e.harness import Service, connect, deploy_sql, free_port, service_env, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, since the test restarts it."""
    root = Path(tempfile.mkdtemp(prefix="se-outage-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(data_dir=root / "cluster", fast_unsafe=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_database_restart_under_load(own_server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = own_server.url()
    migrate(url)
    port = free_port()
    workers = [
        Service("worker", service_env(url, lease_seconds=4, worker_health_port=port), tmp_path, "w0"),
        Service("worker", service_env(url, lease_seconds=4), tmp_path, "w1"),
    ]
    health = f"http://127.0.0.1:{port}/health"
    try:
        conn = connect(url)
        for i in range(30):
            deploy_sql(conn, f"s{i}", "import time\ntime.sleep(0.2)\nRESULT = 1\n", interval=1)
        wait_for(lambda: conn.execute("SELECT count(*) FROM executions").fetchone()[0] > 50, 60, "load")
        conn.close()

        assert httpx.get(health, timeout=5).json()["status"] == "healthy"
        own_server.stop()  # fast shutdown: every connection is cut mid-whatever
        # The replica stays up and says it is unhealthy while the database is away.
        wait_for(lambda: httpx.get(health, timeout=5).status_code == 503, 10, "the replica to report unhealthy")
        assert httpx.get(health, timeout=5).json()["database_ok"] is False
        time.sleep(2)
        assert all(w.alive() for w in workers)
        own_server.start()
        restarted = time.monotonic()

        conn = connect(url)
        before = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM executions").fetchone()[0] > before + 60,
            60,
            "the replicas to resume",
        )
        conn.execute("UPDATE strategies SET desired_state = 'stopped', generation = generation + 1")
        # Claims whose commit was cut off are found by their expired leases and marked lost.
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone()[0] == 0,
            30,
            "every execution to reach an outcome",
        )
        assert all(w.alive() for w in workers), [w.log()[-3000:] for w in workers]
        assert time.monotonic() - restarted < 90
        assert httpx.get(health, timeout=5).status_code == 200
        statuses = dict(conn.execute("SELECT status, count(*) FROM executions GROUP BY 1").fetchall())
        assert set(statuses) <= {"succeeded", "lost"}, statuses
        assert statuses["succeeded"] > 100
        # The strategies' statistics still add up to the executions table.
        mismatched = conn.execute(
            """
            SELECT count(*) FROM strategy_status st
            JOIN (SELECT strategy_id, count(*) n FROM executions GROUP BY 1) e USING (strategy_id)
            WHERE st.execution_count <> e.n
            """
        ).fetchone()[0]
        assert mismatched == 0
        conn.close()
        for worker in workers:
            assert worker.terminate() == 0
    finally:
        for worker in workers:
            worker.stop()
