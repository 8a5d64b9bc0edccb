"""Migration 0013 on a database holding infinite times and non-finite measures (hand edits): each
repaired as the service reads its intent, every later such write refused naming its column; and back."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from reconciler.storage.db import libpq_url
from reconciler.tables import STATUS_MEASURES, STATUS_TIMES
from tests.integration.scratch import alembic, scratch_database


@pytest.fixture
def url_at_0012(pg_admin_url: str) -> Iterator[str]:
    with scratch_database(pg_admin_url, "se_m13") as url:
        alembic(url, "upgrade", "0012")
        yield url


def test_0013_repairs_non_finite_values_refuses_new_ones_and_downgrades(url_at_0012: str) -> None:
    with psycopg.connect(libpq_url(url_at_0012), autocommit=True) as conn:
        for sid in ("forever", "past", "nan", "fine"):
            conn.execute(
                "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
                " VALUES (%s, 'u', 'n', 'x', 60)",
                (sid,),
            )
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, halted_at, resume_at, halt_limit, halt_value)"
            " VALUES ('forever', 'halted', now(), 'infinity', 'max_drawdown', 12.5)"
        )
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, halted_at, next_execution_at)"
            " VALUES ('past', 'halted', '-infinity', 'infinity')"
        )
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, halt_value, halt_threshold, avg_execution_time)"
            " VALUES ('nan', 'running', 'NaN', 'Infinity', 'NaN')"
        )
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, next_execution_at, equity_peak)"
            " VALUES ('fine', 'running', '2026-11-28T10:00:00Z', 1000.5)"
        )
        fine_before = conn.execute("SELECT * FROM strategy_status WHERE strategy_id = 'fine'").fetchone()

    alembic(url_at_0012, "upgrade", "0013")

    with psycopg.connect(libpq_url(url_at_0012), autocommit=True) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT strategy_id, resume_at, halt_value, isfinite(halted_at), isfinite(next_execution_at),"
                " halted_at > now() - interval '1 minute', halt_threshold, avg_execution_time"
                " FROM strategy_status"
            )
        }
        assert rows["forever"][0] is None and float(rows["forever"][1]) == 12.5  # a halt with no end: NULL
        assert rows["past"][2:5] == (True, True, True)  # infinite times become now()
        assert rows["nan"][1] is None and rows["nan"][5] is None and rows["nan"][6] is None  # unknown
        assert conn.execute("SELECT * FROM strategy_status WHERE strategy_id = 'fine'").fetchone() == fine_before

        for column in STATUS_TIMES:
            with pytest.raises(psycopg.errors.CheckViolation, match=f"ck_strategy_status_{column}_finite"):
                conn.execute(f"UPDATE strategy_status SET {column} = 'infinity' WHERE strategy_id = 'fine'")
        for column in STATUS_MEASURES:
            for value in ("NaN", "Infinity", "-Infinity"):
                with pytest.raises(psycopg.errors.CheckViolation, match=f"ck_strategy_status_{column}_finite"):
                    conn.execute(f"UPDATE strategy_status SET {column} = %s WHERE strategy_id = 'fine'", (value,))
        conn.execute("UPDATE strategy_status SET resume_at = NULL, halt_value = 3 WHERE strategy_id = 'fine'")

    alembic(url_at_0012, "downgrade", "0012")
    with psycopg.connect(libpq_url(url_at_0012), autocommit=True) as conn:
        conn.execute("UPDATE strategy_status SET resume_at = 'infinity' WHERE strategy_id = 'fine'")
