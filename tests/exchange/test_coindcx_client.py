"""The CoinDCX client against the local fake: signing, shapes, retries, error mapping, no double orders."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from reconciler.crypto import Credentials
from reconciler.exchange import errors
from reconciler.exchange.coindcx import CoinDCXClient, RetryPolicy
from reconciler.exchange.errors import ExchangeError
from reconciler.settings import Settings
from tests.exchange.fake_coindcx import API_KEY, API_SECRET, FakeCoinDCX

CREATE = "/exchange/v1/orders/create"
STATUS = "/exchange/v1/orders/status"
BALANCES = "/exchange/v1/users/balances"
FAST = RetryPolicy(attempts=4, budget_seconds=10, initial_wait=0.01, max_wait=0.05)


def run(fake: FakeCoinDCX, use: Callable[[CoinDCXClient], Awaitable[Any]], **kwargs: Any) -> Any:
    async def main() -> Any:
        client = CoinDCXClient(
            api_url=fake.url,
            public_url=fake.url,
            timeout=kwargs.pop("timeout", 0.5),
            credentials=kwargs.pop("credentials", Credentials(API_KEY, API_SECRET)),
            retry=kwargs.pop("retry", FAST),
        )
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def order_args(**overrides: Any) -> dict[str, Any]:
    args = {
        "side": "buy",
        "order_type": "limit_order",
        "market": "BTCUSDT",
        "total_quantity": 0.001,
        "price_per_unit": 50000,
        "client_order_id": "test-order-1",
    }
    return {**args, **overrides}


def test_public_calls_return_documented_shapes(fake: FakeCoinDCX) -> None:
    async def use(client: CoinDCXClient) -> Any:
        return (
            await client.get_ticker(),
            await client.get_markets_details(),
            await client.get_candles("B-BTC_USDT", "1m", limit=5),
            await client.get_orderbook("B-BTC_USDT"),
        )

    ticker, details, candles, book = run(fake, use)
    assert ticker[0]["market"] == "BTCUSDT" and ticker[0]["last_price"] == "60000.0"
    assert details[0]["pair"] == "B-BTC_USDT"
    assert len(candles) == 5 and set(candles[0]) == {"open", "high", "low", "volume", "close", "time"}
    assert book["asks"] == {"60010.0": "0.7"}
    # Public calls carry no credentials.
    assert all("x-auth-apikey" not in headers for _, _, _, headers in fake.state.requests)


def test_signed_call_sends_exactly_the_signed_compact_body(fake: FakeCoinDCX) -> None:
    balances = run(fake, lambda c: c.get_balances())
    assert balances[0] == {"currency": "USDT", "balance": 1000.0, "locked_balance": 0.0}
    ((method, path, raw, headers),) = fake.state.requests
    assert (method, path) == ("POST", BALANCES)
    assert b" " not in raw and set(json.loads(raw)) == {"timestamp"}
    assert len(str(json.loads(raw)["timestamp"])) == 13  # milliseconds
    assert headers["x-auth-apikey"] == API_KEY
    assert headers["content-type"] == "application/json"


def test_wrong_secret_is_an_auth_error_not_retried_and_secret_not_in_message(fake: FakeCoinDCX) -> None:
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_balances(), credentials=Credentials(API_KEY, "wrong-secret-xyz"))
    assert info.value.kind == errors.AUTH
    assert "Invalid credentials" in info.value.message and "HTTP 401" in info.value.message
    assert "wrong-secret-xyz" not in str(info.value)
    assert fake.state.calls(BALANCES) == 1


def test_429_and_500_are_retried_for_safe_calls(fake: FakeCoinDCX) -> None:
    fake.state.fail(BALANCES, "429", "500")
    assert run(fake, lambda c: c.get_balances())[0]["currency"] == "USDT"
    assert fake.state.calls(BALANCES) == 3


def test_persistent_5xx_gives_up_after_the_attempt_budget(fake: FakeCoinDCX) -> None:
    fake.state.fail(BALANCES, *["503"] * 10)
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_balances())
    assert info.value.kind == errors.UNAVAILABLE and info.value.status_code == 503
    assert fake.state.calls(BALANCES) == FAST.attempts


def test_malformed_json_is_a_bad_response(fake: FakeCoinDCX) -> None:
    fake.state.fail(BALANCES, "malformed_before")
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_balances())
    assert info.value.kind == errors.BAD_RESPONSE
    assert "not JSON" in info.value.message


def test_timeouts_are_retried_then_reported(fake: FakeCoinDCX) -> None:
    fake.state.fail(BALANCES, "slow")
    assert run(fake, lambda c: c.get_balances(), timeout=0.3)[0]["currency"] == "USDT"
    assert fake.state.calls(BALANCES) == 2

    fake.state.reset()
    fake.state.fail(BALANCES, *["slow"] * 2)
    retry = RetryPolicy(attempts=2, budget_seconds=10, initial_wait=0.01, max_wait=0.01)
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_balances(), timeout=0.3, retry=retry)
    assert info.value.kind == errors.TIMEOUT and "0.3 s" in info.value.message


def test_create_that_times_out_after_placing_is_not_placed_twice(fake: FakeCoinDCX) -> None:
    fake.state.fail(CREATE, "place_then_slow")
    order = run(fake, lambda c: c.create_order(**order_args()), timeout=0.3)
    assert order["client_order_id"] == "test-order-1" and order["status"] == "open"
    assert len(fake.state.orders) == 1
    assert fake.state.calls(CREATE) == 1  # found by status, never re-sent
    assert fake.state.calls(STATUS) == 1


@pytest.mark.parametrize("fault", ["place_then_500", "malformed"])
def test_create_with_ambiguous_answer_after_placing_returns_the_one_order(fake: FakeCoinDCX, fault: str) -> None:
    fake.state.fail(CREATE, fault)
    order = run(fake, lambda c: c.create_order(**order_args()))
    assert order["id"] in fake.state.orders
    assert len(fake.state.orders) == 1 and fake.state.calls(CREATE) == 1


@pytest.mark.parametrize("fault", ["500", "429"])
def test_create_that_failed_before_placing_is_resent_after_checking(fake: FakeCoinDCX, fault: str) -> None:
    fake.state.fail(CREATE, fault)
    order = run(fake, lambda c: c.create_order(**order_args()))
    assert len(fake.state.orders) == 1 and order["id"] in fake.state.orders
    assert fake.state.calls(CREATE) == 2 and fake.state.calls(STATUS) == 1
    # Each attempt is signed afresh, with the same client_order_id.
    bodies = [json.loads(raw) for _, path, raw, _ in fake.state.requests if path == CREATE]
    assert {b["client_order_id"] for b in bodies} == {"test-order-1"}


def test_create_is_given_a_client_order_id_when_the_strategy_gives_none(fake: FakeCoinDCX) -> None:
    order = run(fake, lambda c: c.create_order(**order_args(client_order_id=None)))
    assert order["client_order_id"].startswith("se-") and len(order["client_order_id"]) <= 36


def test_create_when_the_check_fails_too_is_order_unknown(fake: FakeCoinDCX) -> None:
    fake.state.fail(CREATE, "place_then_500")
    fake.state.fail(STATUS, *["500"] * 10)
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.create_order(**order_args()))
    assert info.value.kind == errors.ORDER_UNKNOWN
    assert "get_order_status(client_order_id='test-order-1')" in info.value.message
    assert fake.state.calls(CREATE) == 1 and len(fake.state.orders) == 1


def test_exchange_rejection_is_clear_and_not_retried(fake: FakeCoinDCX) -> None:
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.create_order(**order_args(total_quantity=1)))
    assert info.value.kind == errors.REJECTED
    assert info.value.message == "create_order: the exchange rejected the request: Insufficient funds (HTTP 400)"
    assert fake.state.calls(CREATE) == 1 and fake.state.calls(STATUS) == 0


def test_status_active_and_cancel(fake: FakeCoinDCX) -> None:
    async def use(client: CoinDCXClient) -> Any:
        placed = await client.create_order(**order_args())
        status = await client.get_order_status(id=placed["id"])
        active = await client.get_active_orders(market="BTCUSDT")
        cancelled = await client.cancel_order(id=placed["id"])
        after = await client.get_order_status(client_order_id="test-order-1")
        return placed, status, active, cancelled, after

    placed, status, active, cancelled, after = run(fake, use)
    assert status["id"] == placed["id"]
    assert [o["id"] for o in active] == [placed["id"]]  # {"orders": [...]} normalized to a list
    assert cancelled["message"] == "success"
    assert after["status"] == "cancelled"


def test_unknown_order_is_not_found(fake: FakeCoinDCX) -> None:
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_order_status(id="nope"))
    assert info.value.kind == errors.NOT_FOUND and "Order not found" in info.value.message


def test_signed_call_without_credentials(fake: FakeCoinDCX) -> None:
    with pytest.raises(ExchangeError) as info:
        run(fake, lambda c: c.get_balances(), credentials=None)
    assert info.value.kind == errors.CREDENTIALS
    assert fake.state.calls(BALANCES) == 0


def test_base_urls_come_from_settings(fake: FakeCoinDCX) -> None:
    settings = Settings(coindcx_api_url=fake.url, coindcx_public_url=fake.url, exchange_timeout_seconds=2)

    async def main() -> Any:
        client = CoinDCXClient.from_settings(settings, credentials=Credentials(API_KEY, API_SECRET))
        try:
            return await client.get_markets(), await client.get_balances()
        finally:
            await client.aclose()

    markets, balances = asyncio.run(main())
    assert markets == ["BTCUSDT"] and balances[1]["currency"] == "BTC"


def test_repr_hides_the_secret() -> None:
    client = CoinDCXClient(credentials=Credentials("public-api-key-1", API_SECRET))
    assert API_SECRET not in repr(client)
    asyncio.run(client.aclose())
