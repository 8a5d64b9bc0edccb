"""Every SQL statement of the exchange layer, named and kept in one place (procrastinate's idea).

Each function builds one SQLAlchemy Core statement; callers own connections and transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Delete, Exists, Insert, Select, Update, and_, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from reconciler.storage.fence import Fence
from reconciler.tables import executions, orders, paper_balances, paper_orders, strategy_credentials

OPEN_PAPER_STATUSES = ("open", "partially_filled")

# --- credentials ----------------------------------------------------------------------------------


def select_credentials(strategy_id: str) -> Select[Any]:
    return select(strategy_credentials.c.key_id, strategy_credentials.c.credentials).where(
        strategy_credentials.c.strategy_id == strategy_id
    )


def select_all_credentials_for_update(batch: int, after: str | None) -> Select[Any]:
    query = select(
        strategy_credentials.c.strategy_id, strategy_credentials.c.key_id, strategy_credentials.c.credentials
    )
    if after is not None:
        query = query.where(strategy_credentials.c.strategy_id > after)
    return query.order_by(strategy_credentials.c.strategy_id).limit(batch).with_for_update()


def update_credentials(strategy_id: str, key_id: str, ciphertext: bytes) -> Update:
    return (
        update(strategy_credentials)
        .where(strategy_credentials.c.strategy_id == strategy_id)
        .values(key_id=key_id, credentials=ciphertext, updated_at=func.now())
    )


def select_one_credential_with_key(key_id: str) -> Select[Any]:
    return (
        select(strategy_credentials.c.strategy_id, strategy_credentials.c.credentials)
        .where(strategy_credentials.c.key_id == key_id)
        .limit(1)
    )


def count_credentials_by_key() -> Select[Any]:
    return select(strategy_credentials.c.key_id, func.count()).group_by(strategy_credentials.c.key_id)


# --- the orders audit trail -------------------------------------------------------------------------


def insert_order(values: Mapping[str, Any]) -> Insert:
    """One order request, written before it is sent (so a crash mid-call still leaves a record)."""
    return pg_insert(orders).values(**values).on_conflict_do_nothing().returning(orders.c.order_id)


def fence_holds(fence: Fence) -> Exists:
    """FENCED (see `statements.replica`): the execution is still running, still this replica's, under
    the same token, within its lease. FOR SHARE holds off lost-marking until the order is recorded."""
    e = executions
    return exists(
        select(e.c.execution_id)
        .where(
            e.c.execution_id == fence.execution_id,
            e.c.scheduled_for == fence.scheduled_for,  # the partition key: one partition looked at
            e.c.status == "running",
            e.c.replica_id == fence.replica_id,
            e.c.fencing_token == fence.token,
            e.c.lease_expires_at > func.now(),
        )
        .with_for_update(read=True)
    )


def insert_fenced_order(values: Mapping[str, Any], fence: Fence) -> Insert:
    """One order request, recorded before it is sent, and only under its execution's fencing check:
    nothing is inserted (and so nothing may be sent) for an execution that lost its lease."""
    columns = list(values)
    source = select(*(literal(values[name], type_=orders.c[name].type).label(name) for name in columns)).where(
        fence_holds(fence)
    )
    return pg_insert(orders).from_select(columns, source).on_conflict_do_nothing().returning(orders.c.order_id)


def select_fence_holds(fence: Fence) -> Select[Any]:
    return select(fence_holds(fence))


def update_order(order_id: uuid.UUID, values: Mapping[str, Any]) -> Update:
    return update(orders).where(orders.c.order_id == order_id).values(**values, updated_at=func.now())


def update_order_by_exchange_id(strategy_id: str, exchange_order_id: str, status: str, response: Any) -> Update:
    return (
        update(orders)
        .where(and_(orders.c.strategy_id == strategy_id, orders.c.exchange_order_id == exchange_order_id))
        .values(status=status, response=response, updated_at=func.now())
    )


# --- paper exchange ----------------------------------------------------------------------------------


def count_paper_balances(strategy_id: str) -> Select[Any]:
    return select(func.count()).select_from(paper_balances).where(paper_balances.c.strategy_id == strategy_id)


def seed_paper_balances(strategy_id: str, balances: Mapping[str, Decimal]) -> Insert:
    """The starting paper wallet; a no-op for currencies the strategy already has rows for."""
    rows = [{"strategy_id": strategy_id, "currency": c, "balance": b, "locked_balance": 0} for c, b in balances.items()]
    return pg_insert(paper_balances).values(rows).on_conflict_do_nothing()


def select_paper_balances(
    strategy_id: str, currencies: Iterable[str] | None = None, *, lock: bool = False
) -> Select[Any]:
    query = select(paper_balances.c.currency, paper_balances.c.balance, paper_balances.c.locked_balance).where(
        paper_balances.c.strategy_id == strategy_id
    )
    if currencies is not None:
        query = query.where(paper_balances.c.currency.in_(sorted(currencies)))
    query = query.order_by(paper_balances.c.currency)
    # Locked in currency order, so two transactions of one strategy cannot deadlock on them.
    return query.with_for_update() if lock else query


def ensure_paper_balance(strategy_id: str, currency: str) -> Insert:
    """A zero row for a currency the strategy did not hold yet (before `add_paper_balance` credits it)."""
    statement = pg_insert(paper_balances).values(
        strategy_id=strategy_id, currency=currency, balance=0, locked_balance=0
    )
    return statement.on_conflict_do_nothing()


def add_paper_balance(strategy_id: str, currency: str, balance: Decimal, locked: Decimal) -> Update:
    """Add (signed) amounts to a balance. An UPDATE, not an upsert: PostgreSQL checks the CHECK
    constraints on an upsert's proposed row before it finds the conflict, and a delta may be negative."""
    return (
        update(paper_balances)
        .where(paper_balances.c.strategy_id == strategy_id, paper_balances.c.currency == currency)
        .values(
            balance=paper_balances.c.balance + balance,
            locked_balance=paper_balances.c.locked_balance + locked,
            updated_at=func.now(),
        )
    )


