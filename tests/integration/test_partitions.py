"""`executions` partitioned by day: the invariants across partitions, days created ahead by replicas
racing, retention dropping whole days (never one with an execution in flight), and the hot statements
pruned to one partition."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from reconciler.outcome import ExecutionOutcome
from reconciler.storage.db import Database, create_engine
from reconciler.storage.exchange_store import _fence_params
from reconciler.storage.fence import Fence
from reconciler.storage.replica_store import Partitions, ReplicaStore, outcome_params
from reconciler.storage.statements import exchange as exchange_queries
from reconciler.storage.statements import partitions
from reconciler.storage.statements import replica as queries

RETENTION = 7 * 86_400


def _today(conn: psycopg.Connection) -> date:
    (today,) = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
    return today


def _days(conn: psycopg.Connection) -> set[date]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'executions'::regclass"
    ).fetchall()
    return {day for (name,) in rows if (day := partitions.day_of(name)) is not None}


def _partition_of(conn: psycopg.Connection, execution_id: uuid.UUID) -> str:
    (name,) = conn.execute(
        "SELECT tableoid::regclass::text FROM executions WHERE execution_id = %s", (execution_id,)
    ).fetchone()
    return str(name)


def _strategy(conn: psycopg.Connection, strategy_id: str = "s1") -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval) VALUES (%s, 'u1', 'n', 'x', 5)",
        (strategy_id,),
    )
    conn.execute("INSERT INTO strategy_status (strategy_id, status) VALUES (%s, 'running')", (strategy_id,))


def _execution(
    conn: psycopg.Connection, tick: datetime | str, *, status: str = "succeeded", strategy_id: str = "s1"
) -> uuid.UUID:
    """A running one is made its strategy's in-flight one in the same statement, as a claim does."""
    finished = "NULL" if status == "running" else "now()"
    lease = "now() + interval '30 s'" if status == "running" else "NULL"
    (execution_id,) = conn.execute(
        "WITH e AS (INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id,"
        f" finished_at, lease_expires_at) VALUES (%s, 'schedule', %s, 1, %s, 'r1', {finished}, {lease})"
        " RETURNING execution_id, status),"
        " p AS (UPDATE strategy_status SET running_execution_id = e.execution_id FROM e"
        "       WHERE strategy_id = %s AND e.status = 'running')"
        " SELECT execution_id FROM e",
        (strategy_id, tick, status, strategy_id),
    ).fetchone()
    return execution_id


def _store_call(url: str, call: Any) -> Any:
    async def main() -> Any:
        engine = create_engine(url, pool_size=2)
        try:
            return await call(ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _maintain(url: str, retention: float = RETENTION) -> Partitions:
    return _store_call(url, lambda store: store.maintain_partitions(retention_seconds=retention))  # type: ignore[no-any-return]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- the schema after migration -------------------------------------------------------------------


def test_migration_leaves_today_and_a_week_ahead_and_a_default(pg_conn: psycopg.Connection) -> None:
    today = _today(pg_conn)
    assert {today + timedelta(days=n) for n in range(partitions.DAYS_AHEAD + 1)} <= _days(pg_conn)
    (default,) = pg_conn.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = 'executions_default'"
    ).fetchone()
    assert default == "DEFAULT"


