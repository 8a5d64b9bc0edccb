"""The exchange layer's side of the database: orders, the paper wallet and book, the risk guard.

The broker, the paper exchange and the risk guard never talk to the database themselves: they call
these methods and receive plain values. Every method is one transaction through `Database.run`, so
driver errors leave as `StoreError`s (classified once) and a deadlock or a connection found dead is
retried there; each transaction's work reads what it needs afresh, so a retry is safe.

Fencing. An execution's order request is recorded before it is sent, by the statement that checks
the execution's fence (`record_order`); when the fence no longer holds nothing is recorded and
`Fenced` is raised: the caller must send nothing. A paper call given a fence checks it again as the
last statement of its own transaction and holds it (FOR SHARE) until that transaction commits, so a
paper fill, the balances it moves and the order records it updates commit only under the fence. Answers
from the exchange (`update_order`, `mirror_status`) are recorded whatever the fence says: an order
that was sent is a fact, and its record must say what became of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reconciler.crypto import CredentialCipher, Credentials
from reconciler.risk import Breach, Resume
from reconciler.storage import credentials as credential_store
from reconciler.storage import jsonb
from reconciler.storage.db import Database, Wire
from reconciler.storage.fence import Fence, Fenced
from reconciler.storage.risk_writes import enqueue_alert, halt
from reconciler.storage.statements import exchange as queries
from reconciler.storage.statements import risk as risk_queries

T = TypeVar("T")
Record = dict[str, Any]
# An alert to enqueue with an order's record: (event, payload).
Alert = tuple[str, dict[str, Any]]

OPEN_PAPER_STATUSES = queries.OPEN_PAPER_STATUSES
# How long a closing read waits for others to share its transaction (see `risk_view_and_paper_holdings`).
# It is read after the execution's process is gone (its slot already taken by the next one), so the wait
# delays only when the outcome is recorded.
CLOSING_READ_WINDOW = 0.005


@dataclass(frozen=True, slots=True)
class RiskView:
    """What the risk guard reads once per execution: the limits (spec), what it remembered
    (status), and the database's clock (the UTC day is the database's, not a replica's)."""

    risk: Any  # the spec's risk object as stored (the guard reads it leniently)
    status: str | None
    risk_day: date | None
    day_start_equity: Decimal | None
    equity_peak: Decimal | None
    db_now: datetime


async def _risk_view(conn: AsyncConnection, strategy_id: str) -> RiskView | None:
    row = (await conn.execute(risk_queries.SELECT_RISK, {"strategy_id": strategy_id})).mappings().first()
    return None if row is None else view_of(row)


def view_of(row: Any) -> RiskView:
    """A RiskView from a row of its columns (the closing reads', a claim's)."""
    return RiskView(
        risk=row["risk"],
        status=row["status"],
        risk_day=row["risk_day"],
        day_start_equity=row["day_start_equity"],
        equity_peak=row["equity_peak"],
        db_now=row["db_now"],
    )


async def _paper_holdings(conn: AsyncConnection, strategy_id: str) -> dict[str, Decimal]:
    rows = (await conn.execute(queries.SELECT_PAPER_BALANCES, {"strategy_id": strategy_id})).mappings().all()
    return {row["currency"]: row["balance"] + row["locked_balance"] for row in rows}


def _fence_params(fence: Fence) -> dict[str, Any]:
    return {
        "fence_execution_id": fence.execution_id,
        "fence_replica_id": fence.replica_id,
        "fence_token": fence.token,
        "fence_scheduled_for": fence.scheduled_for,
    }


def _json(value: Any) -> str | None:
    return None if value is None else jsonb.dumps(value)


_ORDER_FIELDS = (
    "strategy_id",
    "execution_id",
    "exchange",
    "client_order_id",
    "market",
    "side",
    "order_type",
    "total_quantity",
    "price_per_unit",
    "status",
    "error",
)


