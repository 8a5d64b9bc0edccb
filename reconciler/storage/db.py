"""Engines, sessions and the one transaction boundary: driver errors are wrapped here once, and only here.

Every error from the driver leaves this module as one of four `StoreError`s, chosen by SQLSTATE:

- `DatabaseUnavailable`: the server could not be reached, went away, refused more connections or
  is shutting down (class 08, 57P0x, 53300, 25P03, a socket error). Transient: back off and retry.
- `TransactionConflict`: a deadlock or serialization failure (40P01, 40001) that was still there
  after a few immediate retries of the whole transaction.
- `DatabaseTimeout`: a statement or lock timeout (57014, 55P03), or no connection free in the pool.
  Not retried: waiting longer is what the timeout exists to prevent.
- `StoreError` itself: anything else, e.g. a constraint the code should have respected. A bug, never
  reported as "unavailable".

Errors that are not the driver's (a domain exception raised by the caller's work) pass through
unchanged. Each replica session carries server-side timeouts well under the lease, so a replica that
freezes mid-transaction (SIGSTOP, a network partition that keeps the TCP connection open) holds its
row locks for seconds, not for as long as it is frozen; TCP keepalives and `tcp_user_timeout` find a
dead peer on a TCP connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import DictRow, dict_row
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import TextClause

from reconciler import metrics
from reconciler.storage import jsonb

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(Exception):
    """A database error that is none of the kinds below: a bug or bad data, not an outage."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached, or the connection broke mid-transaction."""


class DatabaseTimeout(StoreError):
    """A statement or a lock wait ran out of time on the server (or no pooled connection came free)."""


class TransactionConflict(StoreError):
    """A deadlock or serialization failure that persisted through the immediate retries."""


# SQLSTATEs (PostgreSQL appendix A).
_CONFLICT = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_TIMEOUT = {"57014", "55P03"}  # query_canceled (statement_timeout), lock_not_available (lock_timeout)
_UNAVAILABLE = {
    "57P01",  # admin_shutdown (also pg_terminate_backend)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, shutting down)
    "53300",  # too_many_connections
    "25P03",  # idle_in_transaction_session_timeout: the server closed this session
}
_DRIVER_ERRORS = (sa_exc.SQLAlchemyError, psycopg.Error, OSError)


