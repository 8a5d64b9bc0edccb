"""The database refuses connections for longer than the outcome retry window, under load.

A replica retries recording an outcome for as long as the execution's lease holds, and never renews a
lease once it has expired; so the outcome retry window is the lease. This test shortens it to
LEASE_SECONDS = 4 (the default is 30) and keeps the database away for three leases: every execution
in flight when it went away is stranded (its outcome can no longer be recorded). The promise: no
replica exits, every stranded execution ends `lost` within two leases of the database's return, its
strategy runs again, and every execution ends in exactly one outcome.

The load is well under capacity (10 strategies every 2 s, each sleeping 1 s: five of the two
replicas' ten slots busy on average, no CPU to speak of), and every wait but the two-lease promise is
generous, so a slow machine does not fail it.
"""

from __future__ import annotations

import shutil
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
        shutil.rmtree(root, ignore_errors=True)  # a cluster is ~50 MB: none left behind per run


LEASE = 4.0


def test_an_outage_longer_than_the_outcome_retry_window(own_server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = own_server.url()
    migrate(url)
    port = free_port()
    workers = [
        Service("worker", service_env(url, lease_seconds=LEASE, worker_health_port=port), tmp_path, "w0"),
        Service("worker", service_env(url, lease_seconds=LEASE), tmp_path, "w1"),
    ]
    health = f"http://127.0.0.1:{port}/health"
    try:
        conn = connect(url)
        for i in range(10):
            deploy_sql(conn, f"s{i}", "import time\ntime.sleep(1.0)\nRESULT = 1\n", interval=2)
        wait_for(lambda: conn.execute("SELECT count(*) FROM executions").fetchone()[0] > 30, 90, "load")
        conn.close()

        assert httpx.get(health, timeout=5).json()["status"] == "healthy"
        own_server.stop()  # fast shutdown: every connection is cut mid-whatever, new ones are refused
        down = time.monotonic()
        # The replica stays up and says it is unhealthy while the database is away.
        wait_for(lambda: httpx.get(health, timeout=5).status_code == 503, 10, "the replica to report unhealthy")
        assert httpx.get(health, timeout=5).json()["database_ok"] is False
        # Longer than the outcome retry window (the lease), with a lease to spare and one more for
        # the last renewal before the outage.
        time.sleep(max(0.0, down + 3 * LEASE - time.monotonic()))
        assert all(w.alive() for w in workers)
        own_server.start()
        restarted = time.monotonic()

        conn = connect(url)
        # Stranded: claimed before the database came back, and either still running then or finished
        # since (only lost-marking can finish them now: their leases expired during the outage).
        stranded_sql = """
            SELECT execution_id, strategy_id, status FROM executions
            WHERE claimed_at < pg_postmaster_start_time()
              AND (status = 'running' OR finished_at >= pg_postmaster_start_time())
        """
        stranded = conn.execute(stranded_sql).fetchall()
        assert stranded, "nothing was in flight when the database went away: the test proves nothing"
        ids = [row[0] for row in stranded]

        def still_running() -> int:
            query = "SELECT count(*) FROM executions WHERE execution_id = ANY(%s) AND status = 'running'"
            return conn.execute(query, (ids,)).fetchone()[0]

        wait_for(lambda: still_running() == 0, 2 * LEASE, "every stranded execution to end within two leases")
        assert time.monotonic() - restarted <= 2 * LEASE
        ended = dict(conn.execute("SELECT execution_id, status FROM executions WHERE execution_id = ANY(%s)", (ids,)))
        assert set(ended.values()) == {"lost"}, ended

        # Each stranded strategy runs again: a new execution claimed after the return, and finished.
        strategies = sorted({row[1] for row in stranded})
        again_sql = """
            SELECT count(DISTINCT strategy_id) FROM executions
            WHERE strategy_id = ANY(%s) AND claimed_at > pg_postmaster_start_time() AND status = 'succeeded'
        """
        wait_for(
            lambda: conn.execute(again_sql, (strategies,)).fetchone()[0] == len(strategies),
            60,
            "every stranded strategy to run again",
        )
        before = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM executions").fetchone()[0] > before + 20,
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
        assert httpx.get(health, timeout=5).status_code == 200
        statuses = dict(conn.execute("SELECT status, count(*) FROM executions GROUP BY 1").fetchall())
        assert set(statuses) <= {"succeeded", "lost"}, statuses
        assert statuses["succeeded"] > 50
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
