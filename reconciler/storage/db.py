"""Engines and the storage boundary: driver errors are wrapped here once, and only here retried.

`DatabaseUnavailable` means "the server could not be reached or went away": transient, worth a retry
with backoff. Everything else from the driver is a bug or bad data and surfaces as `StoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from reconciler import metrics
from reconciler.storage import jsonb

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(Exception):
    """A database error that is not a lost connection."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached, or the connection broke mid-statement."""


def sync_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 (accepts plain `postgresql://` and `postgres://` too)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a libpq URL (for psql and raw psycopg connections)."""
    return make_url(sync_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 5, application_name: str = "strategy-executor", pre_ping: bool = True
) -> AsyncEngine:
    """An async engine. `pre_ping` checks each connection on checkout, which costs a round trip per
    transaction: the API keeps it (a request on a connection the server dropped would fail once);
    replicas turn it off, since every replica call is retried at the storage boundary anyway.
    """
    return create_async_engine(
        sync_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args={"application_name": application_name, "connect_timeout": 5},
        json_serializer=jsonb.dumps,  # a float stays a float through jsonb (1.5e300 is not an int)
    )


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig or exc
    return isinstance(exc, psycopg.OperationalError | OSError | ConnectionError)


def wrap(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    metrics.database_error("unavailable" if is_disconnect(exc) else "error")
    if is_disconnect(exc):
        return DatabaseUnavailable(f"database unavailable: {_first_line(exc)}")
    return StoreError(_first_line(exc))


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    give_up_after: float = 60.0,
    what: str = "database operation",
) -> T:
    """Run `operation`, retrying it with jittered backoff while the database is unavailable.

    Only `DatabaseUnavailable` is retried: each attempt is a whole transaction, so a retry never
    sees half of an earlier attempt. Other errors propagate at once.
    """
    log_retry = before_sleep_log(log, logging.WARNING)
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential_jitter(initial=0.1, max=5.0),
        stop=stop_after_delay(give_up_after),
        before_sleep=lambda state: (metrics.database_retry(what), log_retry(state)),
        reraise=True,
    ):
        with attempt:
            try:
                return await operation()
            except Exception as exc:
                raise wrap(exc) from exc
    raise AssertionError("unreachable")
