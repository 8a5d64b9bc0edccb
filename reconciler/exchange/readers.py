"""Read-only views of the exchange layer for the API: a strategy's orders and its paper wallet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from reconciler.exchange import queries

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class OrdersPage:
    items: list[dict[str, Any]]  # newest first
    total: int
    limit: int
    offset: int


async def list_orders(engine: AsyncEngine, strategy_id: str, *, limit: int = 50, offset: int = 0) -> OrdersPage:
    """The strategy's order records (placed, refused, failed), newest first; `limit` is capped at 500."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    async with engine.connect() as conn:
        rows = (await conn.execute(queries.select_orders_page(strategy_id, limit, offset))).mappings().all()
        total = (await conn.execute(queries.count_orders(strategy_id))).scalar_one()
    return OrdersPage([_order(row) for row in rows], total, limit, offset)


async def paper_balances(
    engine: AsyncEngine, strategy_id: str, initial_balances: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """The strategy's paper wallet, as `get_balances()` answers it.

    A strategy that has not traded yet has no rows; pass `initial_balances` (settings'
    paper_initial_balances) to show the wallet it will start with instead of an empty list.
    """
    async with engine.connect() as conn:
        rows = (await conn.execute(queries.select_paper_balances(strategy_id))).mappings().all()
    if not rows and initial_balances:
        return [
            {"currency": currency, "balance": float(amount), "locked_balance": 0.0}
            for currency, amount in sorted(initial_balances.items())
        ]
    return [
        {
            "currency": r["currency"],
            "balance": float(r["balance"]),
            "locked_balance": float(r["locked_balance"]),
        }
        for r in rows
    ]


def _order(row: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able order record (no secrets are ever in it: requests carry no credentials)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            out[key] = float(value)
        elif hasattr(value, "isoformat"):
            out[key] = value.isoformat()
        elif key in ("order_id", "execution_id") and value is not None:
            out[key] = str(value)
        else:
            out[key] = value
    return out