class ExchangeStore:
    """One per replica (the broker factory's); shared by every execution's broker session."""

    def __init__(self, engine: AsyncEngine, *, closing_read_window: float = CLOSING_READ_WINDOW) -> None:
        self._engine = engine
        self._db = Database(engine)
        # Closing reads waiting to be made together (`risk_view_and_paper_holdings`), and the task
        # that makes them.
        self._closing_window = closing_read_window
        self._closing: list[tuple[str, asyncio.Future[tuple[RiskView | None, dict[str, Decimal]]]]] = []
        self._closing_task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Give back the connection the closing reads kept (see `Database.run_wire`)."""
        await self._db.close_lanes()

    # --- credentials ---------------------------------------------------------------------------

    async def load_credentials(self, cipher: CredentialCipher, strategy_id: str) -> Credentials | None:
        """The strategy's decrypted credentials, None if it has none; raises CryptoError if they do not open."""
        return await credential_store.load_credentials(self._engine, cipher, strategy_id)

    # --- the orders audit trail ----------------------------------------------------------------

    async def record_order(
        self,
        values: Mapping[str, Any],
        fence: Fence | None,
        *,
        alert: Callable[[uuid.UUID], Alert | None] | None = None,
    ) -> uuid.UUID | None:
        """Insert one order request before it is sent; its id, or None for a client_order_id the
        strategy already used. Raises `Fenced` when `fence` no longer holds: nothing is recorded, and
        the caller must send nothing. `fence` is None only outside an execution (the broker's own
        tests). `alert(order_id)`: an alert enqueued in the same transaction, so it agrees with the record."""
        # The id is drawn here, once, not by the database in each attempt: when a commit's reply is lost,
        # `Database.run` runs `work` again, and its insert then meets the row the first attempt committed.
        # By this id that row is known for ours (the order recorded, its alert enqueued), not mistaken
        # for an earlier order under the same client_order_id.
        drawn = uuid.uuid4()
        params = {name: values.get(name) for name in _ORDER_FIELDS} | {
            "order_id": drawn,
            "request": _json(values.get("request")),
        }

        async def work(conn: AsyncConnection) -> uuid.UUID | None:
            if fence is None:
                order_id = (await conn.execute(queries.INSERT_ORDER, params)).scalar_one_or_none()
            else:
                fenced = params | _fence_params(fence)
                order_id = (await conn.execute(queries.INSERT_FENCED_ORDER, fenced)).scalar_one_or_none()
            if order_id is None:
                if (await conn.execute(queries.SELECT_OWN_ORDER, {"order_id": drawn})).scalar_one_or_none():
                    return drawn  # an earlier attempt committed it (and its alert): nothing more to write
                if (
                    fence is not None
                    and not (await conn.execute(queries.SELECT_FENCE_HOLDS, _fence_params(fence))).scalar_one()
                ):
                    raise Fenced(fence, "order")
                return None
            if alert is not None:
                await _enqueue(conn, values["strategy_id"], alert(drawn))
            return drawn

        return await self._db.run(work)

    async def update_order(
        self,
        order_id: uuid.UUID,
        strategy_id: str,
        *,
        status: str,
        error: str | None = None,
        exchange_order_id: str | None = None,
        response: Any = None,
        alert: Alert | None = None,
    ) -> None:
        """Record the exchange's answer to an order (and `alert`, in the same transaction, only when the
        answer changes the order's status: applied again after a commit whose reply was lost, it enqueues
        nothing a second time)."""
        params = {
            "order_id": order_id,
            "status": status,
            "error": error,
            "exchange_order_id": exchange_order_id,
            "response": _json(response),
        }

        async def work(conn: AsyncConnection) -> None:
            if (await conn.execute(queries.UPDATE_ORDER, params)).scalar_one_or_none():
                await _enqueue(conn, strategy_id, alert)

        await self._db.run(work)

    async def mirror_status(
        self,
        strategy_id: str,
        answered: Sequence[tuple[str, str, Any]],
        *,
        on_filled: Callable[[Record], Alert | None] | None = None,
    ) -> None:
        """Copy (exchange order id, status, answer) the exchange reported into the matching records.
        `on_filled(order)`: for each order now reported filled that was not on record as filled
        yet, the alert to enqueue in the same transaction (one alert per fill)."""

        async def work(conn: AsyncConnection) -> None:
            for exchange_order_id, status, response in answered:
                newly_filled = None
                if status == "filled" and on_filled is not None:
                    newly_filled = (
                        (
                            await conn.execute(
                                risk_queries.ORDER_NOT_YET_FILLED,
                                {"strategy_id": strategy_id, "exchange_order_id": exchange_order_id},
                            )
                        )
                        .mappings()
                        .first()
                    )
                await conn.execute(
                    queries.UPDATE_ORDER_BY_EXCHANGE_ID,
                    {
                        "strategy_id": strategy_id,
                        "exchange_order_id": exchange_order_id,
                        "status": status,
                        "response": _json(response),
                    },
                )
                if newly_filled is not None and on_filled is not None:
                    await _enqueue(conn, strategy_id, on_filled(dict(newly_filled)))

        await self._db.run(work)

    async def record_wallet_value(
        self, execution_id: uuid.UUID, value: Decimal, currency: str, scheduled_for: datetime | None = None
    ) -> None:
        """The wallet's value as a paper run ends, stored with the execution while it is still in flight
        (`scheduled_for`, its partition key, keeps the statement to one partition)."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                queries.RECORD_WALLET_VALUE,
                {"execution_id": execution_id, "scheduled_for": scheduled_for, "value": value, "currency": currency},
            )

        await self._db.run(work)

    # --- the risk guard --------------------------------------------------------------------------

    async def risk_view(self, strategy_id: str) -> RiskView | None:
        """The strategy's limits and the guard's memory; None for a strategy that no longer exists."""

        async def work(conn: AsyncConnection) -> RiskView | None:
            return await _risk_view(conn, strategy_id)

        return await self._db.run(work)

    async def risk_view_and_paper_holdings(self, strategy_id: str) -> tuple[RiskView | None, dict[str, Decimal]]:
        """`risk_view` and `paper_holdings` together: what a paper execution that placed no order
        reads as it ends.

        Read-only, so the closing reads of executions that end within `closing_read_window` of each
        other (and those asked for while a batch is being read) are made by one statement, one snapshot
        for all, with no transaction around it: under load, one round trip per handful of executions
        instead of a transaction of four round trips per execution. Each caller gets its own strategy's
        answer, or the batch's error.
        """
        future: asyncio.Future[tuple[RiskView | None, dict[str, Decimal]]] = asyncio.get_running_loop().create_future()
        self._closing.append((strategy_id, future))
        if self._closing_task is None or self._closing_task.done():
            # In a context of its own: created from the first caller's, it would name that caller's
            # strategy and execution in every line it logs (retries, outages) for every batch after.
            self._closing_task = asyncio.create_task(
                self._closing_reads(), name="closing-reads", context=contextvars.Context()
            )
        return await future

    async def _closing_reads(self) -> None:
        try:
            await self._read_closing_batches()
        except asyncio.CancelledError:
            # The loop is shutting down: nobody waits on the reads not made.
            for _, future in self._closing:
                future.cancel()
            self._closing = []
            raise

    async def _read_closing_batches(self) -> None:
        while self._closing:
            if self._closing_window > 0:
                await asyncio.sleep(self._closing_window)
            batch, self._closing = self._closing, []
            batch = [(strategy_id, future) for strategy_id, future in batch if not future.done()]
            if not batch:
                continue
            ids = sorted({strategy_id for strategy_id, _ in batch})

            async def work(wire: Wire, ids: list[str] = ids) -> dict[str, tuple[RiskView, dict[str, Decimal]]]:
                [rows] = await wire.send((risk_queries.SELECT_CLOSING_READS, {"strategy_ids": ids}))
                return {
                    row["strategy_id"]: (view_of(row), dict(zip(row["currencies"], row["held"], strict=True)))
                    for row in rows
                }

            try:
                found = await self._db.run_wire(work, autocommit=True, lane="closing-reads")
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # each caller sees the error its own read would have raised
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for strategy_id, future in batch:
                if not future.done():
                    view, held = found.get(strategy_id, (None, {}))
                    future.set_result((view, dict(held)))

    async def save_equity_state(
        self,
        strategy_id: str,
        *,
        day: date | None,
        day_start_equity: Decimal | None,
        peak: Decimal | None,
        fence: Fence | None = None,
    ) -> None:
        """The risk guard's memory of a strategy's equity (its day's start, its peak). With a `fence`
        (an execution measured it), written only while the fence holds: else `Fenced`, nothing written."""
        params = {
            "strategy_id": strategy_id,
            "risk_day": day,
            "day_start_equity": day_start_equity,
            "equity_peak": peak,
        }

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(risk_queries.SAVE_EQUITY_STATE, params)
            await _hold_fence(conn, fence, "equity state")

        await self._db.run(work)

    async def halt(self, strategy_id: str, breach: Breach, resume: Resume, *, fence: Fence | None = None) -> bool:
        """Halt a running strategy with its `halted` alert, in one transaction; False when it was not
        running. With a `fence` (an execution found the breach), only while the fence holds: else
        `Fenced`, and neither the halt nor its alert is written."""

        async def work(conn: AsyncConnection) -> bool:
            halted = await halt(conn, strategy_id, breach, resume)
            await _hold_fence(conn, fence, "halt")
            return halted

        return await self._db.run(work)

    # --- the paper exchange ------------------------------------------------------------------------

    async def paper_holdings(self, strategy_id: str) -> dict[str, Decimal]:
        """A paper strategy's wallet, available plus locked, per currency (empty before its first trade)."""

        async def work(conn: AsyncConnection) -> dict[str, Decimal]:
            return await _paper_holdings(conn, strategy_id)

        return await self._db.run(work)

    async def seed_paper_wallet(self, strategy_id: str, balances: Mapping[str, Decimal]) -> None:
        """The starting wallet of a strategy that has no paper balance rows yet (one transaction)."""
        currencies = sorted(balances)

        async def work(conn: AsyncConnection) -> None:
            count = (await conn.execute(queries.COUNT_PAPER_BALANCES, {"strategy_id": strategy_id})).scalar_one()
            if count == 0 and currencies:
                await conn.execute(
                    queries.SEED_PAPER_BALANCES,
                    {
                        "strategy_id": strategy_id,
                        "currencies": currencies,
                        "balances": [balances[c] for c in currencies],
                    },
                )

        await self._db.run(work)

    async def paper(self, strategy_id: str, work: Callable[[PaperBook], Awaitable[T]], *, fence: Fence | None) -> T:
        """Run `work` on the strategy's paper book in one transaction. With a `fence`, the fence is
        checked at the end and held until commit: a fenced-off execution's call raises `Fenced` and
        changes nothing. `work` may run more than once (a deadlock is retried): it must read what
        it needs from the book each time."""

        async def transaction(conn: AsyncConnection) -> T:
            result = await work(PaperBook(conn, strategy_id))
            # Checked last, just before commit: the FOR SHARE it takes holds off lost-marking (which
            # skips the row) and a lease renewal (which waits) only for the commit, never while the
            # call asks the price feed for a range. A fenced-off call rolls back all it wrote.
            if fence is not None:
                holds = (await conn.execute(queries.SELECT_FENCE_HOLDS, _fence_params(fence))).scalar_one()
                if not holds:
                    raise Fenced(fence, "paper order")
            return result

        return await self._db.run(transaction)


async def _hold_fence(conn: AsyncConnection, fence: Fence | None, what: str) -> None:
    """The fence check as the last statement before commit (the status row, level 2, is already held;
    the execution row, level 3, is held FOR SHARE until the commit): `Fenced` rolls back what was written."""
    if fence is not None and not (await conn.execute(queries.SELECT_FENCE_HOLDS, _fence_params(fence))).scalar_one():
        raise Fenced(fence, what)


class PaperBook:
    """One strategy's paper balances and orders inside one transaction (`ExchangeStore.paper`).

    Rows come back as plain dicts; amounts as Decimal. Balance rows are locked in currency order and
    orders in book order, so two transactions of one strategy cannot deadlock on them.
    """

    def __init__(self, conn: AsyncConnection, strategy_id: str) -> None:
        self._conn = conn
        self._strategy_id = strategy_id

    async def _rows(self, statement: Any, **params: Any) -> list[Record]:
        result = await self._conn.execute(statement, {"strategy_id": self._strategy_id, **params})
        return [dict(row) for row in result.mappings().all()]

    async def balances(self) -> list[Record]:
        """Every balance row (currency, balance, locked_balance), in currency order, unlocked."""
        return await self._rows(queries.SELECT_PAPER_BALANCES)

    async def lock_balances(self, currencies: set[str]) -> dict[str, Decimal]:
        """The available balance of each of `currencies` the strategy holds, rows locked until commit."""
        rows = await self._rows(queries.LOCK_PAPER_BALANCES, currencies=sorted(currencies))
        return {row["currency"]: row["balance"] for row in rows}

    async def add(self, currency: str, balance: Decimal, locked: Decimal) -> None:
        """Add (signed) amounts to the available and locked balance of `currency`."""
        params = {"strategy_id": self._strategy_id, "currency": currency}
        await self._conn.execute(queries.ENSURE_PAPER_BALANCE, params)
        await self._conn.execute(queries.ADD_PAPER_BALANCE, params | {"balance": balance, "locked": locked})

    async def insert_order(self, row: Mapping[str, Any]) -> Record | None:
        """The order as stored, or None when its client_order_id was already used by the strategy."""
        rows = await self._rows(queries.INSERT_PAPER_ORDER, **{**row, "strategy_id": self._strategy_id})
        return rows[0] if rows else None

    async def lock_order(self, paper_order_id: uuid.UUID | None, client_order_id: str | None) -> Record | None:
        """One order by its id, or (id None) by its client_order_id, locked until commit."""
        if paper_order_id is not None:
            rows = await self._rows(queries.LOCK_PAPER_ORDER_BY_ID, paper_order_id=paper_order_id)
        else:
            rows = await self._rows(queries.LOCK_PAPER_ORDER_BY_CLIENT_ID, client_order_id=client_order_id)
        return rows[0] if rows else None

    async def open_orders(self, market: str | None = None, side: str | None = None, *, lock: bool) -> list[Record]:
        """Resting orders, oldest first, optionally of one market and side."""
        statement = queries.LOCK_OPEN_PAPER_ORDERS if lock else queries.SELECT_OPEN_PAPER_ORDERS
        return await self._rows(statement, market=market, side=side)

    async def mark_checked(self, paper_order_id: uuid.UUID, until: datetime) -> None:
        await self._conn.execute(
            queries.PAPER_ORDER_CHECKED, {"paper_order_id": paper_order_id, "checked_until": until}
        )

    async def mark_filled(
        self, paper_order_id: uuid.UUID, *, avg_price: Decimal, fee_amount: Decimal, at: datetime
    ) -> None:
        await self._conn.execute(
            queries.PAPER_ORDER_FILLED,
            {"paper_order_id": paper_order_id, "avg_price": avg_price, "fee_amount": fee_amount, "at": at},
        )

    async def mark_cancelled(self, paper_order_id: uuid.UUID, *, at: datetime) -> None:
        await self._conn.execute(queries.PAPER_ORDER_CANCELLED, {"paper_order_id": paper_order_id, "at": at})

    async def fills(
        self, symbol: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> list[Record]:
        """Filled orders, newest first."""
        return await self._rows(queries.SELECT_PAPER_FILLS, symbol=symbol, since=since, until=until, limit=limit)

    async def mirror(self, exchange_order_id: str, status: str, response: Any) -> None:
        """Copy a paper order's new status into the broker's record of it (`orders`)."""
        await self._conn.execute(
            queries.UPDATE_ORDER_BY_EXCHANGE_ID,
            {
                "strategy_id": self._strategy_id,
                "exchange_order_id": exchange_order_id,
                "status": status,
                "response": _json(response),
            },
        )


async def _enqueue(conn: AsyncConnection, strategy_id: str, alert: Alert | None) -> None:
    if alert is not None:
        event, payload = alert
        await enqueue_alert(conn, strategy_id, event, payload)