def insert_paper_order(values: Mapping[str, Any]) -> Insert:
    return pg_insert(paper_orders).values(**values).on_conflict_do_nothing().returning(paper_orders)


def select_paper_order(strategy_id: str, *, id: uuid.UUID | None, client_order_id: str | None) -> Select[Any]:
    query = select(paper_orders).where(paper_orders.c.strategy_id == strategy_id)
    if id is not None:
        return query.where(paper_orders.c.paper_order_id == id).with_for_update()
    return query.where(paper_orders.c.client_order_id == client_order_id).with_for_update()


def select_open_paper_orders(
    strategy_id: str, market: str | None = None, side: str | None = None, *, lock: bool = False
) -> Select[Any]:
    query = select(paper_orders).where(
        paper_orders.c.strategy_id == strategy_id, paper_orders.c.status.in_(OPEN_PAPER_STATUSES)
    )
    if market is not None:
        query = query.where(paper_orders.c.market == market)
    if side is not None:
        query = query.where(paper_orders.c.side == side)
    query = query.order_by(paper_orders.c.created_at, paper_orders.c.paper_order_id)
    return query.with_for_update() if lock else query


def update_paper_order(paper_order_id: uuid.UUID, values: Mapping[str, Any]) -> Update:
    return update(paper_orders).where(paper_orders.c.paper_order_id == paper_order_id).values(**values)


def select_paper_fills(
    strategy_id: str, symbol: str | None, since: datetime | None, until: datetime | None, limit: int
) -> Select[Any]:
    query = select(paper_orders).where(paper_orders.c.strategy_id == strategy_id, paper_orders.c.status == "filled")
    if symbol is not None:
        query = query.where(paper_orders.c.market == symbol)
    if since is not None:
        query = query.where(paper_orders.c.updated_at >= since)
    if until is not None:
        query = query.where(paper_orders.c.updated_at <= until)
    return query.order_by(paper_orders.c.updated_at.desc()).limit(limit)


def delete_paper_account(strategy_id: str) -> tuple[Delete, Delete]:
    """Reset a strategy's paper wallet and book (the next call re-seeds the starting balances)."""
    return (
        paper_orders.delete().where(paper_orders.c.strategy_id == strategy_id),
        paper_balances.delete().where(paper_balances.c.strategy_id == strategy_id),
    )


def record_wallet_value(
    execution_id: uuid.UUID, value: Decimal, currency: str, scheduled_for: datetime | None = None
) -> Update:
    """A paper execution's wallet value at its end; only while the execution is still in flight (an
    execution already recorded lost or finished keeps what it has). `scheduled_for`, the partition
    key, keeps it to one partition of `executions`."""
    statement = update(executions).where(executions.c.execution_id == execution_id, executions.c.status == "running")
    if scheduled_for is not None:
        statement = statement.where(executions.c.scheduled_for == scheduled_for)
    return statement.values(wallet_value=value, wallet_currency=currency)
