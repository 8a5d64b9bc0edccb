"""Several real replica processes over one PostgreSQL: sharing, exactly-once ticks, death, drain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.harness import Service, connect, deploy_sql, service_env, wait_for

pytestmark = pytest.mark.slow

TRIVIAL = "RESULT = CONFIG.get('n', 0) + 1\n"
# Strategies of the three-replica test: with 3-4 s intervals, ~13 executions/s.
STRATEGIES = 45


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def start_workers(services: list[Service], database_url: str, tmp_path: Path, count: int, **settings: object) -> None:
    for _ in range(count):
        services.append(Service("worker", service_env(database_url, **settings), tmp_path, f"worker{len(services)}"))
    conn = connect(database_url)
    try:
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM replicas").fetchone()[0] >= len(services),
            60,
            "replicas to register",
        )
    finally:
        conn.close()


def test_three_replicas_run_every_tick_once_and_share_the_load(
    database_url: str, pg_conn: psycopg.Connection, services: list[Service], tmp_path: Path
) -> None:
    # Well under capacity (~13 executions/s against the hundreds three replicas sustain), so nothing
    # here depends on the machine's speed: a replica may stall for seconds on a busy host and still
    # catch every tick. Capacity itself is measured by tests/benchmarks/bench_reconciler.py.
    start_workers(services, database_url, tmp_path, 3)
    for i in range(STRATEGIES):
        deploy_sql(pg_conn, f"s{i:03d}", TRIVIAL, interval=3 + i % 2)
    time.sleep(24)
    pg_conn.execute("UPDATE strategies SET desired_state = 'stopped', generation = generation + 1")
    wait_for(
        lambda: pg_conn.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone()[0] == 0,
        30,
        "in-flight executions to finish",
    )
    assert all(s.alive() for s in services), [s.log()[-2000:] for s in services if not s.alive()]

    # No (strategy, tick) ran twice: checked over the table, whatever the indexes say.
    duplicates = pg_conn.execute(
        "SELECT count(*) FROM (SELECT strategy_id, scheduled_for FROM executions WHERE trigger = 'schedule' "
        "GROUP BY 1, 2 HAVING count(*) > 1) d"
    ).fetchone()[0]
    assert duplicates == 0
    statuses = dict(pg_conn.execute("SELECT status, count(*) FROM executions GROUP BY 1").fetchall())
    assert set(statuses) == {"succeeded"}, statuses
    # None skipped while capacity allowed: each strategy ran on consecutive grid points, none coalesced.
    missed = pg_conn.execute("SELECT sum(missed_executions) FROM strategy_status").fetchone()[0]
    assert missed == 0
    gaps = pg_conn.execute(
        """
        SELECT count(*) FROM (
            SELECT scheduled_for - lag(scheduled_for) OVER (PARTITION BY e.strategy_id ORDER BY scheduled_for) AS gap,
                   s.execution_interval
            FROM executions e JOIN strategies s USING (strategy_id)
        ) g WHERE gap IS NOT NULL AND gap <> make_interval(secs => execution_interval)
        """
    ).fetchone()[0]
    assert gaps == 0
    total = sum(statuses.values())
    assert total >= STRATEGIES * 18 / 3.5  # ~24 s of 3-4 s intervals, allowing start-up
    # The load is shared: every replica ran a fair part of it.
    shares = dict(pg_conn.execute("SELECT replica_id, count(*) FROM executions GROUP BY 1").fetchall())
    assert len(shares) == 3
    assert min(shares.values()) >= total * 0.15, shares
    # Stats match the executions table.
    mismatched = pg_conn.execute(
        """
        SELECT count(*) FROM strategy_status st
        JOIN (SELECT strategy_id, count(*) n, count(*) FILTER (WHERE status = 'succeeded') ok
              FROM executions GROUP BY 1) e USING (strategy_id)
        WHERE st.execution_count <> e.n OR st.successful_executions <> e.ok
        """
    ).fetchone()[0]
    assert mismatched == 0


def test_killed_replica_executions_become_lost_and_strategies_carry_on(
    database_url: str, pg_conn: psycopg.Connection, services: list[Service], tmp_path: Path
) -> None:
    start_workers(services, database_url, tmp_path, 2, lease_seconds=3)
    for i in range(6):
        deploy_sql(pg_conn, f"slow{i}", "import time\ntime.sleep(3)\n", interval=1)
    victim = services[0]
    wait_for(
        lambda: (
            pg_conn.execute(
                "SELECT count(*) FROM executions WHERE status = 'running' AND replica_id LIKE %s",
                (f"%-{victim.pid}-%",),
            ).fetchone()[0]
            > 0
        ),
        30,
        "the victim to run something",
    )
    in_flight = [
        row[0]
        for row in pg_conn.execute(
            "SELECT execution_id FROM executions WHERE status = 'running' AND replica_id LIKE %s",
            (f"%-{victim.pid}-%",),
        ).fetchall()
    ]
    victim.kill()
    killed_at = time.monotonic()
    # Within the lease (3 s) plus one heartbeat period of the survivor, they are lost.
    wait_for(
        lambda: (
            pg_conn.execute(
                "SELECT count(*) FROM executions WHERE execution_id = ANY(%s) AND status = 'lost'", (in_flight,)
            ).fetchone()[0]
            == len(in_flight)
        ),
        3 + 1.5 + 5,
        "the killed replica's executions to be marked lost",
    )
    assert time.monotonic() - killed_at <= 9.5
    survivor = services[1]
    # The strategies keep running on the survivor.
    wait_for(
        lambda: (
            pg_conn.execute(
                "SELECT count(DISTINCT strategy_id) FROM executions WHERE status = 'succeeded' AND replica_id LIKE %s "
                "AND claimed_at > now() - interval '8 seconds'",
                (f"%-{survivor.pid}-%",),
            ).fetchone()[0]
            >= 3
        ),
        30,
        "the survivor to carry the strategies on",
    )
    assert survivor.alive()


def test_sigterm_drains_running_executions(
    database_url: str, pg_conn: psycopg.Connection, services: list[Service], tmp_path: Path
) -> None:
    start_workers(services, database_url, tmp_path, 1, shutdown_grace_seconds=10)
    deploy_sql(pg_conn, "short", "import time\ntime.sleep(1.5)\nRESULT = 'done'\n", interval=60)
    wait_for(
        lambda: pg_conn.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone()[0] == 1,
        30,
        "the execution to start",
    )
    assert services[0].terminate(timeout=20) == 0
    row = pg_conn.execute("SELECT status, result FROM executions").fetchone()
    assert row == ("succeeded", "done")
    assert pg_conn.execute("SELECT count(*) FROM replicas").fetchone() == (0,)


def test_sigterm_past_the_grace_period_records_interrupted(
    database_url: str, pg_conn: psycopg.Connection, services: list[Service], tmp_path: Path
) -> None:
    start_workers(services, database_url, tmp_path, 1, shutdown_grace_seconds=1, max_wall_time_seconds=60)
    deploy_sql(pg_conn, "long", "import time\ntime.sleep(30)\n", interval=60)
    wait_for(
        lambda: pg_conn.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone()[0] == 1,
        30,
        "the execution to start",
    )
    started = time.monotonic()
    assert services[0].terminate(timeout=20) == 0
    assert time.monotonic() - started < 10
    row = pg_conn.execute("SELECT status FROM executions").fetchone()
    assert row == ("interrupted",)
    status = pg_conn.execute("SELECT running_execution_id, failed_executions FROM strategy_status").fetchone()
    assert status == (None, 1)
