"""The paper exchange: CoinDCX's interface and answer shapes, with balances and orders in PostgreSQL.

Market orders fill at once at the feed's current price. Limit orders fill at once if marketable
(at the current price, as a taker), otherwise they rest, holding (locking) the funds they need, and
fill at their limit price once the price path has crossed it. Resting orders are settled lazily:
every call first checks this strategy's open orders against the price range since their last check,
so nothing has to run between executions and a restart loses nothing.

Each call is one database transaction that locks the strategy's balance rows, so balances never go
negative and a fill is never applied twice. Amounts are Decimal end to end; answers carry floats
like CoinDCX's JSON does.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from reconciler.exchange import errors
from reconciler.exchange.coindcx import CLIENT_ORDER_ID_MAX, new_client_order_id
from reconciler.exchange.errors import ExchangeError
from reconciler.exchange.feed import PriceFeed
from reconciler.storage.exchange_store import OPEN_PAPER_STATUSES, ExchangeStore, PaperBook
from reconciler.storage.fence import Fence

T = TypeVar("T")

DEFAULT_FEE_RATE = Decimal("0.001")  # 0.1 %, charged in the quote currency, like a CoinDCX taker fee
SIDES = ("buy", "sell")
ORDER_TYPES = ("market_order", "limit_order")
_SUCCESS = {"message": "success", "status": 200, "code": 200}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


class PaperExchange:
    """One strategy's paper account. Methods mirror `CoinDCXClient` (CoinDCX's names and shapes)."""

    def __init__(
        self,
        store: ExchangeStore,
        feed: PriceFeed,
        *,
        strategy_id: str,
        initial_balances: Mapping[str, float],
        fee_rate: Decimal = DEFAULT_FEE_RATE,
        fence: Fence | None = None,
    ) -> None:
        # Each call is one transaction of the storage layer's (errors classified once, no SQL here).
        # `fence`: the execution's fencing token (None outside a claimed execution: the tests').
        self._store = store
        self._fence = fence
        self._feed = feed
        self._strategy_id = strategy_id
        self._initial = {currency: Decimal(str(amount)) for currency, amount in initial_balances.items()}
        self._fee_rate = fee_rate
        self._seeded = False

    # --- market data: straight from the feed ------------------------------------------------------

    async def get_ticker(self) -> list[dict[str, Any]]:
        return await self._feed.ticker()

    async def get_markets(self) -> list[str]:
        return [m["coindcx_name"] for m in await self._feed.markets_details()]

    async def get_markets_details(self) -> list[dict[str, Any]]:
        return await self._feed.markets_details()

    async def get_candles(
        self,
        pair: str,
        interval: str,
        limit: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> list[dict[str, Any]]:
        return await self._feed.candles(pair, interval, limit, start_time, end_time)

    async def get_orderbook(self, pair: str) -> dict[str, Any]:
        return await self._feed.orderbook(pair)

    async def get_trades(self, pair: str, limit: int | None = None) -> list[dict[str, Any]]:
        return await self._feed.trades(pair, limit)

    # --- account ----------------------------------------------------------------------------------

    async def get_balances(self) -> list[dict[str, Any]]:
        async def work(book: PaperBook) -> list[dict[str, Any]]:
            return [
                {
                    "currency": r["currency"],
                    "balance": float(r["balance"]),
                    "locked_balance": float(r["locked_balance"]),
                }
                for r in await book.balances()
            ]

        return await self._call(work)

    async def get_user_info(self) -> list[dict[str, Any]]:
        return [
            {
                "coindcx_id": f"paper-{self._strategy_id}",
                "first_name": "Paper",
                "last_name": "Trader",
                "mobile_number": "",
                "email": "",
            }
        ]

    async def create_order(
        self,
        side: str,
        order_type: str,
        market: str,
        total_quantity: float | Decimal,
        price_per_unit: float | Decimal | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        if side not in SIDES:
            raise ExchangeError(errors.REJECTED, f"side must be 'buy' or 'sell', got {side!r}")
        if order_type not in ORDER_TYPES:
            raise ExchangeError(errors.REJECTED, f"order_type must be one of {ORDER_TYPES}, got {order_type!r}")
        quantity = errors.positive_number("total_quantity", total_quantity, errors.REJECTED)
        limit = (
            errors.positive_number("price_per_unit", price_per_unit, errors.REJECTED)
            if order_type == "limit_order"
            else None
        )
        client_order_id = client_order_id or new_client_order_id()
        if not isinstance(client_order_id, str) or len(client_order_id) > CLIENT_ORDER_ID_MAX:
            raise ExchangeError(errors.REJECTED, f"client_order_id must be a string of at most {CLIENT_ORDER_ID_MAX}")
        details = await self._market(market)
        self._check_precision(details, quantity, limit)
        price = Decimal(str(await self._feed.price(market)))
        target, base = details["target_currency_short_name"], details["base_currency_short_name"]
        notional = quantity * (limit if limit is not None else price)
        if notional < Decimal(str(details["min_notional"])):
            raise ExchangeError(
                errors.REJECTED,
                f"order value {notional} {base} is below {market}'s minimum of {details['min_notional']}",
            )
        now = self._now()
        paper_order_id = uuid.uuid4()
        attempts = 0

        async def work(book: PaperBook) -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # Run again (a deadlock, or a commit whose reply was lost): an order under this id is this
                # call's own, committed by an earlier attempt with its fill or lock. Answer with it rather
                # than fill twice, or call our own client_order_id a duplicate. (The first attempt skips
                # the read: nothing can be stored under an id just drawn.)
                earlier = await book.lock_order(paper_order_id, None)
                if earlier is not None:
                    return self._order(earlier)
            balances = await book.lock_balances({target, base})
            marketable = limit is None or (side == "buy" and price <= limit) or (side == "sell" and price >= limit)
            row: dict[str, Any] = {
                "paper_order_id": paper_order_id,
                "client_order_id": client_order_id,
                "market": market,
                "side": side,
                "order_type": order_type,
                "price_per_unit": limit,
                "total_quantity": quantity,
                "created_at": now,
                "updated_at": now,
                "checked_until": now,
            }
            if marketable:
                fill = await self._fill(book, balances, side, target, base, quantity, price, locked=Decimal(0))
                row |= {"status": "filled", "remaining_quantity": 0, "avg_price": price, "fee_amount": fill}
                row |= {"locked_currency": base if side == "buy" else target, "locked_amount": 0}
            else:
                assert limit is not None
                currency, amount = (
                    (base, quantity * limit * (1 + self._fee_rate)) if side == "buy" else (target, quantity)
                )
                self._require(balances, currency, amount)
                await book.add(currency, -amount, amount)
                row |= {"status": "open", "remaining_quantity": quantity, "avg_price": 0, "fee_amount": 0}
                row |= {"locked_currency": currency, "locked_amount": amount}
            inserted = await book.insert_order(row)
            if inserted is None:
                # Raising rolls back the balance changes above with the transaction.
                raise ExchangeError(errors.REJECTED, f"Duplicate client order id {client_order_id!r}")
            return self._order(inserted)

        return await self._call(work)

    async def get_order_status(self, id: str | None = None, client_order_id: str | None = None) -> dict[str, Any]:
        async def work(book: PaperBook) -> dict[str, Any]:
            return self._order(await self._one_order(book, id, client_order_id))

        return await self._call(work)

    async def get_active_orders(self, market: str | None = None, side: str | None = None) -> list[dict[str, Any]]:
        async def work(book: PaperBook) -> list[dict[str, Any]]:
            return [self._order(r) for r in await book.open_orders(market, side, lock=False)]

        return await self._call(work)

    async def cancel_order(self, id: str | None = None, client_order_id: str | None = None) -> dict[str, Any]:
        async def work(book: PaperBook) -> dict[str, Any]:
            order = await self._one_order(book, id, client_order_id)
            if order["status"] not in OPEN_PAPER_STATUSES:
                raise ExchangeError(errors.REJECTED, f"Order is already {order['status']} and cannot be cancelled")
            await self._cancel(book, order)
            return dict(_SUCCESS)

        return await self._call(work)

    async def cancel_all_orders(self, market: str, side: str | None = None) -> dict[str, Any]:
        async def work(book: PaperBook) -> dict[str, Any]:
            for order in await book.open_orders(market, side, lock=True):
                await self._cancel(book, order)
            return dict(_SUCCESS)

        return await self._call(work)

    async def get_trade_history(
        self,
        symbol: str | None = None,
        limit: int | None = None,
        from_timestamp: int | None = None,
        to_timestamp: int | None = None,
    ) -> list[dict[str, Any]]:
        since = datetime.fromtimestamp(from_timestamp / 1000, UTC) if from_timestamp else None
        until = datetime.fromtimestamp(to_timestamp / 1000, UTC) if to_timestamp else None

        async def work(book: PaperBook) -> list[dict[str, Any]]:
            return await book.fills(symbol, since, until, min(limit or 500, 5000))

        rows = await self._call(work)
        return [
            {
                "id": str(r["paper_order_id"]),
                "order_id": str(r["paper_order_id"]),
                "side": r["side"],
                "fee_amount": _f(r["fee_amount"]),
                "ecode": "paper",
                "quantity": _f(r["total_quantity"]),
                "price": _f(r["avg_price"]),
                "symbol": r["market"],
                "timestamp": _ms(r["updated_at"]),
            }
            for r in rows
        ]

    async def aclose(self) -> None:
        return None  # the store and the feed belong to the broker factory

    # --- internals ----------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._feed.now(), UTC)

    async def _market(self, market: str) -> dict[str, Any]:
        for details in await self._feed.markets_details():
            if details.get("coindcx_name") == market:
                if details.get("status", "active") != "active":
                    raise ExchangeError(errors.REJECTED, f"market {market!r} is not active")
                return details
        raise ExchangeError(errors.REJECTED, f"unknown market {market!r} (names like 'BTCUSDT'; see get_markets())")

    @staticmethod
    def _check_precision(details: Mapping[str, Any], quantity: Decimal, limit: Decimal | None) -> None:
        market = details["coindcx_name"]
        quantity_digits = int(details.get("target_currency_precision") or 0)
        if errors.decimal_places(quantity) > quantity_digits:
            raise ExchangeError(
                errors.REJECTED,
                f"total_quantity {quantity} has more than {quantity_digits} decimals allowed for {market}",
            )
        minimum = max(Decimal(str(details.get("min_quantity") or 0)), Decimal(10) ** -quantity_digits)
        if quantity < minimum:
            raise ExchangeError(errors.REJECTED, f"total_quantity {quantity} is below {market}'s minimum {minimum}")
        price_digits = int(details.get("base_currency_precision") or 0)
        if limit is not None and errors.decimal_places(limit) > price_digits:
            raise ExchangeError(
                errors.REJECTED,
                f"price_per_unit {limit} has more than {price_digits} decimals allowed for {market}",
            )

    async def _call(self, work: Callable[[PaperBook], Awaitable[T]]) -> T:
        """One call's transaction, with the starting wallet seeded and resting orders settled first.

        The seeding commits in a transaction of its own before the call's: were it part of the call's,
        a call that fails (an unknown order id) would roll it back while `_seeded` said it was done,
        leaving the strategy an empty wallet for the rest of its run. The call's own transaction checks
        the execution's fence first and holds it until commit (`ExchangeStore.paper`): a fenced-off
        execution fills nothing, and a fill, its balances and its order records commit together.
        """
        if not self._seeded:
            await self._store.seed_paper_wallet(self._strategy_id, self._initial)
            self._seeded = True

        async def settled(book: PaperBook) -> T:
            await self._settle(book)
            return await work(book)

        return await self._store.paper(self._strategy_id, settled, fence=self._fence)

    async def _settle(self, book: PaperBook) -> None:
        open_orders = await book.open_orders(lock=True)
        if not open_orders:
            return
        now = self._now()
        for order in open_orders:
            low, high = await self._feed.price_range(
                order["market"], order["checked_until"].timestamp(), now.timestamp()
            )
            limit: Decimal = order["price_per_unit"]
            crossed = low <= limit if order["side"] == "buy" else high >= limit
            if not crossed:
                await book.mark_checked(order["paper_order_id"], now)
                continue
            details = await self._market(order["market"])
            target, base = details["target_currency_short_name"], details["base_currency_short_name"]
            balances = await book.lock_balances({target, base})
            fee = await self._fill(
                book, balances, order["side"], target, base, order["remaining_quantity"], limit,
                locked=order["locked_amount"],
            )  # fmt: skip
            fee_amount = order["fee_amount"] + fee
            await book.mark_filled(order["paper_order_id"], avg_price=limit, fee_amount=fee_amount, at=now)
            values = {
                "status": "filled",
                "remaining_quantity": 0,
                "avg_price": limit,
                "fee_amount": fee_amount,
                "locked_amount": 0,
                "checked_until": now,
                "updated_at": now,
            }
            filled = self._order({**order, **values})
            await book.mirror(filled["id"], "filled", filled)

    async def _fill(
        self,
        book: PaperBook,
        balances: dict[str, Decimal],
        side: str,
        target: str,
        base: str,
        quantity: Decimal,
        price: Decimal,
        *,
        locked: Decimal,
    ) -> Decimal:
        """Move the funds of a fill; `locked` is what a resting order held. Returns the fee charged."""
        value = quantity * price
        fee = value * self._fee_rate
        if side == "buy":
            # A resting buy pays from its lock and gets back what the lock held beyond the cost.
            cost = value + fee
            if not locked:
                self._require(balances, base, cost)
            await book.add(base, locked - cost, -locked)
            await book.add(target, quantity, Decimal(0))
        else:
            if not locked:
                self._require(balances, target, quantity)
            await book.add(target, locked - quantity, -locked)
            await book.add(base, value - fee, Decimal(0))
        return fee

    async def _cancel(self, book: PaperBook, order: Mapping[str, Any]) -> None:
        amount: Decimal = order["locked_amount"]
        if amount:
            await book.add(order["locked_currency"], amount, -amount)
        now = self._now()
        await book.mark_cancelled(order["paper_order_id"], at=now)
        cancelled = self._order({**order, "status": "cancelled", "locked_amount": 0, "updated_at": now})
        await book.mirror(cancelled["id"], "cancelled", cancelled)

    @staticmethod
    def _require(balances: Mapping[str, Decimal], currency: str, amount: Decimal) -> None:
        available = balances.get(currency, Decimal(0))
        if available < amount:
            raise ExchangeError(
                errors.REJECTED,
                f"Insufficient funds: needs {amount.normalize():f} {currency}, available {available.normalize():f}",
            )

    async def _one_order(self, book: PaperBook, id: str | None, client_order_id: str | None) -> dict[str, Any]:
        if (id is None) == (client_order_id is None):
            raise ExchangeError(errors.INVALID, "pass exactly one of id or client_order_id")
        order_uuid = None
        if id is not None:
            try:
                order_uuid = uuid.UUID(str(id))
            except ValueError:
                raise ExchangeError(errors.NOT_FOUND, "Order not found") from None
        row = await book.lock_order(order_uuid, client_order_id if order_uuid is None else None)
        if row is None:
            raise ExchangeError(errors.NOT_FOUND, "Order not found")
        return row

    def _order(self, row: Mapping[Any, Any]) -> dict[str, Any]:
        """A paper order in CoinDCX's Order shape."""
        return {
            "id": str(row["paper_order_id"]),
            "client_order_id": row["client_order_id"],
            "market": row["market"],
            "order_type": row["order_type"],
            "side": row["side"],
            "status": row["status"],
            "fee_amount": _f(Decimal(str(row["fee_amount"]))),
            "fee": float(self._fee_rate * 100),
            "total_quantity": _f(Decimal(str(row["total_quantity"]))),
            "remaining_quantity": _f(Decimal(str(row["remaining_quantity"]))),
            "avg_price": _f(Decimal(str(row["avg_price"]))),
            "price_per_unit": _f(row["price_per_unit"]),
            "created_at": _ms(row["created_at"]),
            "updated_at": _ms(row["updated_at"]),
        }
