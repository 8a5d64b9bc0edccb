"""Ctrl-C on a real replica: the first drains and says how long it may take, the second stops now."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.harness import Service, deploy_sql, free_port, wait_for
from tests.e2e.test_replicas import services, start_workers  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def test_a_second_ctrl_c_stops_the_drain_and_records_interrupted(
    database_url: str,
    pg_conn: psycopg.Connection,
    services: list[Service],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    start_workers(
        services,
        database_url,
        tmp_path,
        1,
        shutdown_grace_seconds=120,
        max_wall_time_seconds=300,
        worker_health_port=port,
    )
    deploy_sql(pg_conn, "long", "import time\ntime.sleep(240)\n", interval=3600)

    def in_flight() -> int:
        try:
            return int(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["in_flight"])
        except httpx.HTTPError:
            return 0  # its health server not listening yet

    # The notice counts what the replica itself holds (here its /health's in_flight). The database shows
    # the execution running a round trip earlier (the claim commits, then reads when the next one is
    # due): a Ctrl-C in between is told of 0 running executions, rightly, and the drain still waits
    # for this one. So wait for the replica's count, not the row.
    wait_for(lambda: in_flight() == 1, 30, "the replica to count the execution running")
    assert pg_conn.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone() == (1,)
    worker = services[0]
    worker.process.send_signal(signal.SIGINT)
    line = wait_for(
        lambda: next((x for x in worker.log().splitlines() if "may take up to" in x), None), 10, "the drain notice"
    )
    assert "1 running, 0 claimed and waiting for a slot; they may take up to 120 s" in line and "Ctrl-C again" in line
    time.sleep(1)
    assert worker.alive()  # draining: the first Ctrl-C alone waits for the grace period
    started = time.monotonic()
    worker.process.send_signal(signal.SIGINT)
    assert worker.process.wait(30) == 0, worker.log()[-3000:]
    assert time.monotonic() - started < 20  # not the 120 s grace period
    assert pg_conn.execute("SELECT status FROM executions").fetchone() == ("interrupted",)
    assert "stopping now" in worker.log()
