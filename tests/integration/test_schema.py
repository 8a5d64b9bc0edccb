"""The schema as migrated: no drift from the tables module, and the invariants hold in the database."""

from __future__ import annotations

import psycopg
import pytest
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from alembic import command
from reconciler.storage.db import sync_url
from reconciler.storage.migrate import alembic_config, migrate


def test_alembic_check_finds_no_drift(database_url: str) -> None:
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.check(config)  # raises CommandError on drift
    engine.dispose()


def test_migrate_twice_is_a_no_op(database_url: str, pg_conn: psycopg.Connection) -> None:
    migrate(database_url)
    (version,) = pg_conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def _strategy(conn: psycopg.Connection, strategy_id: str = "s1") -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval) "
        "VALUES (%s, 'u1', 'n', 'x = 1', 5)",
        (strategy_id,),
    )


def _execution(conn: psycopg.Connection, tick: str, status: str = "running", trigger: str = "schedule") -> None:
    """One execution; a running one is made the strategy's in-flight one in the same statement, as a
    claim does (the foreign key fk_executions_in_flight demands it at the end of the statement)."""
    finished = "NULL" if status == "running" else "now()"
    conn.execute(
        "WITH e AS (INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id,"
        f" finished_at) VALUES ('s1', %s, %s, 1, %s, 'r1', {finished}) RETURNING execution_id, status)"
        " INSERT INTO strategy_status (strategy_id, running_execution_id)"
        " SELECT 's1', execution_id FROM e WHERE status = 'running'"
        " ON CONFLICT (strategy_id) DO UPDATE SET running_execution_id = EXCLUDED.running_execution_id",
        (trigger, tick, status),
    )


def test_one_execution_per_strategy_tick(pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    _execution(pg_conn, "2026-01-01T00:00:00Z", status="succeeded")
    # The unique index is per partition (each day's own copy, named after it): the key says which.
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"\(strategy_id, scheduled_for\)=\(s1, 2026-01-01"):
        _execution(pg_conn, "2026-01-01T00:00:00Z", status="failed")
    # A manual run at the same instant is a different execution, not a second run of the tick.
    _execution(pg_conn, "2026-01-01T00:00:00Z", status="succeeded", trigger="manual")


def test_never_two_in_flight_executions_of_one_strategy(pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    pg_conn.execute("INSERT INTO strategy_status (strategy_id) VALUES ('s1')")
    _execution(pg_conn, "2026-01-01T00:00:00Z")
    # A second running execution can only be inserted by pointing the status row at it, and the first
    # one then is no longer the one its strategy names.
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_executions_in_flight"):
        _execution(pg_conn, "2026-01-01T00:00:05Z")
    # Nor without moving the pointer.
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_executions_in_flight"):
        pg_conn.execute(
            "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, replica_id)"
            " VALUES ('s1', 'schedule', '2026-01-01T00:00:05Z', 1, 'r1')"
        )
    _execution(pg_conn, "2026-01-01T00:00:10Z", status="lost")


def test_terminal_status_requires_finished_at(pg_conn: psycopg.Connection) -> None:
    _strategy(pg_conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="finished_iff_terminal"):
        pg_conn.execute(
            "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id) "
            "VALUES ('s1', 'schedule', now(), 1, 'succeeded', 'r1')"
        )


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("execution_interval", "0", "execution_interval_positive"),
        ("exchange", "'binance'", "exchange_known"),
        ("desired_state", "'paused'", "desired_state_known"),
    ],
)
def test_spec_checks(pg_conn: psycopg.Connection, column: str, value: str, constraint: str) -> None:
    _strategy(pg_conn)
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        pg_conn.execute(f"UPDATE strategies SET {column} = {value}")


def test_desired_state_writes_notify(database_url: str, pg_conn: psycopg.Connection) -> None:
    from reconciler.storage.db import libpq_url

    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN strategy_executor")
        _strategy(pg_conn, "notified")
        notice = next(listener.notifies(timeout=5))
    assert notice.payload == "notified"


def test_downgrade_to_base_and_back(database_url: str) -> None:
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        connection.commit()
        try:
            command.check(config)
        except CommandError as exc:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"drift after downgrade/upgrade: {exc}")
    engine.dispose()


def test_replicas_migrating_at_once_take_turns(pg_admin_url: str) -> None:
    """Fresh database, three migrators at once: the advisory lock lets one work, the others find it done."""
    import threading
    import uuid

    from reconciler.storage.db import libpq_url

    name = f"se_race_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(sync_url(pg_admin_url)).set(database=name).render_as_string(hide_password=False)
    errors: list[BaseException] = []

    def migrator() -> None:
        try:
            migrate(url)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrator) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_status_table_is_vacuumed_after_a_fixed_number_of_changes(pg_conn: psycopg.Connection) -> None:
    # The claim's dead index entries are bounded by the demand between two vacuums, not by a fraction
    # of the table (migration 0009): at a million strategies the default fraction let them pile up.
    (options,) = pg_conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'strategy_status'::regclass").fetchone()
    assert set(options or []) >= {
        "autovacuum_vacuum_scale_factor=0",
        "autovacuum_vacuum_threshold=2000",
        "autovacuum_vacuum_cost_delay=0",
        "vacuum_index_cleanup=on",
    }