def test_no_insert_fails_for_want_of_a_partition(pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    long_ago = _execution(pg_conn, "2001-02-03T04:05:06Z")
    far_ahead = _execution(pg_conn, "2099-01-01T00:00:00Z")
    today = _execution(pg_conn, _midnight(_today(pg_conn)) + timedelta(hours=1))
    assert _partition_of(pg_conn, long_ago) == "executions_default"
    assert _partition_of(pg_conn, far_ahead) == "executions_default"
    assert _partition_of(pg_conn, today) == partitions.partition_name(_today(pg_conn))


# --- the invariants across partitions -------------------------------------------------------------


def test_a_duplicate_tick_is_refused_on_a_day_boundary_and_in_the_default(pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    midnight = _midnight(_today(pg_conn) + timedelta(days=1))
    _execution(pg_conn, midnight - timedelta(microseconds=1))
    _execution(pg_conn, midnight)  # the next tick, in the next day's partition
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"\(strategy_id, scheduled_for\)"):
        _execution(pg_conn, midnight)
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"\(strategy_id, scheduled_for\)"):
        _execution(pg_conn, midnight - timedelta(microseconds=1))
    _execution(pg_conn, "2001-01-01T00:00:00Z")
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"\(strategy_id, scheduled_for\)"):
        _execution(pg_conn, "2001-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(timedelta(hours=1), id="same day"),
        pytest.param(timedelta(days=1), id="next day"),
        pytest.param(-timedelta(days=9000), id="default partition"),
    ],
)
def test_a_second_in_flight_execution_is_refused_in_any_partition(
    pg_conn: psycopg.Connection, second: timedelta
) -> None:
    _strategy(pg_conn)
    first_tick = _midnight(_today(pg_conn)) + timedelta(hours=23)
    first = _execution(pg_conn, first_tick, status="running")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_executions_in_flight"):
        _execution(pg_conn, first_tick + second, status="running")
    # The first is untouched and still the one in flight.
    (pointer,) = pg_conn.execute("SELECT running_execution_id FROM strategy_status").fetchone()
    assert pointer == first
    # Once it ends (and the pointer with it, in one statement), the next may run, in any partition.
    pg_conn.execute(
        "WITH e AS (UPDATE executions SET status = 'succeeded', finished_at = now() WHERE execution_id = %s"
        " RETURNING execution_id)"
        " UPDATE strategy_status SET running_execution_id = NULL WHERE running_execution_id IN (SELECT * FROM e)",
        (first,),
    )
    _execution(pg_conn, first_tick + second, status="running")


def test_ending_an_execution_without_clearing_the_pointer_is_allowed_but_the_pointer_cannot_dangle_to_a_runner(
    pg_conn: psycopg.Connection,
) -> None:
    """Pointing a strategy away from its running execution would leave that execution unnamed: refused."""
    _strategy(pg_conn)
    _execution(pg_conn, _midnight(_today(pg_conn)), status="running")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_executions_in_flight"):
        pg_conn.execute("UPDATE strategy_status SET running_execution_id = NULL")


# --- creating ahead, under concurrent replicas ----------------------------------------------------


def _maintain_in_process(url: str, start: Any, results: Any) -> None:
    start.wait(120)  # every process imported and ready: they go at once
    try:
        done = _maintain(url)
        results.put(("ok", [str(day) for day in done.created], done.skipped))
    except BaseException as exc:  # reported to the test
        results.put(("error", repr(exc), 0))


