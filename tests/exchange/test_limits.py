"""StrategyLimits read from CONFIG: defaults, the forms of max_order_notional, clear errors."""

from __future__ import annotations

import pytest

from reconciler.exchange import errors
from reconciler.exchange.broker import DEFAULT_MAX_ORDERS_PER_EXECUTION, StrategyLimits
from reconciler.outcome import BrokerError


def test_defaults() -> None:
    limits = StrategyLimits.from_config({})
    assert limits.allowed_markets is None
    assert limits.max_orders_per_execution == DEFAULT_MAX_ORDERS_PER_EXECUTION == 10
    assert limits.notional_cap("USDT") == 1000 and limits.notional_cap("INR") == 100_000
    assert limits.notional_cap("BTC") == 1000


def test_one_number_caps_every_quote_currency() -> None:
    limits = StrategyLimits.from_config({"max_order_notional": 250, "allowed_markets": ["BTCUSDT"]})
    assert limits.notional_cap("USDT") == limits.notional_cap("INR") == 250
    assert limits.allowed_markets == frozenset({"BTCUSDT"})


def test_a_mapping_caps_per_quote_currency_and_keeps_other_defaults() -> None:
    limits = StrategyLimits.from_config({"max_order_notional": {"USDT": 50, "*": 10}})
    assert limits.notional_cap("USDT") == 50
    assert limits.notional_cap("INR") == 100_000
    assert limits.notional_cap("ETH") == 10


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"allowed_markets": "BTCUSDT"}, "allowed_markets"),
        ({"max_order_notional": -1}, "max_order_notional"),
        ({"max_order_notional": {"USDT": "lots"}}, "max_order_notional"),
        ({"max_orders_per_execution": 2.5}, "max_orders_per_execution"),
        ({"max_orders_per_execution": True}, "max_orders_per_execution"),
    ],
)
def test_malformed_limits_name_the_config_key(config: dict, key: str) -> None:
    with pytest.raises(BrokerError) as info:
        StrategyLimits.from_config(config)
    assert info.value.kind == errors.INVALID and f'CONFIG["{key}"]' in info.value.message
