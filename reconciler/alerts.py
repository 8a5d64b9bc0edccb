"""Webhook alerts: the replica's sender, which drains the delivery outbox (never the sandbox).

An event (a halt, a resume, a failure streak, a live order filled or refused, an execution lost) is
written to `alert_deliveries` in the transaction that made it happen. This sender claims due rows,
POSTs each to its webhook with an HMAC-SHA256 signature over the exact body, and records the result;
failures are retried with exponential backoff and jitter until `ALERT_MAX_ATTEMPTS`, each attempt
recorded in `alert_attempts`.

Delivery is at-least-once: a replica that dies after the receiver got the request and before the
result was recorded leaves the lease to expire, and another replica sends it again. Every attempt
carries the same `id` (the delivery id) in the body and in `X-Executor-Event-Id`, so a receiver that
remembers the ids it processed sees each event exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
from typing import Any

import httpx

from reconciler.crypto import CredentialCipher, CryptoError, Sealed
from reconciler.settings import Settings
from reconciler.storage.alert_store import AlertStore, Delivery
from reconciler.storage.db import DatabaseUnavailable, StoreError
from reconciler.webhook_secrets import open_secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Executor-Signature"
EVENT_ID_HEADER = "X-Executor-Event-Id"
EVENT_HEADER = "X-Executor-Event"
ATTEMPT_HEADER = "X-Executor-Attempt"
BATCH = 20
IDLE_POLL_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 600.0


def body_of(delivery: Delivery) -> bytes:
    """The bytes POSTed, the same on every attempt: keys sorted, no spaces."""
    document = {
        "id": str(delivery.delivery_id),
        "event": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "user_id": delivery.user_id,
        "strategy_id": delivery.strategy_id,
        "data": delivery.payload,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` + 1: 1, 2, 4, ... capped, with +-20 % jitter."""
    delay = min(BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), BACKOFF_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        store: AlertStore,
        cipher: CredentialCipher,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = settings
        self._store = store  # the replica's: it claims deliveries in the replica's name
        self._cipher = cipher
        self._owns_http = http is None
        # No redirects: a signed alert goes to the URL its owner registered, nowhere else.
        self._http = http or httpx.AsyncClient(timeout=settings.alert_timeout_seconds, follow_redirects=False)
        self.sent = 0

    async def run(self, queued: asyncio.Event, stop: asyncio.Event) -> None:
        """Until `stop`: claim, send, record; sleep until the next is due or an alert is queued."""
        try:
            while not stop.is_set():
                queued.clear()
                try:
                    wait = await self.pass_once()
                except DatabaseUnavailable as exc:
                    log.debug("alerts: database unavailable: %s", exc)
                    wait = 1.0
                except StoreError:
                    log.exception("alerts: a pass failed")
                    wait = 1.0
                if wait > 0:
                    await _wait_any(queued, stop, wait)
        finally:
            if self._owns_http:
                await self._http.aclose()

    async def pass_once(self) -> float:
        """Send what is due now; how long to wait before the next pass."""
        lease = self._settings.alert_timeout_seconds + 2.0
        claimed = await self._store.claim(BATCH, lease)
        if claimed:
            await asyncio.gather(*(self._deliver(d) for d in claimed))
        if len(claimed) == BATCH:
            return 0.0
        due = await self._store.seconds_until_due()
        if due is None:
            return IDLE_POLL_SECONDS
        return min(max(due, 0.05), IDLE_POLL_SECONDS)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            secret = open_secret(self._cipher, delivery.webhook_id, Sealed(delivery.key_id, delivery.sealed_secret))
        except CryptoError as exc:
            await self._failed(delivery, None, f"the webhook's secret cannot be opened: {exc}")
            return
        body = body_of(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "strategy-executor-alerts",
            EVENT_ID_HEADER: str(delivery.delivery_id),
            EVENT_HEADER: delivery.event,
            ATTEMPT_HEADER: str(delivery.attempt),
            SIGNATURE_HEADER: sign(secret, body),
        }
        del secret
        try:
            response = await self._http.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            await self._failed(delivery, None, f"{type(exc).__name__}: {exc}"[:500])
            return
        if 200 <= response.status_code < 300:
            await self._store.delivered(delivery, response.status_code)
            self.sent += 1
            log.info("alert %s (%s) delivered on attempt %d", delivery.delivery_id, delivery.event, delivery.attempt)
            return
        await self._failed(delivery, response.status_code, f"HTTP {response.status_code}")

    async def _failed(self, delivery: Delivery, status_code: int | None, error: str) -> None:
        abandon = delivery.attempt >= self._settings.alert_max_attempts
        retry_in = backoff(delivery.attempt)
        log.warning(
            "alert %s (%s) attempt %d failed: %s%s",
            delivery.delivery_id,
            delivery.event,
            delivery.attempt,
            error,
            "; giving up" if abandon else f"; retrying in {retry_in:.1f}s",
        )
        await self._store.failed(delivery, status_code=status_code, error=error, retry_in=retry_in, abandon=abandon)


async def _wait_any(first: asyncio.Event, second: asyncio.Event, timeout: float) -> None:
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
