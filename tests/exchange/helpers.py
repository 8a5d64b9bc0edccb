"""Rows the exchange tests need around them: a strategy and its executions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from reconciler.tables import executions, strategies


async def add_strategy(engine: AsyncEngine, strategy_id: str = "strat-1", exchange: str = "paper") -> str:
    async with engine.begin() as conn:
        await conn.execute(
            pg_insert(strategies)
            .values(
                strategy_id=strategy_id,
                user_id="user-1",
                name=strategy_id,
                code="pass",
                execution_interval=60,
                exchange=exchange,
            )
            .on_conflict_do_nothing()
        )
    return strategy_id


async def add_execution(engine: AsyncEngine, strategy_id: str) -> str:
    """A finished execution row (the broker only needs it to exist for the orders foreign key)."""
    execution_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            insert(executions).values(
                execution_id=execution_id,
                strategy_id=strategy_id,
                trigger="manual",
                scheduled_for=datetime.now(UTC),
                generation=1,
                status="succeeded",
                replica_id="test",
                finished_at=datetime.now(UTC),
            )
        )
    return str(execution_id)
