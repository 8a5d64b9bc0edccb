"""An async CoinDCX REST client: public market data, signed spot calls, and the futures basics.

Retries: HTTP 429, 5xx, timeouts and connection failures are retried with exponential backoff
within a budget (attempts and seconds), but only for calls that are safe to repeat. Placing an order
is not: after an ambiguous failure (the request may have reached the exchange), the client first asks
`orders/status` for the order's `client_order_id`; it returns the order if it exists and only sends
the create again (same client_order_id) if the exchange says it does not. So a retry never places an
order twice.

Every signed attempt is serialized and signed afresh (a new `timestamp`), and the signed bytes are
exactly the bytes sent.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_exponential_jitter

from reconciler.crypto import Credentials
from reconciler.exchange import errors
from reconciler.exchange.errors import ExchangeError
from reconciler.exchange.signing import auth_headers, now_ms, serialize_body

T = TypeVar("T")

CLIENT_ORDER_ID_MAX = 36  # CoinDCX's limit


def new_client_order_id() -> str:
    return "se-" + uuid.uuid4().hex  # 35 characters


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    # Kept well inside the sandbox's wall-clock limit: a strategy waits for its call to come back.
    attempts: int = 3
    budget_seconds: float = 15.0
    initial_wait: float = 0.25
    max_wait: float = 4.0


class CoinDCXClient:
    """One strategy's view of CoinDCX. Without credentials only the public calls work."""

    def __init__(
        self,
        *,
        api_url: str = "https://api.coindcx.com",
        public_url: str = "https://public.coindcx.com",
        timeout: float = 10.0,
        credentials: Credentials | None = None,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._public_url = public_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._timeout = timeout
        self._credentials = credentials
        self._retry = retry or RetryPolicy()
        self._clock_ms = clock_ms

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        credentials: Credentials | None = None,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
    ) -> CoinDCXClient:
        return cls(
            api_url=settings.coindcx_api_url,
            public_url=settings.coindcx_public_url,
            timeout=settings.exchange_timeout_seconds,
            credentials=credentials,
            http=http,
            retry=retry,
        )

    def __repr__(self) -> str:
        return f"CoinDCXClient(api_url={self._api_url!r}, credentials={self._credentials!r})"

    def forget_credentials(self) -> None:
        self._credentials = None

    async def aclose(self) -> None:
        self.forget_credentials()
        if self._owns_http:
            await self._http.aclose()

    # --- public market data ---------------------------------------------------------------------

    async def get_ticker(self) -> list[dict[str, Any]]:
        return await self._get("get_ticker", self._api_url, "/exchange/ticker")

    async def get_markets(self) -> list[str]:
        return await self._get("get_markets", self._api_url, "/exchange/v1/markets")

    async def get_markets_details(self) -> list[dict[str, Any]]:
        return await self._get("get_markets_details", self._api_url, "/exchange/v1/markets_details")

    async def get_candles(
        self,
        pair: str,
        interval: str,
        limit: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> list[dict[str, Any]]:
        query = {
            "pair": pair,
            "interval": interval,
            "limit": limit,
            "startTime": start_time,
            "endTime": end_time,
        }
        return await self._get("get_candles", self._public_url, "/market_data/candles", query)

    async def get_orderbook(self, pair: str) -> dict[str, Any]:
        return await self._get("get_orderbook", self._public_url, "/market_data/orderbook", {"pair": pair})

    async def get_trades(self, pair: str, limit: int | None = None) -> list[dict[str, Any]]:
        query = {"pair": pair, "limit": limit}
        return await self._get("get_trades", self._public_url, "/market_data/trade_history", query)

    # --- signed spot calls ------------------------------------------------------------------------

    async def get_balances(self) -> list[dict[str, Any]]:
        return await self._signed("get_balances", "/exchange/v1/users/balances", {})

    async def get_user_info(self) -> Any:
        return await self._signed("get_user_info", "/exchange/v1/users/info", {})

    async def get_order_status(self, id: str | None = None, client_order_id: str | None = None) -> dict[str, Any]:
        params = _one_order_ref("get_order_status", id, client_order_id)
        return await self._signed("get_order_status", "/exchange/v1/orders/status", params)

    async def get_active_orders(self, market: str | None = None, side: str | None = None) -> list[dict[str, Any]]:
        body = await self._signed(
            "get_active_orders", "/exchange/v1/orders/active_orders", {"market": market, "side": side}
        )
        # The docs show a list; the live exchange answers {"orders": [...]}. Strategies get a list.
        return _orders_list("get_active_orders", body)

    async def get_trade_history(
        self,
        symbol: str | None = None,
        limit: int | None = None,
        from_timestamp: int | None = None,
        to_timestamp: int | None = None,
    ) -> list[dict[str, Any]]:
        params = {
            "symbol": symbol,
            "limit": limit,
            "from_timestamp": from_timestamp,
            "to_timestamp": to_timestamp,
        }
        return await self._signed("get_trade_history", "/exchange/v1/orders/trade_history", params)

    async def cancel_order(self, id: str | None = None, client_order_id: str | None = None) -> dict[str, Any]:
        # Safe to repeat: cancelling twice cancels once.
        params = _one_order_ref("cancel_order", id, client_order_id)
        return await self._signed("cancel_order", "/exchange/v1/orders/cancel", params)

    async def cancel_all_orders(self, market: str, side: str | None = None) -> dict[str, Any]:
        params = {"market": market, "side": side}
        return await self._signed("cancel_all_orders", "/exchange/v1/orders/cancel_all", params)

    async def create_order(
        self,
        side: str,
        order_type: str,
        market: str,
        total_quantity: float | Decimal,
        price_per_unit: float | Decimal | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        """Place a spot order; returns the exchange's Order. Never places it twice (see module doc)."""
        client_order_id = client_order_id or new_client_order_id()
        params = {
            "side": side,
            "order_type": order_type,
            "market": market,
            "price_per_unit": _json_number(price_per_unit),
            "total_quantity": _json_number(total_quantity),
            "client_order_id": client_order_id,
        }
        deadline = time.monotonic() + self._retry.budget_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                body = await self._signed_once("create_order", "/exchange/v1/orders/create", params)
                return _first_order("create_order", body)
            except ExchangeError as exc:
                if not _ambiguous(exc):
                    raise  # the exchange answered "no": nothing was placed
                failure = exc
            # The create may have reached the exchange: look before sending it again.
            existing = await self._find_order(client_order_id, failure)
            if existing is not None:
                return existing
            wait = self._backoff(attempt)
            if attempt >= self._retry.attempts or time.monotonic() + wait > deadline:
                raise failure
            await asyncio.sleep(wait)

    async def _find_order(self, client_order_id: str, failure: ExchangeError) -> dict[str, Any] | None:
        """The order with this client_order_id, or None if the exchange says there is none."""
        try:
            return await self.get_order_status(client_order_id=client_order_id)
        except ExchangeError as exc:
            if exc.kind == errors.NOT_FOUND or (exc.kind == errors.REJECTED and "not found" in exc.message.lower()):
                return None
            raise ExchangeError(
                errors.ORDER_UNKNOWN,
                f"create_order: {failure.message}; whether order {client_order_id!r} was placed could not"
                f" be checked ({exc.message}). Check get_order_status(client_order_id={client_order_id!r}).",
                status_code=failure.status_code,
            ) from None

    # --- futures (not exposed to strategies yet: CoinDCX's docs contradict each other on them) ---------

    async def get_futures_positions(self, page: int = 1, size: int = 10) -> list[dict[str, Any]]:
        path = "/exchange/v1/derivatives/futures/positions"
        return await self._signed("get_futures_positions", path, {"page": str(page), "size": str(size)})

    async def get_futures_orders(
        self, status: str = "open", side: str | None = None, page: int = 1, size: int = 10
    ) -> list[dict[str, Any]]:
        params = {"status": status, "side": side, "page": str(page), "size": str(size)}
        return await self._signed("get_futures_orders", "/exchange/v1/derivatives/futures/orders", params)

    async def cancel_futures_order(self, id: str) -> dict[str, Any]:
        path = "/exchange/v1/derivatives/futures/orders/cancel"
        return await self._signed("cancel_futures_order", path, {"id": id})

    async def create_futures_order(self, order: dict[str, Any]) -> Any:
        # Sent once, never retried: futures orders cannot be looked up by client_order_id per the docs.
        path = "/exchange/v1/derivatives/futures/orders/create"
        return await self._signed_once("create_futures_order", path, {"timestamp": None, "order": order})

    # --- transport --------------------------------------------------------------------------------

    async def _get(self, method: str, base: str, path: str, query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}

        async def once() -> Any:
            return await self._send(method, self._http.build_request("GET", base + path, params=params))

        return await self._retrying(once)

    async def _signed(self, method: str, path: str, params: dict[str, Any]) -> Any:
        return await self._retrying(lambda: self._signed_once(method, path, params))

    async def _signed_once(self, method: str, path: str, params: dict[str, Any]) -> Any:
        credentials = self._credentials
        if credentials is None:
            raise ExchangeError(errors.CREDENTIALS, f"{method}: this strategy has no CoinDCX API credentials")
        body = serialize_body(params, timestamp_ms=self._clock_ms())
        headers = auth_headers(credentials.api_key, credentials.api_secret, body)
        request = self._http.build_request("POST", self._api_url + path, content=body, headers=headers)
        return await self._send(method, request)

    async def _send(self, method: str, request: httpx.Request) -> Any:
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException:
            raise ExchangeError(
                errors.TIMEOUT, f"{method}: CoinDCX did not answer within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            # The exception's text names the host, never headers; keep only its class for clarity.
            raise ExchangeError(
                errors.UNAVAILABLE, f"{method}: could not reach CoinDCX ({type(exc).__name__})"
            ) from None
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
            if response.is_success:
                raise ExchangeError(
                    errors.BAD_RESPONSE,
                    f"{method}: CoinDCX answered HTTP {response.status_code} with a body that is not JSON",
                    status_code=response.status_code,
                ) from None
        if not response.is_success:
            raise errors.from_response(method, response.status_code, body if body is not None else response.text)
        return body

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        policy = self._retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.budget_seconds),
            wait=wait_exponential_jitter(
                multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, ExchangeError) and exc.retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _backoff(self, attempt: int) -> float:
        return min(self._retry.max_wait, self._retry.initial_wait * 2 ** (attempt - 1))


def _json_number(value: float | Decimal | None) -> float | int | None:
    """The broker passes amounts as parsed Decimals (at most 20 significant digits); JSON carries numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _ambiguous(exc: ExchangeError) -> bool:
    # Failures after which the order may exist on the exchange (or 429: it surely does not, but
    # looking costs one status call and keeps one rule for all retries).
    return exc.retryable or exc.kind == errors.BAD_RESPONSE


def _one_order_ref(method: str, id: str | None, client_order_id: str | None) -> dict[str, Any]:
    if (id is None) == (client_order_id is None):
        raise ExchangeError(errors.INVALID, f"{method}: pass exactly one of id or client_order_id")
    return {"id": id} if id is not None else {"client_order_id": client_order_id}


def _orders_list(method: str, body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("orders"), list):
        return body["orders"]
    if isinstance(body, list):
        return body
    raise ExchangeError(errors.BAD_RESPONSE, f"{method}: CoinDCX answered an unexpected shape")


def _first_order(method: str, body: Any) -> dict[str, Any]:
    orders = _orders_list(method, body)
    if not orders or not isinstance(orders[0], dict):
        raise ExchangeError(errors.BAD_RESPONSE, f"{method}: CoinDCX answered without the order")
    return orders[0]
