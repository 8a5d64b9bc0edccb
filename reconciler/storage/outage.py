"""Rate-limited reporting of a database outage, and waiting for the database at start-up.

An outage is reported three ways only: one warning when it starts, one a minute while it lasts, and
one line when it ends, with its length. Every task of a process (the loop, the heartbeat, the outcome
recorder, LISTEN) reports into the same `Outage`, so a minute of outage is a handful of lines, not
one per failed attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reconciler.storage.db import DatabaseUnavailable, StoreError, classify, libpq_url

REPORT_EVERY_SECONDS = 60.0


class Outage:
    """Whether the database is down for this process, and the log lines that say so (rate-limited)."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = REPORT_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._every = every
        self._clock = clock
        self.since: float | None = None
        self._reported: float = 0.0
        self.last_error: str | None = None

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        """An attempt failed because the database is unavailable."""
        now = self._clock()
        self.last_error = str(exc)
        if self.since is None:
            self.since = self._reported = now
            self._log.warning("database unavailable, retrying with backoff: %s", exc)
        elif now - self._reported >= self._every:
            self._reported = now
            self._log.warning("database still unavailable after %.0f s: %s", now - self.since, exc)

    def succeeded(self) -> float | None:
        """An attempt succeeded; the outage's length in seconds if this ended one."""
        if self.since is None:
            return None
        length = self._clock() - self.since
        self.since = None
        self._log.warning("database reachable again after an outage of %.1f s", length)
        return length


class BadDatabaseURL(StoreError):
    """The URL itself is wrong (scheme, host, credentials, database name): waiting would not help."""


# Failures no amount of waiting fixes: the URL's credentials or database name are wrong. A failed
# connection attempt carries no SQLSTATE in libpq, only the server's FATAL message.
_URL_WRONG = (
    ("password authentication failed", "wrong password"),
    ("authentication failed", "authentication refused"),
    ("no password supplied", "no password given"),
    ("does not exist", "no such database or role"),
)


def wait_for_database(
    url: str,
    logger: logging.Logger,
    *,
    give_up_after: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until a connection to `url` succeeds, backing off up to 5 s between attempts.

    Raises `BadDatabaseURL` (one line) at once when the URL cannot be right, and
    `DatabaseUnavailable` once `give_up_after` seconds have passed (None: wait for ever).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadDatabaseURL("DATABASE_URL is not a URL; expected postgresql://user:password@host/db") from None
    if parsed.get_backend_name() not in ("postgres", "postgresql"):
        raise BadDatabaseURL(f"DATABASE_URL has scheme {parsed.drivername!r}; expected postgresql://")
    host = parsed.host or parsed.query.get("host") or "localhost"
    where = f"{host}:{parsed.port or 5432}/{parsed.database or ''}"
    outage = Outage(logger)
    started = time.monotonic()
    delay = 0.2
    while True:
        try:
            with psycopg.connect(libpq_url(url), connect_timeout=5, autocommit=True) as conn:
                conn.execute("SELECT 1")
            outage.succeeded()
            return
        except psycopg.Error as exc:
            text = str(exc)
            for needle, meaning in _URL_WRONG:
                if needle in text and "FATAL" in text:
                    raise BadDatabaseURL(f"database {where}: {meaning} ({_fatal(text)})") from None
            if "resolve host" in text or "translate host name" in text:
                raise BadDatabaseURL(f"database {where}: unknown host {parsed.host!r}") from None
            error = classify(exc)
            if not isinstance(error, DatabaseUnavailable):
                raise error or StoreError(_first_line(exc)) from None
            outage.failed(DatabaseUnavailable(f"{where}: {_first_line(exc)}"))
            if give_up_after is not None and time.monotonic() - started >= give_up_after:
                raise DatabaseUnavailable(f"database {where} still unavailable after {give_up_after:g} s") from None
        sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 5.0)


def _fatal(text: str) -> str:
    """The server's own words ('database "x" does not exist') out of libpq's connection error."""
    return text.split("FATAL:", 1)[1].strip().splitlines()[0] if "FATAL:" in text else text.splitlines()[0]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
