"""The records that cross the boundary between the reconcile loop, the sandbox and the broker.

Exceptions never travel through the loop: whatever happens to an execution becomes one frozen
`ExecutionOutcome` at the sandbox boundary, and the loop only records it (kopf's `Outcome` idea).
Nothing here does I/O, so every side imports it freely.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

OutcomeStatus = Literal["succeeded", "failed", "timed_out", "memory_exceeded", "interrupted"]


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """One execution as the sandbox receives it: no secrets, no connection, only what the code sees."""

    execution_id: str
    strategy_id: str
    code: str
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    """How an execution ended, as recorded in the executions table."""

    status: OutcomeStatus
    duration: float  # seconds, fork to exit
    output: str = ""
    output_truncated: bool = False
    error: str | None = None  # a message, with the strategy's own line numbers in any traceback
    result: Any = None  # JSON-able value of RESULT (a truncation marker when over the cap)
    state: dict[str, Any] | None = None  # the new STATE, or None to keep the old one


class BrokerError(Exception):
    """An error the strategy should see as a catchable exception (limits, exchange errors)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# The sandbox forwards every `client.<method>(**params)` call of the strategy to a callable of this
# shape, supplied per execution by the replica. It returns a JSON-able value, or raises BrokerError.
BrokerCall = Callable[[str, dict[str, Any]], Awaitable[Any]]


# The methods of the `CoinDCXClient` a strategy sees, with their parameter names in order; the names are
# CoinDCX's own. The sandbox's proxy and the broker both read this table, so they cannot drift apart.
CLIENT_METHODS: dict[str, tuple[str, ...]] = {
    "get_ticker": (),
    "get_markets": (),
    "get_markets_details": (),
    "get_candles": ("pair", "interval", "limit", "start_time", "end_time"),
    "get_orderbook": ("pair",),
    "get_trades": ("pair", "limit"),
    "get_balances": (),
    "get_user_info": (),
    "create_order": ("side", "order_type", "market", "total_quantity", "price_per_unit", "client_order_id"),
    "cancel_order": ("id", "client_order_id"),
    "cancel_all_orders": ("market", "side"),
    "get_order_status": ("id", "client_order_id"),
    "get_active_orders": ("market", "side"),
    "get_trade_history": ("symbol", "limit", "from_timestamp", "to_timestamp"),
}
