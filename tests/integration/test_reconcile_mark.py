"""The reconcile pass's mark (migration 0010): a pass finds what it must act on through a partial index,
whatever the number of strategies; the mark is set for existing rows by the migration, cleared by the
pass that reconciles, and a replica writing it wakes no one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from reconciler.reconcile import decide
from reconciler.storage.db import Database, create_engine, libpq_url
from reconciler.storage.replica_store import ReplicaStore
from reconciler.storage.statements import replica as queries
from tests.integration.scratch import alembic, scratch_database


@pytest.fixture
def scratch_url(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "se_m10") as url:
        yield url


def _spec(conn: psycopg.Connection, strategy_id: str, generation: int = 1) -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, generation)"
        " VALUES (%s, 'u', 'n', 'RESULT = 1', 60, %s)",
        (strategy_id, generation),
    )


def _marks(conn: psycopg.Connection) -> dict[str, int | None]:
    return dict(conn.execute("SELECT strategy_id, reconciled_generation FROM strategies").fetchall())


def test_the_migration_marks_what_is_reconciled_and_leaves_the_rest_for_a_pass(scratch_url: str) -> None:
    alembic(scratch_url, "upgrade", "0009")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        _spec(conn, "current", generation=3)
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES ('current', 'running', 3)"
        )
        _spec(conn, "behind", generation=4)
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES ('behind', 'running', 3)"
        )
        _spec(conn, "new")
        _spec(conn, "leaving", generation=2)
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES ('leaving', 'running', 2)"
        )
        conn.execute("UPDATE strategies SET delete_requested_at = now() WHERE strategy_id = 'leaving'")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")
        alembic(scratch_url, "upgrade", "0010")
        assert list(listener.notifies(timeout=0.5)) == []  # marking a million rows wakes no replica
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        assert _marks(conn) == {"current": 3, "behind": None, "new": None, "leaving": 2}
        in_index = conn.execute(
            "SELECT strategy_id FROM strategies WHERE reconciled_generation IS DISTINCT FROM generation"
            " OR delete_requested_at IS NOT NULL ORDER BY strategy_id"
        ).fetchall()
        assert [row[0] for row in in_index] == ["behind", "leaving", "new"]
    alembic(scratch_url, "downgrade", "0009")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'strategies'"
        ).fetchall()
        assert "reconciled_generation" not in {row[0] for row in columns}
        with psycopg.connect(libpq_url(scratch_url), autocommit=True) as listener:
            listener.execute("LISTEN strategy_executor")
            conn.execute("UPDATE strategies SET name = 'again' WHERE strategy_id = 'current'")
            assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == ["current"]


def test_a_replica_marking_a_spec_wakes_no_one_and_every_other_update_still_does(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    _spec(pg_conn, "quiet")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")
        pg_conn.execute("UPDATE strategies SET reconciled_generation = generation WHERE strategy_id = 'quiet'")
        assert list(listener.notifies(timeout=0.5)) == []
        pg_conn.execute("UPDATE strategies SET desired_state = 'stopped' WHERE strategy_id = 'quiet'")
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == ["quiet"]


def _reconcile(url: str) -> None:
    async def main() -> None:
        engine = create_engine(url, pool_size=2, pre_ping=False)
        store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)

        async def compiles(code: str) -> str | None:
            return None

        try:
            while (await store.reconcile(decide, compiles)).examined:
                pass
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_pass_acts_on_marked_specs_and_clears_their_marks(database_url: str, pg_conn: psycopg.Connection) -> None:
    for sid in ("one", "two"):
        _spec(pg_conn, sid)
    _reconcile(database_url)
    assert _marks(pg_conn) == {"one": 1, "two": 1}
    status = pg_conn.execute("SELECT strategy_id, status, observed_generation FROM strategy_status ORDER BY 1")
    assert status.fetchall() == [("one", "running", 1), ("two", "running", 1)]

    # A write as the API makes it (the generation bumped): marked by the difference, reconciled, cleared.
    pg_conn.execute(
        "UPDATE strategies SET desired_state = 'stopped', generation = generation + 1 WHERE strategy_id = 'two'"
    )
    _reconcile(database_url)
    assert _marks(pg_conn) == {"one": 1, "two": 2}
    assert pg_conn.execute("SELECT status FROM strategy_status WHERE strategy_id = 'two'").fetchone() == ("stopped",)

    # A stale mark on a spec whose status is current (a replica of an older version reconciled it):
    # the next pass finds it, changes nothing else, and clears it.
    pg_conn.execute("UPDATE strategies SET reconciled_generation = NULL WHERE strategy_id = 'one'")
    before = pg_conn.execute("SELECT updated_at, next_execution_at FROM strategy_status WHERE strategy_id = 'one'")
    before_row = before.fetchone()
    _reconcile(database_url)
    assert _marks(pg_conn)["one"] == 1
    after = pg_conn.execute("SELECT updated_at, next_execution_at FROM strategy_status WHERE strategy_id = 'one'")
    assert after.fetchone() == before_row

    # A deletion request stays marked until the spec is gone.
    pg_conn.execute(
        "UPDATE strategies SET delete_requested_at = now(), generation = generation + 1 WHERE strategy_id = 'one'"
    )
    _reconcile(database_url)
    assert _marks(pg_conn) == {"two": 2}


def test_a_status_row_deleted_by_hand_is_recreated_by_the_next_pass(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """Migration 0011: deleting a status row clears its spec's mark and wakes the replicas; the pass
    that follows recreates the status from the spec, as the full join before 0010 did."""
    for sid in ("kept", "lost"):
        _spec(pg_conn, sid)
    _reconcile(database_url)
    assert _marks(pg_conn) == {"kept": 1, "lost": 1}
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")
        pg_conn.execute("DELETE FROM strategy_status WHERE strategy_id = 'lost'")
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == ["lost"]
    assert _marks(pg_conn) == {"kept": 1, "lost": None}
    _reconcile(database_url)
    assert _marks(pg_conn) == {"kept": 1, "lost": 1}
    status = pg_conn.execute(
        "SELECT strategy_id, status, next_execution_at IS NOT NULL FROM strategy_status ORDER BY 1"
    )
    assert status.fetchall() == [("kept", "running", True), ("lost", "running", True)]


def test_a_spec_deleted_takes_its_status_row_without_the_trigger_marking_anything(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """The status row of a deleted spec goes by the cascade; the trigger finds no spec to mark and
    sends nothing (a finalized deletion must not wake every replica a second time)."""
    _spec(pg_conn, "gone")
    _reconcile(database_url)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")
        pg_conn.execute("DELETE FROM strategies WHERE strategy_id = 'gone'")
        assert list(listener.notifies(timeout=0.5)) == []
    assert pg_conn.execute("SELECT count(*) FROM strategy_status").fetchone() == (0,)


def test_migration_0011_marks_specs_whose_status_row_is_already_gone(scratch_url: str) -> None:
    alembic(scratch_url, "upgrade", "0010")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        for sid in ("orphan", "whole"):
            _spec(conn, sid)
            conn.execute(
                "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES (%s, 'running', 1)",
                (sid,),
            )
        conn.execute("UPDATE strategies SET reconciled_generation = generation")
        conn.execute("DELETE FROM strategy_status WHERE strategy_id = 'orphan'")  # as under 0010: no trigger
        assert _marks(conn) == {"orphan": 1, "whole": 1}
    alembic(scratch_url, "upgrade", "0011")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        assert _marks(conn) == {"orphan": None, "whole": 1}
    alembic(scratch_url, "downgrade", "0010")
    with psycopg.connect(libpq_url(scratch_url), autocommit=True) as conn:
        conn.execute("UPDATE strategies SET reconciled_generation = generation")
        conn.execute("DELETE FROM strategy_status WHERE strategy_id = 'whole'")
        assert _marks(conn) == {"orphan": 1, "whole": 1}  # the trigger went with the downgrade


def test_a_hand_edit_without_the_generation_is_reconciled_like_an_api_write(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """Migration 0011: an operator's UPDATE of a column the replicas act on bumps the generation
    (the API's writes bump it themselves, and a replica's mark changes nothing it acts on)."""
    for sid in ("edited", "renamed"):
        _spec(pg_conn, sid)
    _reconcile(database_url)
    pg_conn.execute("UPDATE strategies SET desired_state = 'stopped' WHERE strategy_id = 'edited'")
    pg_conn.execute("UPDATE strategies SET name = 'another name' WHERE strategy_id = 'renamed'")
    generations = dict(pg_conn.execute("SELECT strategy_id, generation FROM strategies").fetchall())
    assert generations == {"edited": 2, "renamed": 1}
    _reconcile(database_url)
    status = pg_conn.execute("SELECT strategy_id, status, observed_generation FROM strategy_status ORDER BY 1")
    assert status.fetchall() == [("edited", "stopped", 2), ("renamed", "running", 1)]
    assert _marks(pg_conn) == {"edited": 2, "renamed": 1}  # the marks themselves bumped nothing

    # A write as the API makes it (its own bump): one bump, not two.
    pg_conn.execute(
        "UPDATE strategies SET desired_state = 'running', generation = generation + 1 WHERE strategy_id = 'edited'"
    )
    assert pg_conn.execute("SELECT generation FROM strategies WHERE strategy_id = 'edited'").fetchone() == (3,)
    pg_conn.execute("UPDATE strategies SET execution_interval = 5 WHERE strategy_id = 'edited'")
    _reconcile(database_url)
    row = pg_conn.execute(
        "SELECT st.schedule_interval, st.observed_generation FROM strategy_status st WHERE strategy_id = 'edited'"
    )
    assert row.fetchone() == (5, 4)


def test_an_in_flight_execution_deleted_by_hand_frees_its_strategy(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """Migration 0011: the status's pointer to an execution deleted while it ran is cleared, so the
    strategy is claimed again; deleting finished executions (retention) touches no status row."""
    _spec(pg_conn, "wedged")
    _reconcile(database_url)

    async def claim() -> list[str]:
        engine = create_engine(database_url, pool_size=2, pre_ping=False)
        store = ReplicaStore(Database(engine), replica_id="r1", lease_seconds=30)
        try:
            await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
            return [c.strategy_id for c in (await store.claim(5)).claims]
        finally:
            await store.db.close_lanes()
            await engine.dispose()

    assert asyncio.run(claim()) == ["wedged"]
    pg_conn.execute("DELETE FROM executions WHERE strategy_id = 'wedged' AND status = 'running'")
    row = pg_conn.execute("SELECT running_execution_id FROM strategy_status WHERE strategy_id = 'wedged'")
    assert row.fetchone() == (None,)
    pg_conn.execute(
        "UPDATE strategy_status SET next_execution_at = now() - interval '1 second' WHERE strategy_id = 'wedged'"
    )
    assert asyncio.run(claim()) == ["wedged"]


def test_finding_nothing_to_reconcile_costs_the_same_at_ten_and_at_twenty_thousand_strategies(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """The pass's first statement, run once a minute per replica whether or not anything changed (and by
    every replica for every write), reads a few index pages: its buffers do not grow with the table
    (before 0010 it joined every row)."""

    def buffers() -> int:
        sql = queries.LOCK_UNRECONCILED.compile(dialect=PGDialect_psycopg()).string
        plan = pg_conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", {"batch": 200}).fetchone()[0]
        top = plan[0]["Plan"]
        return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))

    def load(first: int, count: int) -> None:
        pg_conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, reconciled_generation)"
            " SELECT 'bulk' || i, 'u', 'n', 'RESULT = 1', 60, 1 FROM generate_series(%s::int, %s::int) i",
            (first, first + count - 1),
        )
        pg_conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, observed_generation)"
            " SELECT 'bulk' || i, 'running', 1 FROM generate_series(%s::int, %s::int) i",
            (first, first + count - 1),
        )
        pg_conn.execute("ANALYZE strategies")
        pg_conn.execute("ANALYZE strategy_status")

    load(0, 10_000)
    at_10k = buffers()
    load(10_000, 10_000)
    at_20k = buffers()
    assert at_20k <= at_10k + 2, (at_10k, at_20k)
    assert at_20k < 50, at_20k  # the whole table is ~400 pages; the join alone read them all
