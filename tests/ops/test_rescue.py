"""A replica killed mid-execution: another one records the execution lost, says so in a log line that
names the execution, and counts it in /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from reconciler import metrics
from tests.e2e.harness import connect, deploy_sql, service_env, wait_for
from tests.ops.conftest import samples, start, value

pytestmark = pytest.mark.slow

PREFIX = metrics.PREFIX


def test_a_rescued_execution_is_logged_with_its_ids_and_counted(database_url: str, tmp_path: Path) -> None:
    env = service_env(database_url, log_format="json")
    workers = [start("worker", env, tmp_path, f"worker-{i}", port_variable="WORKER_HEALTH_PORT") for i in range(2)]
    try:
        by_replica = {httpx.get(f"{w.base}/health", timeout=10).json()["replica_id"]: w for w in workers}
        with connect(database_url) as conn:
            deploy_sql(conn, "sleeper", "import time\ntime.sleep(60)\n", 3600)
            execution_id, replica_id = wait_for(
                lambda: conn.execute(
                    "SELECT execution_id, replica_id FROM executions WHERE status = 'running'"
                ).fetchone(),
                30,
                "the execution to start",
            )
            victim = by_replica[replica_id]
            (rescuer,) = [w for w in workers if w is not victim]
            victim.service.kill()
            # The lease (4 s in these tests) runs out, then the other replica marks the execution lost.
            wait_for(
                lambda: (
                    conn.execute("SELECT status FROM executions WHERE execution_id = %s", (execution_id,)).fetchone()[0]
                    == "lost"
                ),
                60,
                "the execution to be marked lost",
            )
        rescuer_id = next(rid for rid, w in by_replica.items() if w is rescuer)
        found = samples(rescuer.base)
        assert value(found, f"{PREFIX}_lost_executions_rescued_total", replica=rescuer_id) == 1
        assert value(found, f"{PREFIX}_executions_total", replica=rescuer_id, outcome="lost") == 1
    finally:
        for worker in workers:
            worker.service.stop()
    lines = [json.loads(line) for line in rescuer.service.log().splitlines() if line.startswith("{")]
    (line,) = [line for line in lines if "marked lost" in line["message"]]
    assert line["execution_id"] == str(execution_id) and line["strategy_id"] == "sleeper"
    assert line["replica"] == rescuer_id and line["level"] == "WARNING"
