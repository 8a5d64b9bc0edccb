"""The exchange layer's audit trail of orders: recorded before they are sent, under the fencing check.

The broker never talks to the database itself: it asks this store to record an order request
(`record`), which refuses with `Fenced` when the execution lost its lease, and to record the
exchange's answer (`update`, `mirror_status`). The answers are recorded whatever the lease says: an
order that was sent is a fact, and its record must say what became of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.storage.db import Database
from reconciler.storage.fence import Fence, Fenced
from reconciler.storage.statements import exchange as queries


class Orders:
    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)

    async def record(
        self,
        values: Mapping[str, Any],
        fence: Fence | None,
        *,
        then: Callable[[AsyncConnection, uuid.UUID], Awaitable[None]] | None = None,
    ) -> uuid.UUID | None:
        """Insert one order request; its id, or None for a client_order_id the strategy already used.
        Raises `Fenced` when `fence` no longer holds: nothing is recorded, and the caller must send
        nothing. `fence` is None only outside an execution (the broker's own tests). `then(conn, order_id)`
        runs in the same transaction once the order is recorded (an alert that must agree with it)."""

        async def work(conn: AsyncConnection) -> uuid.UUID | None:
            if fence is None:
                order_id = (await conn.execute(queries.insert_order(values))).scalar_one_or_none()
            else:
                order_id = (await conn.execute(queries.insert_fenced_order(values, fence))).scalar_one_or_none()
                if order_id is None and not (await conn.execute(queries.select_fence_holds(fence))).scalar_one():
                    raise Fenced(fence, "order")
            if order_id is not None and then is not None:
                await then(conn, order_id)
            return order_id

        return await self._db.run(work)

    async def update(self, order_id: uuid.UUID, values: Mapping[str, Any]) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(queries.update_order(order_id, values))

        await self._db.run(work)

    async def mirror_status(self, strategy_id: str, answered: list[tuple[str, str, Any]]) -> None:
        """Copy (exchange order id, status, answer) the exchange reported into the matching records."""

        async def work(conn: AsyncConnection) -> None:
            for exchange_order_id, status, response in answered:
                statement = queries.update_order_by_exchange_id(strategy_id, exchange_order_id, status, response)
                await conn.execute(statement)

        await self._db.run(work)

    async def paper_holdings(self, strategy_id: str) -> dict[str, Decimal]:
        """A paper strategy's wallet, available plus locked, per currency (empty before its first trade)."""

        async def work(conn: AsyncConnection) -> dict[str, Decimal]:
            rows = (await conn.execute(queries.select_paper_balances(strategy_id))).mappings().all()
            return {row["currency"]: row["balance"] + row["locked_balance"] for row in rows}

        return await self._db.run(work)

    async def record_wallet_value(self, execution_id: uuid.UUID, value: Decimal, currency: str) -> None:
        """The wallet's value as a paper run ends, stored with the execution while it is still in flight."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(queries.record_wallet_value(execution_id, value, currency))

        await self._db.run(work)