def sqlstate_of(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def classify(exc: BaseException) -> StoreError | None:
    """The `StoreError` for a driver exception; None for anything that is not the driver's."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, TimeoutError):  # asyncio's: the server accepted and never answered
        return DatabaseUnavailable("database unavailable: no answer in time")
    if not isinstance(exc, _DRIVER_ERRORS):
        return None
    state = sqlstate_of(exc)
    line = _first_line(exc)
    if state in _CONFLICT:
        return TransactionConflict(f"transaction conflict ({state}): {line}")
    if state in _TIMEOUT:
        return DatabaseTimeout(f"database timeout ({state}): {line}")
    if isinstance(exc, sa_exc.TimeoutError):  # the pool had no connection to give
        return DatabaseTimeout(f"database timeout: {line}")
    if state is not None and (state.startswith("08") or state in _UNAVAILABLE):
        return DatabaseUnavailable(f"database unavailable ({state}): {line}")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailable(f"database unavailable: {line}")
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if state is None and isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        # No SQLSTATE: libpq lost the socket (refused, reset, closed) before the server could say why.
        return DatabaseUnavailable(f"database unavailable: {line}")
    return StoreError(f"database error{f' ({state})' if state else ''}: {line}")


_KINDS: dict[type[StoreError], str] = {
    DatabaseUnavailable: "unavailable",
    DatabaseTimeout: "timeout",
    TransactionConflict: "conflict",
}


def wrap(exc: BaseException) -> StoreError:
    """`classify` for callers that already know `exc` came from the driver."""
    return classify(exc) or StoreError(_first_line(exc))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# --- URLs and engines ------------------------------------------------------------------------------


def sync_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 (accepts plain `postgresql://` and `postgres://` too)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def url_password(url: str) -> str | None:
    """The password a database URL carries, if any (for log redaction)."""
    return make_url(url).password


def libpq_url(url: str) -> str:
    """The same database as a libpq URL (for psql and raw psycopg connections)."""
    return make_url(sync_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Server-side limits of every session of an engine, in seconds."""

    statement_timeout: float
    lock_timeout: float
    idle_in_transaction_timeout: float

    @classmethod
    def for_replica(cls, lease_seconds: float) -> SessionLimits:
        """Well under the lease: a replica frozen inside a transaction loses its locks (and its session)
        long before its lease runs out, so other replicas skip its strategies for seconds at most. A
        replica's statements take milliseconds; the longest (a prune batch) well under a second."""
        # At least a second each (at most half the shortest lease allowed): shorter, and a busy host's
        # scheduling hiccup alone would cancel healthy statements.
        return cls(
            statement_timeout=max(1.0, lease_seconds / 4),
            lock_timeout=max(1.0, lease_seconds / 10),
            idle_in_transaction_timeout=max(1.0, lease_seconds / 6),
        )

    @classmethod
    def for_api(cls, operation_timeout: float) -> SessionLimits:
        """A request's transaction never outlives the request's own deadline on the server either."""
        return cls(
            statement_timeout=operation_timeout,
            lock_timeout=operation_timeout / 2,
            idle_in_transaction_timeout=operation_timeout * 2,
        )

    def options(self) -> str:
        """The libpq `options` that set these limits at connection start (no extra round trip)."""
        return " ".join(
            f"-c {name}={max(1, round(seconds * 1000))}"
            for name, seconds in (
                ("statement_timeout", self.statement_timeout),
                ("lock_timeout", self.lock_timeout),
                ("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout),
            )
        )


def connect_args(
    application_name: str,
    limits: SessionLimits | None,
    *,
    connect_timeout: float = 5.0,
    generic_plans: bool = False,
) -> dict[str, Any]:
    """libpq parameters for every connection. Keepalives and `tcp_user_timeout` find a peer that
    vanished without closing the connection (a partition, a frozen host) in ~10 s instead of the
    kernel's two hours; libpq ignores them on Unix sockets, where a dead peer is seen at once.

    `generic_plans`: the session's prepared statements keep one generic plan (`plan_cache_mode`)
    instead of PostgreSQL's choice, which for statements whose cost it cannot estimate without their
    values was a fresh plan at every call. A replica's statements run thousands of times a second
    with plans that do not depend on their values (claims read an index's front, outcomes find rows
    by key and prune partitions when the statement starts); bench_scale.py measured the outcome
    statement planned afresh at each of 12,169 calls, 0.33 ms each, a third of its server time. The
    one statement whose plan does depend on its values (the prune) asks for custom plans itself."""
    args: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": max(1, round(connect_timeout)),
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,
    }
    options = [limits.options()] if limits is not None else []
    if generic_plans:
        options.append("-c plan_cache_mode=force_generic_plan")
    if options:
        args["options"] = " ".join(options)
    return args


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    application_name: str = "strategy-executor",
    pre_ping: bool = True,
    limits: SessionLimits | None = None,
    generic_plans: bool = False,
    lanes: int = 0,
) -> AsyncEngine:
    """An async engine of up to twice `pool_size` connections, and `lanes` more for the connections
    that `Database.run_wire`'s lanes keep checked out. `pre_ping` checks each connection on
    checkout, which costs a round trip per transaction: the API keeps it (a request on a connection the
    server dropped would fail once); replicas turn it off, since `Database.run` retries a transaction
    that found its connection dead. `generic_plans`: see `connect_args` (replicas).
    """
    return create_async_engine(
        sync_url(url),
        # Every connection is kept once opened (none is "overflow"): an overflow connection was closed
        # as it came back to a full pool, and under load a replica (slots + claim + record + heartbeat
        # at once) opened and closed a connection every few executions, each a backend forked and
        # warmed up on the server, its prepared statements lost, so each statement was planned afresh.
        # The most a pool holds is unchanged; an idle one still holds only what it ever needed at once.
        pool_size=2 * pool_size + lanes,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args(application_name, limits, generic_plans=generic_plans),
        json_serializer=jsonb.dumps,  # a float stays a float through jsonb (1.5e300 is not an int)
    )


# --- the transaction boundary ----------------------------------------------------------------------


