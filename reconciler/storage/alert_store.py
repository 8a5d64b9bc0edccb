"""The alert sender's side of the database: claim due deliveries, record each attempt's result.

Each method is one transaction through `Database.run` (errors classified once, conflicts retried)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.storage.db import Database
from reconciler.storage.statements import alerts as queries

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery:
    delivery_id: UUID
    webhook_id: UUID
    user_id: str
    strategy_id: str | None
    event: str
    payload: dict[str, Any]
    created_at: datetime
    attempt: int
    attempt_id: int
    url: str
    key_id: str
    sealed_secret: bytes

    def __repr__(self) -> str:
        return f"Delivery({self.delivery_id}, {self.event!r}, attempt {self.attempt})"


class AlertStore:
    def __init__(self, engine: AsyncEngine, *, replica_id: str) -> None:
        self._db = Database(engine)
        self.replica_id = replica_id

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        return await self._db.run(work)

    async def claim(self, batch: int, lease_seconds: float) -> list[Delivery]:
        params = {"batch": batch, "lease_seconds": lease_seconds, "replica_id": self.replica_id}

        async def work(conn: AsyncConnection) -> list[Delivery]:
            rows = (await conn.execute(queries.CLAIM_DELIVERIES, params)).mappings().all()
            return [
                Delivery(
                    delivery_id=r["delivery_id"],
                    webhook_id=r["webhook_id"],
                    user_id=r["user_id"],
                    strategy_id=r["strategy_id"],
                    event=r["event"],
                    payload=r["payload"],
                    created_at=r["created_at"],
                    attempt=r["attempts"],
                    attempt_id=r["attempt_id"],
                    url=r["url"],
                    key_id=r["key_id"],
                    sealed_secret=bytes(r["secret"]),
                )
                for r in rows
            ]

        return await self._transaction(work)

    async def seconds_until_due(self) -> float | None:
        async def work(conn: AsyncConnection) -> float | None:
            wait = (await conn.execute(queries.NEXT_DELIVERY_DUE)).scalar_one()
            return None if wait is None else float(wait.total_seconds())

        return await self._transaction(work)

    async def delivered(self, delivery: Delivery, status_code: int) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                queries.MARK_DELIVERED, {"delivery_id": delivery.delivery_id, "attempt": delivery.attempt}
            )
            await conn.execute(
                queries.FINISH_ATTEMPT, {"attempt_id": delivery.attempt_id, "status_code": status_code, "error": None}
            )

        await self._transaction(work)

    async def failed(
        self, delivery: Delivery, *, status_code: int | None, error: str, retry_in: float, abandon: bool
    ) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                queries.MARK_FAILED,
                {
                    "delivery_id": delivery.delivery_id,
                    "attempt": delivery.attempt,
                    "retry_in": retry_in,
                    "error": error,
                    "abandon": abandon,
                },
            )
            await conn.execute(
                queries.FINISH_ATTEMPT, {"attempt_id": delivery.attempt_id, "status_code": status_code, "error": error}
            )

        await self._transaction(work)
