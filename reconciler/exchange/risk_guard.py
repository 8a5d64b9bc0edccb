"""The risk guard of one execution: measures equity and positions, asks `reconciler.risk`, halts.

The broker calls it at two points: `before_order` (may refuse the order: the limit it would cross,
or a halt earlier in this execution, refuses every later order) and `after_execution` (records the
equity measure and halts if it reveals a breach). The measures are the service's own, never the
strategy's word: a paper wallet valued at the feed's prices, or the live balances read with the
strategy's own key (counted against its rate budget) valued at the exchange's tickers.

Every halt is written with its `halted` alert in one transaction (`ExchangeStore.halt`); the guard
itself runs no SQL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from reconciler import risk
from reconciler.exchange.feed import PriceFeed
from reconciler.exchange.wallet import WalletValue, wallet_value
from reconciler.storage.db import DatabaseTimeout, DatabaseUnavailable, TransactionConflict
from reconciler.storage.exchange_store import ExchangeStore, RiskView
from reconciler.storage.fence import Fence, Fenced

log = logging.getLogger(__name__)

# Reads the strategy's holdings: currency -> amount (available plus locked).
Holdings = Callable[[], Awaitable[Mapping[str, Decimal]]]
# Reads the limits and the holdings together (one transaction), for an execution that read neither.
ClosingRead = Callable[[], Awaitable[tuple[RiskView | None, Mapping[str, Decimal]]]]
# Takes the closing measure (value, currency) to be recorded with the execution's outcome.
MeasureSink = Callable[[Decimal, str], None]


class RiskGuard:
    def __init__(
        self,
        store: ExchangeStore,
        *,
        strategy_id: str,
        execution_id: uuid.UUID,
        market: PriceFeed,
        scheduled_for: datetime | None = None,
        fence: Fence | None = None,
        holdings: Holdings,
        record_series: bool,
        closing_read: ClosingRead | None = None,
        record_measure: MeasureSink | None = None,
    ) -> None:
        # Every transaction is one of the store's (driver errors classified once, no SQL here).
        self._store = store
        self._strategy_id = strategy_id
        self._execution_id = execution_id
        self._scheduled_for = scheduled_for  # the execution's partition key, when known
        # The execution's fencing token: its equity memory and a halt it causes are written only while
        # it holds its lease, like its orders and its outcome (None outside an execution).
        self._fence = fence
        self._market = market
        self._holdings = holdings
        # Paper: every execution adds a point to the equity series (executions.wallet_value, the
        # dashboard's chart), limits or not; live: only when a limit needs the measure.
        self._record_series = record_series
        self.closing_read = closing_read
        # Set (by the replica): the closing measure goes with the outcome, in the statement that
        # records it under its fence, instead of a transaction of its own per execution.
        self._record_measure = record_measure
        self._loaded = False
        self.limits = risk.RiskLimits()
        self._state = risk.EquityState()
        self._today: date | None = None
        self._was_halted = False
        # Set at the first breach in this execution: every later order is refused with it.
        self.breach: risk.Breach | None = None

    async def _load(self) -> None:
        if self._loaded:
            return
        self._apply(await self._store.risk_view(self._strategy_id))

    def _apply(self, view: RiskView | None) -> None:
        self._loaded = True
        if view is None:
            return
        self.limits = risk.RiskLimits.lenient(view.risk)
        self._state = risk.EquityState(view.risk_day, view.day_start_equity, view.equity_peak)
        self._today = view.db_now.astimezone(UTC).date()
        self._was_halted = view.status == "halted"

    # --- the hooks ------------------------------------------------------------------------------

    async def before_order(self, market: str, side: str, quantity: Decimal) -> str | None:
        """Why this order must not be sent, or None. A breach found here halts the strategy."""
        await self._load()
        if self.breach is not None:
            return f"risk limit {self.breach.limit} was breached earlier in this run: {self.breach.message}"
        if self._was_halted:
            return "the strategy is halted by its risk limits; no order is sent until it resumes"
        if not self.limits.active:
            return None
        breach: risk.Breach | None = None
        holdings: Mapping[str, Decimal] | None = None
        if self.limits.position_cap(market) is not None:
            holdings = await self._holdings()
            coin = await self._target_coin(market)
            if coin is not None:
                breach = risk.check_position(self.limits, market, coin, holdings.get(coin, Decimal(0)), side, quantity)
        if breach is None and self.limits.measures_equity:
            valued = await self._value(holdings)
            breach = await self._observe(valued)
        if breach is None:
            return None
        await self._halt(breach)
        return f"refused by risk limit {breach.limit}: {breach.message}; the strategy is halted"

    async def after_execution(self) -> None:
        """Record the equity measure as the run ends and halt on what it reveals. Best effort: a
        failure is logged and the next measure (next order, next run) checks again."""
        try:
            held: Mapping[str, Decimal] | None = None
            if not self._loaded and self.closing_read is not None:
                # Nothing read yet (no order was placed): the limits and the holdings at once.
                view, held = await self.closing_read()
                self._apply(view)
            else:
                await self._load()
            if not (self._record_series or self.limits.measures_equity):
                return
            valued = await self._value(held)
            # The one equity series: stored with the execution, charted by the dashboard.
            if self._record_measure is not None:
                self._record_measure(valued.value, valued.currency)
            else:
                await self._store.record_wallet_value(
                    self._execution_id, valued.value, valued.currency, self._scheduled_for
                )
            if self.limits.measures_equity and self.breach is None and not self._was_halted:
                breach = await self._observe(valued)
                if breach is not None:
                    await self._halt(breach)
        except Fenced:
            # The execution lost its lease: the replica kills nothing more of it here (its process is
            # gone) and records no outcome; its measure is not this replica's to write either.
            log.info("strategy %s: the execution was fenced off; its equity measure is not recorded", self._strategy_id)
        except DatabaseUnavailable as exc:
            # An outage is the replica's to report (once at its start, once a minute, once at its end);
            # a line per execution here would repeat it for every run. The next measure checks again.
            log.debug("strategy %s: the risk guard could not measure equity: %s", self._strategy_id, exc)
        except (DatabaseTimeout, TransactionConflict) as exc:
            log.warning("strategy %s: the risk guard could not measure equity: %s", self._strategy_id, exc)
        except Exception:
            log.exception("strategy %s: the risk guard could not measure equity", self._strategy_id)

    # --- measuring --------------------------------------------------------------------------------

    async def _value(self, holdings: Mapping[str, Decimal] | None) -> WalletValue:
        held = holdings if holdings is not None else await self._holdings()
        return await wallet_value(held, self._market, self.limits.currency)

    async def _observe(self, valued: WalletValue) -> risk.Breach | None:
        # The database's UTC day, read with the limits; a strategy without a status row yet has none.
        today = self._today or date.today()
        before = self._state
        self._state, breach = risk.observe_equity(self.limits, self._state, valued.value, today)
        if self._state != before:
            await self._store.save_equity_state(
                self._strategy_id,
                day=self._state.day,
                day_start_equity=self._state.day_start_equity,
                peak=self._state.peak,
                fence=self._fence,
            )
        return breach

    async def _target_coin(self, market: str) -> str | None:
        for details in await self._market.markets_details():
            if details.get("coindcx_name") == market or details.get("symbol") == market:
                return str(details.get("target_currency_short_name"))
        return None

    async def _halt(self, breach: risk.Breach) -> None:
        self.breach = breach
        halted = await self._store.halt(
            self._strategy_id, breach, risk.resume_rule(self.limits, breach), fence=self._fence
        )
        if halted:
            log.warning("strategy %s halted by %s: %s", self._strategy_id, breach.limit, breach.message)


def paper_holdings(store: ExchangeStore, strategy_id: str, starting: Mapping[str, float]) -> Holdings:
    """The paper wallet as stored (the starting wallet until the first trade seeds it)."""

    async def read() -> Mapping[str, Decimal]:
        return _or_starting(await store.paper_holdings(strategy_id), starting)

    return read


def paper_closing_read(store: ExchangeStore, strategy_id: str, starting: Mapping[str, float]) -> ClosingRead:
    """The limits and the paper wallet as stored, in one transaction."""

    async def read() -> tuple[RiskView | None, Mapping[str, Decimal]]:
        view, held = await store.risk_view_and_paper_holdings(strategy_id)
        return view, _or_starting(held, starting)

    return read


def paper_starting(held: Mapping[str, Decimal], starting: Mapping[str, float]) -> Mapping[str, Decimal]:
    """The paper wallet as stored, or the starting wallet until the first trade seeds it."""
    return _or_starting(held, starting)


def _or_starting(held: Mapping[str, Decimal], starting: Mapping[str, float]) -> Mapping[str, Decimal]:
    if not held:
        return {currency: Decimal(str(amount)) for currency, amount in starting.items()}
    return held


def live_holdings(get_balances: Callable[[], Awaitable[Any]], acquire: Callable[[], Awaitable[None]]) -> Holdings:
    """Balances read from the exchange with the strategy's own key, within its rate budget."""

    async def read() -> Mapping[str, Decimal]:
        await acquire()
        answer = await get_balances()
        held: dict[str, Decimal] = {}
        for row in answer if isinstance(answer, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("currency"), str):
                continue
            amount = Decimal(str(row.get("balance") or 0)) + Decimal(str(row.get("locked_balance") or 0))
            held[row["currency"]] = held.get(row["currency"], Decimal(0)) + amount
        return held

    return read