@contextmanager
def _classified(limit: float | None) -> Iterator[None]:
    """The one place a driver's failure becomes this layer's error (and its metric): a timeout that
    cut a transaction short is the database not answering; the rest as `wrap` classifies them."""
    try:
        yield
    except TimeoutError:  # before OSError, of which it is a subclass
        metrics.database_error("unavailable")
        raise DatabaseUnavailable(f"database unavailable: no answer within {limit:g} seconds") from None
    except _DRIVER_ERRORS as exc:
        error = wrap(exc)
        metrics.database_error(_KINDS.get(type(error), "error"))
        raise error from exc


class Database:
    """An engine and the one way to run a transaction on it (`run`).

    `run(work)` opens a transaction, awaits `work(connection)`, commits, and classifies whatever the
    driver raised. It retries the whole transaction, so `work` must be safe to run again from the
    start (it only talks to the database; each attempt sees nothing of an earlier one):
    - at once, up to `conflict_retries` times, on a deadlock or serialization failure;
    - once, after a short pause, when the connection was found dead (a pooled connection whose
      backend was terminated or restarted), since a fresh connection usually works at once.
    Longer outages are the caller's to wait out (see `reconciler.storage.outage`).
    The Database wraps an engine it does not own: whoever created the engine disposes it.
    """

    def __init__(self, engine: AsyncEngine, *, timeout: float | None = None, conflict_retries: int = 3) -> None:
        self.engine = engine
        self.timeout = timeout
        self.conflict_retries = conflict_retries
        # Connections held by the hot path's sequential callers (see `run_wire`'s `lane`).
        self._lanes: dict[str, _Lane] = {}

    async def run(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, timeout: float | None = None, autocommit: bool = False
    ) -> T:
        """`autocommit`: no BEGIN and no COMMIT, each statement its own transaction (two round trips
        fewer); only for work of one read-only statement, which needs no transaction around it."""
        return await self._retrying(lambda limit: self._attempt(work, limit, autocommit), timeout)

    async def run_wire(
        self,
        work: Callable[[Wire], Awaitable[T]],
        *,
        timeout: float | None = None,
        autocommit: bool = False,
        lane: str | None = None,
    ) -> T:
        """`run` for the replica's hot path: `work` sends its statements through a `Wire` (psycopg
        directly). The same transaction boundary, retries and classification.

        `lane`: the name of a caller that runs one transaction at a time (the claims, the outcome
        batches, the closing reads): its transactions go over one connection it keeps between them,
        instead of a pool checkout and checkin each (SQLAlchemy's engine, pool and greenlet hops: a
        fifth of the serve process's Python calls per execution, in a profile at capacity). A lane
        that is busy (a second caller) or whose connection broke falls back to, or reconnects from,
        the pool; `close_lanes` gives the connections back."""
        if lane is not None:
            held = self._lanes.get(lane)
            if held is None:
                held = self._lanes[lane] = _Lane()
            if not held.busy:
                return await self._retrying(lambda limit: self._lane_attempt(held, work, limit, autocommit), timeout)

        async def attempt(limit: float | None) -> T:
            async with self.transaction(limit, autocommit=autocommit) as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert isinstance(driver, psycopg.AsyncConnection)
                try:
                    # A `send(..., commit=True)` leaves SQLAlchemy's own commit at the end of the
                    # block a no-op (psycopg sends no COMMIT with no transaction open).
                    return await work(Wire(conn, driver))
                except psycopg.Error:
                    if driver.broken or driver.closed:
                        # SQLAlchemy did not see the driver fail: without this it would try to roll
                        # the dead connection back on its way to the pool, and log that failure.
                        await conn.invalidate()
                    raise

        return await self._retrying(attempt, timeout)

    async def _lane_attempt(
        self, lane: _Lane, work: Callable[[Wire], Awaitable[T]], limit: float | None, autocommit: bool
    ) -> T:
        """One transaction of `run_wire` over the lane's own connection: the classification of
        `transaction`; whatever is left open is rolled back, and a connection in doubt (broken,
        cancelled mid-statement, a failed rollback) is discarded, so the next attempt opens another."""
        lane.busy = True
        try:
            with _classified(limit):
                try:
                    if limit is None:
                        return await self._on_lane(lane, work, autocommit)
                    async with asyncio.timeout(limit):
                        return await self._on_lane(lane, work, autocommit)
                except BaseException:
                    await lane.settle()
                    raise
        finally:
            lane.busy = False

    async def _on_lane(self, lane: _Lane, work: Callable[[Wire], Awaitable[T]], autocommit: bool) -> T:
        if lane.wire is None:
            conn = await self.engine.connect()
            try:
                if autocommit:
                    # The driver's flag, set once for the connection's life (no statement is sent).
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert isinstance(driver, psycopg.AsyncConnection)
            except BaseException:
                await conn.close()
                raise
            lane.wire = Wire(conn, driver)
        wire = lane.wire
        result = await work(wire)
        if wire.conn.in_transaction():
            # Statements sent through SQLAlchemy (`wire.conn`) began its own bookkeeping of the
            # transaction: its commit (a no-op on the wire when a `send` already committed).
            await wire.conn.commit()
        else:
            await wire.commit()
        return result

    async def close_lanes(self) -> None:
        """Give the lanes' connections back to the pool (at shutdown)."""
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            await lane.discard(invalidate=False)

    async def _retrying(self, attempt: Callable[[float | None], Awaitable[T]], timeout: float | None) -> T:
        limit = timeout if timeout is not None else self.timeout
        conflicts = 0
        reconnected = False
        while True:
            try:
                return await attempt(limit)
            except TransactionConflict:
                if conflicts >= self.conflict_retries:
                    raise
                conflicts += 1
                metrics.database_retry("transaction conflict")
                # At once, but not in lockstep with the transaction we collided with.
                await asyncio.sleep(random.uniform(0, 0.005 * conflicts))
            except DatabaseUnavailable:
                if reconnected:
                    raise
                reconnected = True
                metrics.database_retry("reconnect")
                await asyncio.sleep(random.uniform(0.02, 0.1))

    async def _attempt(
        self, work: Callable[[AsyncConnection], Awaitable[T]], limit: float | None, autocommit: bool = False
    ) -> T:
        async with self.transaction(limit, autocommit=autocommit) as conn:
            return await work(conn)

    @asynccontextmanager
    async def transaction(
        self, timeout: float | None = None, *, autocommit: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """One attempt, for callers that answer a user and do not retry (the API: the client does):
        the same classification as `run`, bounded by `timeout` (the Database's default when None).

        Cancelling on timeout is safe: psycopg cancels the running statement on the server and the
        connection is rolled back (or discarded) before it returns to the pool.
        """
        limit = timeout if timeout is not None else self.timeout
        with _classified(limit):
            opened = self._autocommit() if autocommit else self.engine.begin()
            if limit is None:
                async with opened as conn:
                    yield conn
            else:
                async with asyncio.timeout(limit), opened as conn:
                    yield conn

    @asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        # The driver's autocommit flag, set and reset on the client (no statement is sent for it).
        async with self.engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")


# --- the hot path ---------------------------------------------------------------------------------


class Wire:
    """One transaction's statements sent through psycopg directly, past SQLAlchemy's execution layer.

    Why, measured: through SQLAlchemy a statement cost the replica ~210 us of CPU, through psycopg
    alone ~90 us (a claim's five round trips: ~1.06 ms against ~0.44 ms). Claims, outcomes and closing
    reads run for every execution. The statements stay the named `text()` constructs of
    `reconciler.storage.statements`, compiled once into psycopg's placeholders; rows come back as
    dicts. What goes over the wire is what SQLAlchemy sent: each statement followed by its Sync, so the
    server is idle in transaction, with its timeout armed, between any two of them. (Pipeline mode
    would save a round trip per statement, but psycopg flushes a statement before its Sync: a replica
    frozen between the two would leave its transaction holding its row locks with no timeout running,
    which `tests/e2e/test_faults.py` catches.) Statements off the hot path use `conn` (SQLAlchemy, the
    same transaction) between sends.
    """

    __slots__ = ("_cursor", "_driver", "conn")

    def __init__(self, conn: AsyncConnection, driver: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn
        self._driver = driver
        # One cursor for every statement a Wire sends (a lane's Wire lives as long as its connection).
        self._cursor: psycopg.AsyncCursor[DictRow] | None = None

    async def send(
        self, *statements: tuple[TextClause, Mapping[str, Any] | None], commit: bool = False
    ) -> list[list[DictRow]]:
        """Run `statements` (each with its parameters) in order; each one's rows (none for a statement
        that returns no rows). `commit`: then COMMIT. The first error raises as the driver's."""
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._driver.cursor(row_factory=dict_row)
        results = []
        for statement, params in statements:
            # Parameters always passed (an empty dict for none): psycopg then turns the compiled
            # text's escaped %% back into %, as SQLAlchemy expects of its driver.
            await cursor.execute(_driver_sql(statement, self.conn.dialect), params or {})
            # Whether it returned rows, from the result's status: `cursor.description` would build
            # a Column object per column at every statement only to be compared with None.
            result = cursor.pgresult
            returned = result is not None and result.status == pq.ExecStatus.TUPLES_OK
            results.append(await cursor.fetchall() if returned else [])
        if commit:
            await self._driver.commit()
        return results

    async def commit(self) -> None:
        """COMMIT on its own (a no-op when a `send` already committed)."""
        await self._driver.commit()

    @property
    def driver(self) -> psycopg.AsyncConnection[Any]:
        return self._driver


class _Lane:
    """The connection one sequential caller of `Database.run_wire` keeps between its transactions."""

    __slots__ = ("busy", "wire")

    def __init__(self) -> None:
        self.wire: Wire | None = None
        self.busy = False

    async def settle(self) -> None:
        """After a transaction failed or was cancelled: roll back what is open, or discard the
        connection when its state is in doubt."""
        wire = self.wire
        if wire is None:
            return
        driver = wire.driver
        if driver.broken or driver.closed or driver.pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
            await self.discard(invalidate=True)
            return
        try:
            if wire.conn.in_transaction():
                await wire.conn.rollback()
            await driver.rollback()  # a no-op with no transaction open
        except BaseException:
            await self.discard(invalidate=True)
            raise

    async def discard(self, *, invalidate: bool) -> None:
        wire, self.wire = self.wire, None
        if wire is None:
            return
        try:
            if invalidate:
                # Closed, not returned to the pool: SQLAlchemy would try to roll it back on the way.
                await wire.conn.invalidate()
            await wire.conn.close()
        except Exception as exc:  # a connection that is already gone: nothing to give back
            log.debug("closing a lane's connection: %s", exc)


# Each statement compiled once, for the one dialect a process uses. Keyed by identity, the statement
# kept beside its text: an id is only unique while its object lives, and a statement made on the fly
# (a test's) could otherwise be collected and its id reused by another.
_COMPILED: dict[int, tuple[TextClause, str]] = {}


def _driver_sql(statement: TextClause, dialect: Dialect) -> str:
    cached = _COMPILED.get(id(statement))
    if cached is None:
        cached = _COMPILED[id(statement)] = (statement, compact_sql(statement.compile(dialect=dialect).string))
    return cached[1]


def compact_sql(sql: str) -> str:
    """`sql` without its `--` comments, indentation and blank lines, as a Wire sends it.

    psycopg parses a statement's placeholders at every execute unless the text is at most 4,096 bytes
    (`psycopg._queries.MAX_CACHED_STATEMENT_LENGTH`), when it keeps the parse. The claim and the
    outcome batch, documented in place, passed that: both ran a regular expression over 4 KB and
    rebuilt their parameter list at every call (2.3% of the serve process's profile). Without the
    comments and indentation every statement here is well under it (`tests/unit/test_statements_sent.py`).

    Conservative: a statement with a string literal that spans lines, dollar quoting or a backslash is
    sent as written (a line's text inside a literal is not ours to touch); a `--` inside a one-line literal
    is left where it is."""
    if "$" in sql or "\\" in sql:
        return sql  # dollar quoting, or a backslash that may escape a quote (E'...'): as written
    kept = []
    for line in sql.splitlines():
        quote = ""  # the quote character of the literal or quoted name open at this point, if any
        end = len(line)
        for at, char in enumerate(line):
            if quote:
                if char == quote:
                    quote = ""  # a doubled quote ('') closes and reopens: the same as one literal
            elif char in "'\"":
                quote = char
            elif line.startswith("--", at):
                end = at
                break
        if quote:
            return sql  # a literal or quoted name spans lines
        code = line[:end].strip()
        if code:
            kept.append(code)
    return "\n".join(kept)
