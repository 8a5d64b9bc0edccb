"""The transaction boundary against a real PostgreSQL: each fault is classified by its SQLSTATE, once.

Deadlocks are retried at once; a terminated backend is reconnected; statement and lock timeouts are a
clear `DatabaseTimeout`; a refused connection is `DatabaseUnavailable`; anything else is a plain
`StoreError` (a bug), never "unavailable"; the caller's own exceptions pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from reconciler.storage.db import (
    Database,
    DatabaseTimeout,
    DatabaseUnavailable,
    SessionLimits,
    StoreError,
    TransactionConflict,
    Wire,
    create_engine,
    libpq_url,
)
from reconciler.storage.outage import BadDatabaseURL, Outage, wait_for_database
from reconciler.storage.statements import replica as replica_queries

T = TypeVar("T")


def with_db(url: str, use: Callable[[Database], Awaitable[T]], **engine: Any) -> T:
    async def main() -> T:
        eng = create_engine(url, pool_size=4, pre_ping=False, **engine)
        try:
            return await use(Database(eng))
        finally:
            await eng.dispose()

    return asyncio.run(main())


@pytest.fixture
def two_rows(pg_conn: psycopg.Connection) -> None:
    pg_conn.execute("CREATE TABLE pair (id int PRIMARY KEY, n int NOT NULL)")
    pg_conn.execute("INSERT INTO pair VALUES (1, 0), (2, 0)")


@pytest.mark.usefixtures("two_rows")
def test_a_deadlock_is_retried_at_once_and_both_transactions_commit(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    attempts = {"ab": 0, "ba": 0}

    async def use(db: Database) -> None:
        both_hold_one = asyncio.Barrier(2)

        def crossing(first: int, second: int, name: str) -> Callable[[AsyncConnection], Awaitable[None]]:
            async def work(conn: AsyncConnection) -> None:
                attempts[name] += 1
                await conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :id"), {"id": first})
                if attempts[name] == 1:
                    await both_hold_one.wait()  # the first attempts cross: a guaranteed deadlock
                await conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :id"), {"id": second})

            return work

        await asyncio.gather(db.run(crossing(1, 2, "ab")), db.run(crossing(2, 1, "ba")))

    with_db(database_url, use)
    # One of them was chosen as the victim and retried; both committed exactly once.
    assert sorted(attempts.values()) == [1, 2]
    assert pg_conn.execute("SELECT n FROM pair ORDER BY id").fetchall() == [(2,), (2,)]


@pytest.mark.usefixtures("two_rows")
def test_a_deadlock_that_persists_is_a_transaction_conflict(database_url: str) -> None:
    async def use(db: Database) -> list[BaseException | None]:
        db.conflict_retries = 0
        both_hold_one = asyncio.Barrier(2)

        def crossing(first: int, second: int) -> Callable[[AsyncConnection], Awaitable[None]]:
            async def work(conn: AsyncConnection) -> None:
                await conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :id"), {"id": first})
                await both_hold_one.wait()
                await conn.execute(text("UPDATE pair SET n = n + 1 WHERE id = :id"), {"id": second})

            return work

        results = await asyncio.gather(db.run(crossing(1, 2)), db.run(crossing(2, 1)), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    errors = [e for e in with_db(database_url, use) if e is not None]
    assert len(errors) == 1 and type(errors[0]) is TransactionConflict
    assert "40P01" in str(errors[0])


@pytest.mark.usefixtures("two_rows")
def test_a_lock_wait_over_lock_timeout_is_a_database_timeout(database_url: str, pg_conn: psycopg.Connection) -> None:
    limits = SessionLimits(statement_timeout=5, lock_timeout=0.2, idle_in_transaction_timeout=5)
    with pg_conn.transaction():
        pg_conn.execute("SELECT * FROM pair WHERE id = 1 FOR UPDATE")

        async def use(db: Database) -> None:
            await db.run(lambda conn: conn.execute(text("UPDATE pair SET n = 1 WHERE id = 1")))

        with pytest.raises(DatabaseTimeout, match="55P03"):
            with_db(database_url, use, limits=limits)


def test_a_statement_over_statement_timeout_is_a_database_timeout(database_url: str) -> None:
    limits = SessionLimits(statement_timeout=0.2, lock_timeout=0.1, idle_in_transaction_timeout=5)

    async def use(db: Database) -> None:
        await db.run(lambda conn: conn.execute(text("SELECT pg_sleep(3)")))

    with pytest.raises(DatabaseTimeout, match="57014"):
        with_db(database_url, use, limits=limits)


def test_replica_sessions_carry_the_limits_and_keepalives(database_url: str) -> None:
    limits = SessionLimits.for_replica(30.0)

    async def use(db: Database) -> list[str]:
        async def work(conn: AsyncConnection) -> list[str]:
            names = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            return [(await conn.execute(text(f"SHOW {name}"))).scalar_one() for name in names]

        return await db.run(work)

    assert with_db(database_url, use, limits=limits) == ["7500ms", "3s", "5s"]
    assert limits.idle_in_transaction_timeout < limits.statement_timeout < 30.0 / 2


def test_replica_sessions_keep_generic_plans_and_the_prune_asks_for_its_own(database_url: str) -> None:
    async def use(db: Database) -> tuple[str, str]:
        async def work(conn: AsyncConnection) -> tuple[str, str]:
            session = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
            await conn.execute(replica_queries.PLANS_BY_VALUE)
            return session, (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()

        return await db.run(work)

    assert with_db(database_url, use, generic_plans=True) == ("force_generic_plan", "auto")
    assert with_db(database_url, use) == ("auto", "auto")  # the API's sessions: PostgreSQL's choice


def test_a_terminated_backend_is_reconnected_transparently(database_url: str, pg_admin_url: str) -> None:
    async def use(db: Database) -> tuple[int, int]:
        before = await db.run(lambda conn: _scalar(conn, "SELECT pg_backend_pid()"))
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before,))
        # The pooled connection is dead; the first attempt finds out (57P01), the retry reconnects.
        after = await db.run(lambda conn: _scalar(conn, "SELECT pg_backend_pid()"))
        return before, after

    before, after = with_db(database_url, use)
    assert before != after


def test_a_refused_connection_is_database_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused

        async def use(db: Database) -> None:
            await db.run(lambda conn: conn.execute(text("SELECT 1")))

        with pytest.raises(DatabaseUnavailable):
            with_db(f"postgresql://nobody@127.0.0.1:{port}/x", use)


@pytest.mark.usefixtures("two_rows")
def test_anything_else_is_a_plain_store_error_not_unavailable(database_url: str) -> None:
    async def use(db: Database) -> None:
        await db.run(lambda conn: conn.execute(text("INSERT INTO pair VALUES (1, 0)")))

    with pytest.raises(StoreError, match="23505") as caught:
        with_db(database_url, use)
    assert type(caught.value) is StoreError


def test_the_callers_own_exceptions_pass_through(database_url: str) -> None:
    class Domain(Exception):
        pass

    async def work(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT 1"))
        raise Domain("mine")

    with pytest.raises(Domain):
        with_db(database_url, lambda db: db.run(work))


async def _scalar(conn: AsyncConnection, sql: str) -> Any:
    return (await conn.execute(text(sql))).scalar_one()


# --- start-up and outage reporting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@localhost/db", "scheme 'mysql'"),
        ("not a url", "not a URL"),
        ("postgresql://u@no-such-host.invalid/db", "unknown host 'no-such-host.invalid'"),
    ],
)
def test_a_wrong_url_is_one_line_at_once(url: str, message: str) -> None:
    with pytest.raises(BadDatabaseURL, match=message) as caught:
        wait_for_database(url, logging.getLogger("test"), give_up_after=30)
    assert "\n" not in str(caught.value)


def test_a_wrong_password_or_database_is_one_line_at_once(database_url: str, pg_conn: psycopg.Connection) -> None:
    pg_conn.execute("CREATE ROLE wrongpw LOGIN PASSWORD 'right'")
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    missing = url.set(database="no_such_database").render_as_string(hide_password=False)
    with pytest.raises(BadDatabaseURL, match="no such database"):
        wait_for_database(missing, logging.getLogger("test"), give_up_after=30)
    if url.host is not None:  # over TCP the server asks for the password; the embedded socket trusts
        wrong = url.set(username="wrongpw", password="wrong").render_as_string(hide_password=False)
        with pytest.raises(BadDatabaseURL, match=r"password|authentication"):
            wait_for_database(wrong, logging.getLogger("test"), give_up_after=30)


def test_waiting_for_a_database_that_never_comes_logs_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        slept: list[float] = []
        with caplog.at_level(logging.INFO, logger="test-wait"), pytest.raises(DatabaseUnavailable):
            wait_for_database(
                f"postgresql://u@127.0.0.1:{port}/db",
                logging.getLogger("test-wait"),
                give_up_after=1.5,
                sleep=lambda s: slept.append(s) or __import__("time").sleep(min(s, 0.1)),
            )
    assert len(slept) >= 3  # several attempts...
    lines = [r for r in caplog.records if r.name == "test-wait"]
    assert len(lines) == 1 and "unavailable" in lines[0].getMessage()  # ...one line


def test_outage_reports_start_once_a_minute_and_end_with_length(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = Outage(logging.getLogger("test-outage"), clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test-outage"):
        for _ in range(150):  # 150 failures over 150 s
            outage.failed(DatabaseUnavailable("refused"))
            now[0] += 1.0
        length = outage.succeeded()
        assert outage.succeeded() is None  # no outage, nothing to say
    lines = [r.getMessage() for r in caplog.records if r.name == "test-outage"]
    assert len(lines) == 4, lines  # start, at 60 s, at 120 s, end
    assert "retrying" in lines[0] and "after 60 s" in lines[1] and "after 120 s" in lines[2]
    assert length == 150.0 and "150.0 s" in lines[3]


# --- the hot path's Wire: the same boundary, psycopg directly ----------------------------------------


@pytest.mark.usefixtures("two_rows")
def test_the_wire_runs_its_statements_in_order_and_commits_with_them(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    bump = text("UPDATE pair SET n = n + :by WHERE id = :id RETURNING n, '100%' AS literal")

    async def use(db: Database) -> list[list[Any]]:
        async def work(wire: Wire) -> list[list[Any]]:
            return await wire.send(
                (bump, {"by": 5, "id": 1}), (text("SET LOCAL lock_timeout = 1000"), None), commit=True
            )

        return await db.run_wire(work)

    rows = with_db(database_url, use)
    assert rows == [[{"n": 5, "literal": "100%"}], []]
    assert pg_conn.execute("SELECT n FROM pair WHERE id = 1").fetchone() == (5,)


@pytest.mark.usefixtures("two_rows")
def test_wire_work_that_fails_after_a_send_leaves_nothing_behind(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    class Domain(Exception):
        pass

    async def use(db: Database) -> None:
        async def work(wire: Wire) -> None:
            await wire.send((text("UPDATE pair SET n = 9 WHERE id = 2"), None))
            raise Domain("after the send, before the commit")

        await db.run_wire(work)

    with pytest.raises(Domain):
        with_db(database_url, use)
    assert pg_conn.execute("SELECT n FROM pair WHERE id = 2").fetchone() == (0,)


@pytest.mark.usefixtures("two_rows")
def test_wire_errors_are_classified_like_any_other(database_url: str, pg_conn: psycopg.Connection) -> None:
    duplicate = text("INSERT INTO pair VALUES (1, 0)")

    async def insert(db: Database) -> None:
        await db.run_wire(lambda wire: wire.send((text("SELECT 1"), None), (duplicate, None), commit=True))

    with pytest.raises(StoreError, match="23505") as caught:
        with_db(database_url, insert)
    assert type(caught.value) is StoreError

    limits = SessionLimits(statement_timeout=5, lock_timeout=0.2, idle_in_transaction_timeout=5)
    with pg_conn.transaction():
        pg_conn.execute("SELECT * FROM pair WHERE id = 1 FOR UPDATE")

        async def wait(db: Database) -> None:
            await db.run_wire(lambda wire: wire.send((text("UPDATE pair SET n = 1 WHERE id = 1"), None)))

        with pytest.raises(DatabaseTimeout, match="55P03"):
            with_db(database_url, wait, limits=limits)


def test_the_wire_reconnects_after_a_terminated_backend(database_url: str, pg_admin_url: str) -> None:
    pid = text("SELECT pg_backend_pid() AS pid")

    async def use(db: Database) -> tuple[int, int]:
        [[before]] = await db.run_wire(lambda wire: wire.send((pid, None), commit=True))
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (before["pid"],))
        [[after]] = await db.run_wire(lambda wire: wire.send((pid, None), commit=True))
        return before["pid"], after["pid"]

    before, after = with_db(database_url, use)
    assert before != after
