"""LISTEN as a service of the storage layer: the replicas' wake-ups, on a connection of their own.

Only a wake-up on top of polling: a lost connection is reconnected with backoff, and the caller is
told (`disconnected`) so it polls meanwhile, and (`connected`) so it does a full pass, since whatever
was sent while nobody listened is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from reconciler.storage.db import connect_args, libpq_url
from reconciler.storage.statements.replica import NOTIFY_CHANNEL, SCHEDULE_CHANGED

log = logging.getLogger(__name__)

__all__ = ["SCHEDULE_CHANGED", "Listener"]


class Listener:
    def __init__(self, database_url: str, *, application_name: str = "strategy-executor listen") -> None:
        self._url = libpq_url(database_url)
        self._args = connect_args(application_name, None)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        connected: Callable[[], None],
        notified: Callable[[str], None],
        disconnected: Callable[[], None],
    ) -> None:
        """Listen until `stop` is set (or the task is cancelled); `notified(payload)` per notification."""
        delay = 0.5
        while not stop.is_set():
            up = False
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True, **self._args) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay, up = 0.5, True
                    connected()
                    async for notify in conn.notifies():
                        notified(notify.payload)
            except (psycopg.Error, OSError) as exc:
                log.debug("listen connection lost: %s", exc)
            if up:
                disconnected()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
