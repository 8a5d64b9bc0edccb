"""Migration 0012 on a database holding duplicate pending run requests: each strategy's collapse into
its oldest, counted; claimed requests untouched; a second pending request refused after; and back."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from reconciler.storage.db import libpq_url
from tests.integration.scratch import alembic, scratch_database


@pytest.fixture
def url_at_0011(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "se_m12") as url:
        alembic(url, "upgrade", "0011")
        yield url


def _fill(conn: psycopg.Connection) -> dict[str, list[int]]:
    """As 0011 holds them: 'halted' piled up five clicks behind its halt, 'twice' was clicked twice
    (the second in the same instant as the first), 'once' once; 'done' has only claimed requests, and
    'halted' and 'twice' claimed ones too, from earlier runs."""
    for sid in ("halted", "twice", "once", "done"):
        conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
            " VALUES (%s, 'u', 'n', 'x', 60)",
            (sid,),
        )
    conn.execute("INSERT INTO strategy_status (strategy_id, status, halted_at) VALUES ('halted', 'halted', now())")
    ids: dict[str, list[int]] = {}

    def request(sid: str, requested: str, claimed: bool = False) -> None:
        claimed_at = "now() - interval '1 hour'" if claimed else "NULL"
        (rid,) = conn.execute(  # type: ignore[misc]
            f"INSERT INTO run_requests (strategy_id, requested_at, claimed_at, execution_id) VALUES (%s, {requested},"
            f" {claimed_at}, {'gen_random_uuid()' if claimed else 'NULL'}) RETURNING run_request_id",
            (sid,),
        ).fetchone()
        ids.setdefault(sid, []).append(rid)

    for sid in ("halted", "twice", "done"):
        request(sid, "now() - interval '2 hours'", claimed=True)
        request(sid, "now() - interval '2 hours'", claimed=True)
    for minutes in (30, 50, 10, 40, 20):  # the oldest (50) is the second inserted
        request("halted", f"now() - interval '{minutes} minutes'")
    request("twice", "'2026-11-27T10:00:00Z'")
    request("twice", "'2026-11-27T10:00:00Z'")
    request("once", "now()")
    return ids


def test_0012_collapses_duplicate_pending_requests_into_the_oldest_and_downgrades(url_at_0011: str) -> None:
    with psycopg.connect(libpq_url(url_at_0011), autocommit=True) as conn:
        ids = _fill(conn)
        claimed_before = conn.execute(
            "SELECT run_request_id, strategy_id, requested_at, claimed_at, execution_id FROM run_requests"
            " WHERE claimed_at IS NOT NULL ORDER BY run_request_id"
        ).fetchall()
        once_before = conn.execute("SELECT * FROM run_requests WHERE strategy_id = 'once'").fetchall()

    alembic(url_at_0011, "upgrade", "0012")

    with psycopg.connect(libpq_url(url_at_0011), autocommit=True) as conn:
        pending = conn.execute(
            "SELECT strategy_id, run_request_id, request_count FROM run_requests WHERE claimed_at IS NULL"
            " ORDER BY strategy_id"
        ).fetchall()
        assert pending == [
            ("halted", ids["halted"][3], 5),  # the oldest of the five (requested 50 minutes ago)
            ("once", ids["once"][0], 1),
            ("twice", ids["twice"][2], 2),  # requested in the same instant: the first inserted
        ]
        claimed_after = conn.execute(
            "SELECT run_request_id, strategy_id, requested_at, claimed_at, execution_id FROM run_requests"
            " WHERE claimed_at IS NOT NULL ORDER BY run_request_id"
        ).fetchall()
        assert claimed_after == claimed_before
        assert conn.execute("SELECT request_count FROM run_requests WHERE claimed_at IS NOT NULL").fetchall() == [
            (1,)
        ] * len(claimed_before)
        assert [row[:-1] for row in conn.execute("SELECT * FROM run_requests WHERE strategy_id = 'once'")] == [
            tuple(once_before[0])
        ]
        # The database now refuses a second pending request of a strategy; one of another is fine.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('twice')")
        conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('done')")

    alembic(url_at_0011, "downgrade", "0011")

    with psycopg.connect(libpq_url(url_at_0011), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM run_requests WHERE claimed_at IS NULL").fetchone() == (4,)
        conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('twice')")  # no longer unique
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'run_requests'"
            " AND column_name = 'request_count'"
        ).fetchall()
        assert columns == []
