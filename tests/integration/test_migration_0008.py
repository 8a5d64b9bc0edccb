"""Migration 0008 on a database holding data: every row kept, every invariant holding after, and back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from reconciler.storage.db import libpq_url
from tests.integration.scratch import alembic, scratch_database

_COLUMNS = (
    "execution_id, strategy_id, trigger, scheduled_for, generation, status, replica_id, claimed_at, started_at, "
    "finished_at, lease_expires_at, fencing_token, duration, output, output_truncated, error, result::text, "
    "wallet_value, wallet_currency"
)


@pytest.fixture
def url_at_0007(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "se_m8") as url:
        alembic(url, "upgrade", "0007")
        yield url


def _fill(conn: psycopg.Connection) -> dict[str, uuid.UUID]:
    """Strategies with history over many days (some older than any kept day), one in flight each for two
    of them, a manual run, orders and run requests pointing at executions, as 0007 holds them."""
    for sid in ("a", "b", "c"):
        conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
            " VALUES (%s, 'u', 'n', 'x', 60)",
            (sid,),
        )
        conn.execute("INSERT INTO strategy_status (strategy_id, status) VALUES (%s, 'running')", (sid,))
    conn.execute(
        "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, claimed_at,"
        " started_at, finished_at, duration, output, result, wallet_value, wallet_currency, fencing_token)"
        " SELECT s, 'schedule', date_trunc('minute', now()) - g * interval '37 minutes', 1,"
        "        (ARRAY['succeeded', 'failed', 'timed_out', 'lost'])[1 + g % 4], 'r1', now(), now(), now(), 0.5,"
        "        'out ' || g, jsonb_build_object('g', g), g * 1.5, 'USDT', g"
        " FROM generate_series(1, 2000) g, unnest(ARRAY['a', 'b', 'c']) s"
    )
    ids = {}
    for sid in ("a", "b"):
        (ids[sid],) = conn.execute(
            "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, replica_id, lease_expires_at,"
            " fencing_token) VALUES (%s, 'schedule', date_trunc('minute', now()), 1, 'r1',"
            " now() + interval '30 s', 7) RETURNING execution_id",
            (sid,),
        ).fetchone()
    conn.execute("UPDATE strategy_status SET running_execution_id = %s WHERE strategy_id = 'a'", (ids["a"],))
    # 'b' runs but its status row does not say so (0007 did not demand it); 'c' names a finished run.
    (finished,) = conn.execute("SELECT execution_id FROM executions WHERE strategy_id = 'c' LIMIT 1").fetchone()
    conn.execute("UPDATE strategy_status SET running_execution_id = %s WHERE strategy_id = 'c'", (finished,))
    (manual,) = conn.execute(
        "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, finished_at)"
        " VALUES ('c', 'manual', now() - interval '1 hour', 1, 'succeeded', 'r1', now()) RETURNING execution_id"
    ).fetchone()
    conn.execute("INSERT INTO run_requests (strategy_id, claimed_at, execution_id) VALUES ('c', now(), %s)", (manual,))
    conn.execute(
        "INSERT INTO orders (strategy_id, execution_id, exchange, client_order_id, status, request)"
        " SELECT strategy_id, execution_id, 'paper', 'co-' || execution_id, 'filled', '{}'::jsonb"
        " FROM executions WHERE strategy_id = 'a' ORDER BY scheduled_for DESC LIMIT 50"
    )
    return {**ids, "manual": manual}


def _rows(conn: psycopg.Connection, table: str, columns: str, key: str) -> list[tuple[object, ...]]:
    return conn.execute(f"SELECT {columns} FROM {table} ORDER BY {key}").fetchall()


def test_0008_keeps_every_row_and_every_invariant_and_downgrades(url_at_0007: str) -> None:
    with psycopg.connect(libpq_url(url_at_0007), autocommit=True) as conn:
        ids = _fill(conn)
        executions = _rows(conn, "executions", _COLUMNS, "execution_id")
        orders = _rows(conn, "orders", "*", "order_id")
        requests = _rows(conn, "run_requests", "*", "run_request_id")
    assert len(executions) == 6003

    alembic(url_at_0007, "upgrade", "0008")
    with psycopg.connect(libpq_url(url_at_0007), autocommit=True) as conn:
        assert _rows(conn, "executions", _COLUMNS, "execution_id") == executions
        assert _rows(conn, "orders", "*", "order_id") == orders
        assert _rows(conn, "run_requests", "*", "run_request_id") == requests
        (kind,) = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'executions'").fetchone()
        assert kind == "p"
        checks = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'executions'::regclass AND contype = 'c'"
        ).fetchall()
        assert {name for (name,) in checks} == {
            "ck_executions_finished_iff_terminal",
            "ck_executions_status_known",
            "ck_executions_trigger_known",
        }
        # Recent rows sit in their days; only rows older than the days made are in the default.
        (stray,) = conn.execute(
            "SELECT count(*) FROM executions_default WHERE scheduled_for > now() - interval '34 days'"
        ).fetchone()
        assert stray == 0
        (older,) = conn.execute("SELECT count(*) FROM executions_default").fetchone()
        assert older > 0
        # The pointer is the truth: each running execution is named by its strategy, nothing else is.
        pointers = dict(conn.execute("SELECT strategy_id, running_execution_id FROM strategy_status").fetchall())
        assert pointers == {"a": ids["a"], "b": ids["b"], "c": None}

        # The invariants, enforced by the database after the migration.
        (tick,) = conn.execute(
            "SELECT scheduled_for FROM executions WHERE strategy_id = 'c' AND trigger = 'schedule' LIMIT 1"
        ).fetchone()
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id,"
                " finished_at) VALUES ('c', 'schedule', %s, 1, 'failed', 'r2', now())",
                (tick,),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_executions_in_flight"):
            conn.execute(
                "WITH e AS (INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, replica_id)"
                " VALUES ('a', 'manual', now() - interval '3 days', 1, 'r2') RETURNING execution_id)"
                " UPDATE strategy_status SET running_execution_id = (SELECT execution_id FROM e)"
                " WHERE strategy_id = 'a'"
            )

    alembic(url_at_0007, "downgrade", "0007")
    with psycopg.connect(libpq_url(url_at_0007), autocommit=True) as conn:
        assert _rows(conn, "executions", _COLUMNS, "execution_id") == executions
        assert _rows(conn, "orders", "*", "order_id") == orders
        assert _rows(conn, "run_requests", "*", "run_request_id") == requests
        with pytest.raises(psycopg.errors.UniqueViolation, match="uq_executions_one_in_flight"):
            conn.execute(
                "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, replica_id)"
                " VALUES ('a', 'manual', now(), 1, 'r2')"
            )