def test_replicas_creating_days_at_once_create_each_exactly_once(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    today = _today(pg_conn)
    ahead = sorted(day for day in _days(pg_conn) if day >= today)
    for day in ahead:
        pg_conn.execute(f"DROP TABLE {partitions.partition_name(day)}")
    assert not {day for day in _days(pg_conn) if day >= today}

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    results = context.Queue()
    workers = [context.Process(target=_maintain_in_process, args=(database_url, start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert all(kind == "ok" for kind, _, _ in outcomes), outcomes
    created = [day for _, days, _ in outcomes for day in days]
    wanted = [str(today + timedelta(days=n)) for n in range(partitions.DAYS_AHEAD + 1)]
    # Between them they made every day, none twice: the others found the lock held (and left the work
    # to its holder) or found the days made.
    assert sorted(created) == wanted
    assert {today + timedelta(days=n) for n in range(partitions.DAYS_AHEAD + 1)} <= _days(pg_conn)
    # And a later round finds nothing to do.
    assert _maintain(database_url).created == []


def test_a_day_whose_rows_sit_in_the_default_is_left_to_it(database_url: str, pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    day = _today(pg_conn) + timedelta(days=3)
    pg_conn.execute(f"DROP TABLE {partitions.partition_name(day)}")
    stranded = _execution(pg_conn, _midnight(day) + timedelta(hours=2))
    assert _partition_of(pg_conn, stranded) == "executions_default"
    done = _maintain(database_url)
    assert done.left_to_default == [day]
    assert day not in _days(pg_conn)
    assert _partition_of(pg_conn, stranded) == "executions_default"


# --- retention ------------------------------------------------------------------------------------


def _old_day(conn: psycopg.Connection, day: date) -> None:
    for statement in partitions.create_partition(day):
        conn.execute(str(statement))


def test_retention_drops_whole_old_days_and_keeps_newer_rows(database_url: str, pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    today = _today(pg_conn)
    old = [today - timedelta(days=n) for n in (9, 8)]
    kept = today - timedelta(days=6)  # within the retention
    for day in [*old, kept]:
        _old_day(pg_conn, day)
    old_rows = [_execution(pg_conn, _midnight(day) + timedelta(minutes=m)) for day in old for m in range(3)]
    kept_rows = [_execution(pg_conn, _midnight(kept) + timedelta(minutes=m)) for m in range(3)]
    today_rows = [_execution(pg_conn, _midnight(today) + timedelta(minutes=m)) for m in range(3)]
    # An old row in the default partition (its day never had one) goes by the row-wise prune.
    stray = _execution(pg_conn, _midnight(today - timedelta(days=30)))
    pg_conn.execute("UPDATE executions SET finished_at = now() - interval '20 days' WHERE execution_id = %s", (stray,))

    done = _maintain(database_url)
    assert sorted(done.dropped) == old
    assert not set(old) & _days(pg_conn)
    assert kept in _days(pg_conn)
    (left,) = pg_conn.execute("SELECT count(*) FROM executions WHERE execution_id = ANY(%s)", (old_rows,)).fetchone()
    assert left == 0
    (still,) = pg_conn.execute(
        "SELECT count(*) FROM executions WHERE execution_id = ANY(%s)", (kept_rows + today_rows,)
    ).fetchone()
    assert still == 6

    deleted = _store_call(database_url, lambda store: store.prune(retention_seconds=RETENTION, batch=100))
    assert deleted >= 1
    (gone,) = pg_conn.execute("SELECT count(*) FROM executions WHERE execution_id = %s", (stray,)).fetchone()
    assert gone == 0


def test_retention_never_drops_a_day_holding_an_execution_in_flight(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    _strategy(pg_conn)
    _strategy(pg_conn, "s2")
    day = _today(pg_conn) - timedelta(days=10)
    _old_day(pg_conn, day)
    # A manual run requested ten days ago and claimed now lands in that day's partition, in flight.
    running = _execution(pg_conn, _midnight(day) + timedelta(hours=5), status="running")
    finished = _execution(pg_conn, _midnight(day) + timedelta(hours=6), strategy_id="s2")

    done = _maintain(database_url)
    assert done.kept_in_flight == [day]
    assert day in _days(pg_conn)
    (count,) = pg_conn.execute(
        "SELECT count(*) FROM executions WHERE execution_id = ANY(%s)", ([running, finished],)
    ).fetchone()
    assert count == 2

    # Once it has ended, the day goes at the next round.
    pg_conn.execute(
        "WITH e AS (UPDATE executions SET status = 'succeeded', finished_at = now() WHERE execution_id = %s"
        " RETURNING execution_id)"
        " UPDATE strategy_status SET running_execution_id = NULL WHERE running_execution_id IN (SELECT * FROM e)",
        (running,),
    )
    assert _maintain(database_url).dropped == [day]


# --- the hot statements touch one partition -------------------------------------------------------


def _executed_scans(plan: str) -> list[str]:
    """The partitions of `executions` an EXPLAIN ANALYZE plan really scanned."""
    scanned = []
    for line in plan.splitlines():
        found = re.search(r"Scan (?:using \S+ )?on (executions_\w+)", line)
        if found and "never executed" not in line:
            scanned.append(found.group(1))
    return scanned


def _explain(conn: psycopg.Connection, statement: Any, params: dict[str, Any]) -> str:
    """EXPLAIN ANALYZE a named statement with its parameters, in a transaction rolled back."""
    compiled = statement.compile(dialect=_dialect(), compile_kwargs={})
    sql = str(compiled)
    values = {**compiled.params, **params}
    conn.execute("BEGIN")
    try:
        rows = conn.execute("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY OFF) " + sql, values).fetchall()
    finally:
        conn.execute("ROLLBACK")
    return "\n".join(row[0] for row in rows)


def _dialect() -> Any:
    from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

    return pg_psycopg.dialect()


@pytest.fixture
def spread(pg_conn: psycopg.Connection) -> dict[str, Any]:
    """Executions over several days (past days created, as after a week of running), one in flight."""
    _strategy(pg_conn)
    pg_conn.execute(
        "INSERT INTO replicas (replica_id, hostname, pid, slots, version, lease_expires_at, epoch)"
        " VALUES ('r1', 'h', 1, 5, 'v', now() + interval '30 s', 0)"
    )
    today = _today(pg_conn)
    # Enough rows a day that the planner reads by index, as it does on a real day's partition.
    for n in range(1, 7):
        _old_day(pg_conn, today - timedelta(days=n))
    pg_conn.execute(
        "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, finished_at)"
        " SELECT 's1', 'schedule', %s::timestamptz + g * interval '100 ms', 1, 'succeeded', 'r1', now()"
        " FROM generate_series(0, 6 * 86400 * 10 - 1, 20) g",
        (_midnight(today - timedelta(days=6)),),
    )
    tick = _midnight(today) + timedelta(hours=1)
    running = _execution(pg_conn, tick, status="running")
    pg_conn.execute("ANALYZE executions")
    return {"execution_id": running, "scheduled_for": tick, "today": today}


def test_hot_statements_touch_one_partition(pg_conn: psycopg.Connection, spread: dict[str, Any]) -> None:
    one = [partitions.partition_name(spread["today"])]
    ids = {
        "execution_ids": [spread["execution_id"]],
        "scheduled_fors": [spread["scheduled_for"]],
        "earliest": spread["scheduled_for"],
        "latest": spread["scheduled_for"],
        "tokens": [0],
    }
    fence = Fence(spread["execution_id"], "s1", "r1", 0, spread["scheduled_for"])
    outcome = outcome_params("r1", [(fence, ExecutionOutcome(status="succeeded", duration=0.1))])
    plans = {
        "COMPLETE_EXECUTIONS": _explain(pg_conn, queries.COMPLETE_EXECUTIONS, outcome),
        "RENEW_LEASES": _explain(pg_conn, queries.RENEW_LEASES, {**ids, "replica_id": "r1", "lease_seconds": 30}),
    }
    plans["fence check (orders)"] = _explain(pg_conn, exchange_queries.SELECT_FENCE_HOLDS, _fence_params(fence))
    plans["RECORD_WALLET_VALUE"] = _explain(
        pg_conn,
        exchange_queries.RECORD_WALLET_VALUE,
        {
            "execution_id": spread["execution_id"],
            "scheduled_for": spread["scheduled_for"],
            "value": 1,
            "currency": "USDT",
        },
    )
    for name, plan in plans.items():
        if name == "COMPLETE_EXECUTIONS":
            print(plan)
        scanned = _executed_scans(plan)
        assert scanned and set(scanned) == set(one), f"{name} scanned {scanned}:\n{plan}"


def test_lost_marking_updates_one_partition_per_row(pg_conn: psycopg.Connection, spread: dict[str, Any]) -> None:
    pg_conn.execute("UPDATE executions SET lease_expires_at = now() - interval '1 s' WHERE status = 'running'")
    plan = _explain(pg_conn, queries.MARK_LOST, {})
    # The expired rows are found through each day's partial index of running rows (tiny: one page a
    # day); the update then touches only the partition that holds each row.
    update = plan[plan.index("CTE lost") :]
    assert _executed_scans(update) == [partitions.partition_name(spread["today"])], plan


def test_explain_shows_pruning_for_a_lookup_by_id_and_key(pg_conn: psycopg.Connection, spread: dict[str, Any]) -> None:
    plan = _explain(
        pg_conn,
        text("SELECT * FROM executions WHERE execution_id = :id AND scheduled_for = :at"),
        {"id": spread["execution_id"], "at": spread["scheduled_for"]},
    )
    assert _executed_scans(plan) == [partitions.partition_name(spread["today"])], plan


def test_a_drop_that_cannot_get_its_lock_gives_up_quickly_and_is_tried_again(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """A long reader of `executions` holds off the drop's ACCESS EXCLUSIVE lock: the drop waits at most
    `lock_timeout` (so statements queued behind it wait no longer), then gives up until the next round."""
    import time as clock

    from reconciler.storage.db import DatabaseTimeout

    day = _today(pg_conn) - timedelta(days=10)
    _old_day(pg_conn, day)
    reader = psycopg.connect(pg_conn.info.dsn)
    try:
        reader.execute("SELECT count(*) FROM executions")  # holds ACCESS SHARE until its transaction ends
        started = clock.monotonic()
        with pytest.raises(DatabaseTimeout):
            _maintain(database_url)
        assert clock.monotonic() - started < 10
        assert day in _days(pg_conn)
    finally:
        reader.close()
    assert _maintain(database_url).dropped == [day]
