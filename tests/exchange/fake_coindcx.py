"""A local fake of CoinDCX's REST API (Starlette, served by uvicorn on 127.0.0.1 in a thread).

It checks every signed request byte for byte: HMAC-SHA256 of the raw body as received, keyed by the
secret of the `X-AUTH-APIKEY`, hex, in `X-AUTH-SIGNATURE`; a millisecond `timestamp` in the body.
Request and response shapes follow COINDCX.md. Tests script failures per path with `fail(...)`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "test-key-abc"
API_SECRET = "test-secret-123"

MARKETS_DETAILS = [
    {
        "coindcx_name": "BTCUSDT",
        "symbol": "BTCUSDT",
        "pair": "B-BTC_USDT",
        "ecode": "B",
        "base_currency_short_name": "USDT",
        "target_currency_short_name": "BTC",
        "min_quantity": 0.0001,
        "max_quantity": 1000,
        "min_price": 1,
        "max_price": 1000000,
        "min_notional": 1,
        "base_currency_precision": 2,
        "target_currency_precision": 5,
        "step": 0.00001,
        "order_types": ["market_order", "limit_order"],
        "status": "active",
    }
]


@dataclass
class FakeState:
    keys: dict[str, str] = field(default_factory=lambda: {API_KEY: API_SECRET})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # path -> scripted failures, consumed one per request in order
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # every request seen: (method, path, raw body, headers)
    requests: list[tuple[str, str, bytes, dict[str, str]]] = field(default_factory=list)
    slow_seconds: float = 1.5
    # Every answer takes this long (benchmarks: strategies that wait on a slow exchange).
    latency_seconds: float = 0.0
    # BTCUSDT's last price in the ticker (tests move the market with it).
    btc_price: float = 60_000.0

    def fail(self, path: str, *kinds: str) -> None:
        self.faults[path].extend(kinds)

    def calls(self, path: str) -> int:
        return sum(1 for _, p, _, _ in self.requests if p == path)

    def reset(self) -> None:
        self.btc_price = 60_000.0
        self.orders.clear()
        self.faults.clear()
        self.requests.clear()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message, "status": "error"}, status_code=status)


def build_app(state: FakeState) -> Starlette:
    async def handle(request: Request) -> Response:
        path = request.url.path
        raw = await request.body()
        state.requests.append((request.method, path, raw, dict(request.headers)))
        if state.latency_seconds:
            await asyncio.sleep(state.latency_seconds)
        fault = state.faults[path].pop(0) if state.faults.get(path) else None
        # Faults that happen before the request is processed: nothing takes effect.
        if fault == "429":
            return _error(429, "Too many requests")
        if fault in ("500", "503"):
            return _error(int(fault), "Internal server error")
        if fault == "slow":
            await asyncio.sleep(state.slow_seconds)
        if fault == "malformed_before":
            return Response(b"<html>bad gateway", status_code=200, media_type="text/html")

        if request.method == "POST":
            checked = _check_signed(state, request, raw)
            if isinstance(checked, Response):
                return checked
            body: dict[str, Any] = checked
        else:
            body = dict(request.query_params)
        response = _route(state, path, body)

        # Faults that happen after the request took effect: the client cannot tell it did.
        if fault == "place_then_slow":
            await asyncio.sleep(state.slow_seconds)
        if fault == "place_then_500":
            return _error(500, "Internal server error")
        if fault == "malformed":
            return Response(b'{"orders": [', status_code=200, media_type="application/json")
        return response

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


def _check_signed(state: FakeState, request: Request, raw: bytes) -> dict[str, Any] | Response:
    api_key = request.headers.get("x-auth-apikey")
    signature = request.headers.get("x-auth-signature", "")
    secret = state.keys.get(api_key or "")
    if secret is None:
        return _error(401, "Invalid credentials")
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return _error(401, "Invalid credentials")
    if request.headers.get("content-type") != "application/json":
        return _error(400, "Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return _error(400, "Invalid Request")
    timestamp = body.get("timestamp")
    if not isinstance(timestamp, int) or abs(timestamp - time.time() * 1000) > 10_000:
        return _error(400, "Invalid timestamp")
    return body


def _route(state: FakeState, path: str, body: dict[str, Any]) -> Response:
    if path == "/exchange/ticker":
        return JSONResponse(
            [
                {
                    "market": "BTCUSDT",
                    "change_24_hour": "1.2",
                    "high": "61000",
                    "low": "59000",
                    "volume": "123.4",
                    "last_price": str(state.btc_price),
                    "bid": "59990",
                    "ask": "60010",
                    "timestamp": int(time.time()),
                }
            ]
        )
    if path == "/exchange/v1/markets_details":
        return JSONResponse(MARKETS_DETAILS)
    if path == "/exchange/v1/markets":
        return JSONResponse([m["coindcx_name"] for m in MARKETS_DETAILS])
    if path == "/market_data/candles":
        if body.get("pair") != "B-BTC_USDT":
            return _error(422, "Invalid pair")
        limit = int(body.get("limit") or 3)
        start = int(time.time() // 60) * 60_000
        candles = [
            {"open": 1.0, "high": 2.0, "low": 0.5, "volume": 10.0, "close": 1.5, "time": start - i * 60_000}
            for i in range(limit)
        ]
        return JSONResponse(candles)
    if path == "/market_data/orderbook":
        return JSONResponse({"bids": {"59990.0": "0.5"}, "asks": {"60010.0": "0.7"}})
    if path == "/exchange/v1/users/balances":
        return JSONResponse(
            [
                {"currency": "USDT", "balance": 1000.0, "locked_balance": 0.0},
                {"currency": "BTC", "balance": 0.01, "locked_balance": 0.0},
            ]
        )
    if path == "/exchange/v1/orders/create":
        return _create(state, body)
    if path == "/exchange/v1/orders/status":
        order = _lookup(state, body)
        return JSONResponse(order) if order else _error(404, "Order not found")
    if path == "/exchange/v1/orders/cancel":
        order = _lookup(state, body)
        if order is None:
            return _error(404, "Order not found")
        order["status"] = "cancelled"
        return JSONResponse({"message": "success", "status": 200, "code": 200})
    if path == "/exchange/v1/orders/active_orders":
        active = [
            o
            for o in state.orders.values()
            if o["status"] in ("init", "open", "partially_filled")
            and (not body.get("market") or o["market"] == body["market"])
        ]
        return JSONResponse({"orders": active})
    return _error(404, "Not found")


def _lookup(state: FakeState, body: dict[str, Any]) -> dict[str, Any] | None:
    if "id" in body:
        return state.orders.get(body["id"])
    wanted = body.get("client_order_id")
    return next((o for o in state.orders.values() if o["client_order_id"] == wanted), None)


def _create(state: FakeState, body: dict[str, Any]) -> Response:
    required = ("side", "order_type", "market", "total_quantity")
    if any(key not in body for key in required):
        return _error(422, "Invalid Request")
    if body["market"] not in {m["coindcx_name"] for m in MARKETS_DETAILS}:
        return _error(422, "Invalid market")
    if body["order_type"] == "limit_order" and "price_per_unit" not in body:
        return _error(422, "price_per_unit is required for limit orders")
    if float(body["total_quantity"]) * float(body.get("price_per_unit") or 60000) > 1000:
        return _error(400, "Insufficient funds")
    client_order_id = body.get("client_order_id")
    if client_order_id and any(o["client_order_id"] == client_order_id for o in state.orders.values()):
        return _error(422, "Duplicate client order id")
    now = int(time.time() * 1000)
    order = {
        "id": str(uuid.uuid4()),
        "client_order_id": client_order_id,
        "market": body["market"],
        "order_type": body["order_type"],
        "side": body["side"],
        "status": "open",
        "fee_amount": 0.0,
        "fee": 0.1,
        "total_quantity": body["total_quantity"],
        "remaining_quantity": body["total_quantity"],
        "avg_price": 0.0,
        "price_per_unit": body.get("price_per_unit", 0.0),
        "created_at": now,
        "updated_at": now,
    }
    state.orders[order["id"]] = order
    return JSONResponse({"orders": [order]})


class FakeCoinDCX:
    """The fake served on a free port of 127.0.0.1 by uvicorn in a daemon thread."""

    def __init__(self) -> None:
        self.state = FakeState()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self) -> FakeCoinDCX:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake CoinDCX did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
