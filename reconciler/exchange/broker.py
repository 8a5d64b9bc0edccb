"""The broker: the replica-side object that answers a sandboxed strategy's `client.<method>(...)` calls.

One `BrokerFactory` per replica holds what is shared (HTTP connection pool, price feed, rate-limit
buckets, market metadata). `session(...)` is opened around one execution: it decrypts that strategy's
credentials (live exchange only), builds its client or paper account, and yields a `BrokerCall`.
Each call is checked against the method table, the strategy's limits and its key's rate limit, then
answered by the live or paper exchange. Every `create_order` request is written to `orders` *before*
it is sent and updated with the answer, so even a crash mid-call leaves it on record; refusals by the
limits are recorded too. On exit the session drops the credentials and closes what it opened.

Every failure a strategy can cause or see is a `BrokerError(kind, message)`; anything else (a bug, the
database going away) is logged here and surfaces to the strategy as `BrokerError("internal", ...)`
without internals but with a reference to the log line, so the sandbox boundary only ever carries
BrokerErrors.
"""

from __future__ import annotations

import inspect
import logging
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from reconciler import refusals
from reconciler.crypto import CredentialCipher, CryptoError
from reconciler.exchange import errors
from reconciler.exchange.coindcx import CLIENT_ORDER_ID_MAX, CoinDCXClient, RetryPolicy, new_client_order_id
from reconciler.exchange.errors import ExchangeError
from reconciler.exchange.feed import INTERVALS, CoinDCXFeed, PriceFeed, SimulatedFeed
from reconciler.exchange.keys import api_key_digest
from reconciler.exchange.paper import ORDER_TYPES, SIDES, PaperExchange
from reconciler.exchange.ratelimit import RateLimiter
from reconciler.exchange.risk_guard import (
    MeasureSink,
    RiskGuard,
    live_holdings,
    paper_closing_read,
    paper_holdings,
    paper_starting,
)
from reconciler.outcome import CLIENT_METHODS, BrokerCall, BrokerError
from reconciler.settings import Settings
from reconciler.storage.db import DatabaseTimeout, DatabaseUnavailable, StoreError, TransactionConflict
from reconciler.storage.exchange_store import Alert, ExchangeStore, RiskView
from reconciler.storage.fence import Fence, Fenced

log = logging.getLogger(__name__)

INTERNAL = refusals.INTERNAL
PUBLIC_METHODS = frozenset(
    {"get_ticker", "get_markets", "get_markets_details", "get_candles", "get_orderbook", "get_trades"}
)
# Methods whose answer carries orders' latest status, mirrored into the `orders` record.
_ORDER_ANSWERS = frozenset({"get_order_status", "get_active_orders"})

DEFAULT_MAX_ORDERS_PER_EXECUTION = 10
# Per quote currency; "*" covers the others. In the quote's units: 1 000 USDT, 100 000 INR.
DEFAULT_MAX_ORDER_NOTIONAL: Mapping[str, float] = {"INR": 100_000.0, "*": 1_000.0}


@dataclass(frozen=True, slots=True)
class StrategyLimits:
    """The guard rails from the strategy's CONFIG, with defaults for what it leaves out."""

    allowed_markets: frozenset[str] | None  # None: any market
    max_order_notional: Mapping[str, float]  # quote currency (or "*") -> cap
    max_orders_per_execution: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StrategyLimits:
        """Raise BrokerError(invalid_request) naming the CONFIG key when a limit is malformed."""
        markets = config.get("allowed_markets")
        if markets is not None and (
            not isinstance(markets, list | tuple) or not all(isinstance(m, str) for m in markets)
        ):
            raise BrokerError(errors.INVALID, 'CONFIG["allowed_markets"] must be a list of market names')
        notional = config.get("max_order_notional")
        caps: dict[str, float] = dict(DEFAULT_MAX_ORDER_NOTIONAL)
        if isinstance(notional, int | float) and not isinstance(notional, bool) and notional > 0:
            caps = {"*": float(notional)}
        elif isinstance(notional, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in notional.values()
        ):
            caps.update({str(k): float(v) for k, v in notional.items()})
        elif notional is not None:
            raise BrokerError(
                errors.INVALID,
                'CONFIG["max_order_notional"] must be a positive number or {"USDT": 500, "INR": 40000, ...}',
            )
        count = config.get("max_orders_per_execution", DEFAULT_MAX_ORDERS_PER_EXECUTION)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise BrokerError(errors.INVALID, 'CONFIG["max_orders_per_execution"] must be a whole number >= 0')
        return cls(frozenset(markets) if markets is not None else None, caps, count)

    def notional_cap(self, quote: str) -> float:
        return self.max_order_notional.get(quote, self.max_order_notional.get("*", DEFAULT_MAX_ORDER_NOTIONAL["*"]))


class BrokerFactory:
    """Shared per replica; `session()` per execution. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: ExchangeStore,
        cipher: CredentialCipher,
        *,
        feed: PriceFeed | None = None,
        limiter: RateLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._cipher = cipher
        self._retry = retry
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=settings.exchange_timeout_seconds)
        # Public CoinDCX data for the live exchange's limit checks (prices, quote currencies).
        self._live_market = CoinDCXFeed(CoinDCXClient.from_settings(settings, http=self._http, retry=retry))
        if feed is None:
            if settings.paper_price_feed == "coindcx":
                feed = CoinDCXFeed(CoinDCXClient.from_settings(settings, http=self._http, retry=retry))
            else:
                feed = SimulatedFeed()
        self._feed = feed
        self._limiter = limiter or RateLimiter()

    def session(
        self,
        *,
        strategy_id: str,
        execution_id: str,
        exchange: str,
        config: dict[str, Any],
        fence: Fence | None = None,
        record_measure: MeasureSink | None = None,
        claimed_view: tuple[RiskView | None, Mapping[str, Decimal]] | None = None,
    ) -> AbstractAsyncContextManager[BrokerCall]:
        """`fence`: the execution's fencing token; every order is recorded (and so sent) only while it
        holds. None only outside a claimed execution (tests of the broker itself). `record_measure`:
        takes a paper wallet's closing value (value, currency) for the replica to record with the
        outcome; without it the session records it itself. `claimed_view`: a paper execution's risk
        view and wallet as its claim read them; if it makes no client call, its closing measure uses
        them instead of reading them again (nothing but its own calls changes them meanwhile)."""
        return self._session(strategy_id, execution_id, exchange, config, fence, record_measure, claimed_view)

    @asynccontextmanager
    async def _session(
        self,
        strategy_id: str,
        execution_id: str,
        exchange: str,
        config: dict[str, Any],
        fence: Fence | None,
        record_measure: MeasureSink | None = None,
        claimed_view: tuple[RiskView | None, Mapping[str, Decimal]] | None = None,
    ) -> AsyncIterator[BrokerCall]:
        setup_error: BrokerError | None = None
        try:
            limits = StrategyLimits.from_config(config or {})
        except BrokerError as exc:
            # A bad CONFIG is the strategy's to fix: every call tells it so, the run itself goes on.
            setup_error, limits = exc, StrategyLimits.from_config({})
        target: CoinDCXClient | PaperExchange
        if exchange == "coindcx":
            credentials = None
            try:
                credentials = await self._store.load_credentials(self._cipher, strategy_id)
                if credentials is None:
                    setup_error = setup_error or BrokerError(
                        errors.CREDENTIALS,
                        "this strategy has no CoinDCX API key; add one or use exchange 'paper'",
                    )
            except CryptoError as exc:
                log.error("strategy %s: credentials do not open: %s", strategy_id, exc)
                setup_error = setup_error or BrokerError(
                    errors.CREDENTIALS,
                    "this strategy's CoinDCX credentials cannot be decrypted; ask the operator",
                )
            except StoreError:
                # The run goes on (it may not trade at all); its signed calls say what went wrong.
                log.exception("strategy %s: could not load credentials", strategy_id)
                setup_error = setup_error or BrokerError(
                    errors.CREDENTIALS,
                    "this strategy's CoinDCX credentials could not be loaded; try again later",
                )
            target = CoinDCXClient.from_settings(
                self._settings, credentials=credentials, http=self._http, retry=self._retry
            )
            # Buckets are per API key: strategies sharing a key share its exchange quota.
            rate_key = "coindcx:" + (api_key_digest(credentials.api_key) if credentials else strategy_id)
            market: PriceFeed = self._live_market
            del credentials  # only the client holds it now, until forget_credentials()
        elif exchange == "paper":
            target = PaperExchange(
                self._store,
                self._feed,
                strategy_id=strategy_id,
                initial_balances=self._settings.paper_initial_balances,
                fence=fence,
            )
            rate_key = "paper:" + strategy_id
            market = self._feed
        else:
            raise ValueError(f"unknown exchange {exchange!r}")
        # Parsed once for the guard and the session (the replica passes the id as text).
        execution_uuid = execution_id if isinstance(execution_id, uuid.UUID) else uuid.UUID(str(execution_id))
        guard = self._guard(strategy_id, execution_uuid, fence, exchange, target, market, rate_key, record_measure)
        if claimed_view is not None and guard.closing_read is not None:
            read_again = guard.closing_read
            starting = self._settings.paper_initial_balances

            async def closing_read() -> tuple[RiskView | None, Mapping[str, Decimal]]:
                # Any call may have changed the wallet (an order, a resting order settled by a
                # status check): then it is read again, as the run ends.
                if session.calls:
                    return await read_again()
                view, held = claimed_view
                return view, paper_starting(held, starting)

            guard.closing_read = closing_read
        session = BrokerSession(
            store=self._store,
            fence=fence,
            strategy_id=strategy_id,
            execution_id=execution_uuid,
            exchange=exchange,
            limits=limits,
            target=target,
            market=market,
            limiter=self._limiter,
            rate_key=rate_key,
            setup_error=setup_error,
            guard=guard,
        )
        try:
            yield session
        finally:
            try:
                # Measured while the live client still holds its key (it reads the balances).
                await guard.after_execution()
            finally:
                # The live client forgets the credentials here; the shared HTTP pool stays open.
                await target.aclose()

    def _guard(
        self,
        strategy_id: str,
        execution_id: uuid.UUID,
        fence: Fence | None,
        exchange: str,
        target: CoinDCXClient | PaperExchange,
        market: PriceFeed,
        rate_key: str,
        record_measure: MeasureSink | None = None,
    ) -> RiskGuard:
        closing_read = None
        if isinstance(target, PaperExchange):
            starting = self._settings.paper_initial_balances
            holdings = paper_holdings(self._store, strategy_id, starting)
            closing_read = paper_closing_read(self._store, strategy_id, starting)
        else:
            holdings = live_holdings(target.get_balances, lambda: self._limiter.acquire(rate_key))
        return RiskGuard(
            self._store,
            strategy_id=strategy_id,
            execution_id=execution_id,
            scheduled_for=None if fence is None else fence.scheduled_for,
            fence=fence,
            market=market,
            holdings=holdings,
            record_series=exchange == "paper",
            closing_read=closing_read,
            record_measure=record_measure,
        )

    async def aclose(self) -> None:
        await self._store.aclose()
        await self._feed.aclose()
        await self._live_market.aclose()
        if self._owns_http:
            await self._http.aclose()


class BrokerSession:
    """The `BrokerCall` of one execution: `await session(method, params)`."""

    def __init__(
        self,
        *,
        store: ExchangeStore,
        fence: Fence | None,
        strategy_id: str,
        execution_id: str | uuid.UUID,
        exchange: str,
        limits: StrategyLimits,
        target: CoinDCXClient | PaperExchange,
        market: PriceFeed,
        limiter: RateLimiter,
        rate_key: str,
        setup_error: BrokerError | None,
        guard: RiskGuard | None = None,
    ) -> None:
        self._store = store
        self._fence = fence
        self._guard = guard
        self._strategy_id = strategy_id
        self._execution_id = execution_id if isinstance(execution_id, uuid.UUID) else uuid.UUID(str(execution_id))
        self._exchange = exchange
        self._limits = limits
        self._target = target
        self._market = market
        self._limiter = limiter
        self._rate_key = rate_key
        self._setup_error = setup_error
        self.orders_sent = 0
        self.calls = 0  # client calls made (answered or refused)

    @property
    def execution_id(self) -> uuid.UUID:
        return self._execution_id

    def __repr__(self) -> str:
        return f"BrokerSession(strategy_id={self._strategy_id!r}, exchange={self._exchange!r})"

    async def __call__(self, method: str, params: dict[str, Any]) -> Any:
        self.calls += 1
        try:
            arguments = self._arguments(method, params)
            if self._setup_error is not None and (
                self._setup_error.kind != errors.CREDENTIALS or method not in PUBLIC_METHODS
            ):
                raise self._setup_error
            await self._limiter.acquire(self._rate_key)
            if method == "create_order":
                return await self._create_order(arguments)
            result = await getattr(self._target, method)(**arguments)
            if method in _ORDER_ANSWERS:
                await self._mirror_status(result if isinstance(result, list) else [result])
            return result
        except (BrokerError, Fenced):
            raise  # Fenced: the replica kills the execution, nothing more of it is sent
        except (DatabaseUnavailable, DatabaseTimeout, TransactionConflict) as exc:
            # Transient (the paper exchange's or the audit trail's database): a warning without a
            # traceback, and the strategy is told it may try again.
            log.warning("strategy %s: %s failed: %s", self._strategy_id, method, exc)
            raise BrokerError(errors.UNAVAILABLE, f"{method}: the database is unavailable; try again") from None
        except Exception as exc:
            raise refusals.internal_error(
                method, exc, log, f"strategy {self._strategy_id}", database=isinstance(exc, StoreError)
            ) from None

    def _arguments(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        names = CLIENT_METHODS.get(method)
        if names is None:
            raise BrokerError(errors.INVALID, f"CoinDCXClient has no method {method!r}")
        if not isinstance(params, dict):
            raise BrokerError(errors.INVALID, f"{method}: parameters must be given by name")
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise BrokerError(
                errors.INVALID,
                f"{method}() got unexpected argument(s) {', '.join(unknown)}; it takes {', '.join(names) or 'none'}",
            )
        signature = inspect.signature(getattr(self._target, method))
        missing = [
            name
            for name, parameter in signature.parameters.items()
            if parameter.default is inspect.Parameter.empty and params.get(name) is None
        ]
        if missing:
            raise BrokerError(errors.INVALID, f"{method}() is missing required argument(s) {', '.join(missing)}")
        arguments = {key: value for key, value in params.items() if value is not None}
        if method != "create_order":  # create_order checks its own, so that it can record every refusal
            for name, value in arguments.items():
                arguments[name] = _checked(method, name, value)
        return arguments

    async def _create_order(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check, record, send, record the answer. Every request is recorded, refused ones included:
        what cannot be stored in its typed column (a side that is not 'buy', a quantity that is not a
        number) is stored as NULL there and as given, made storable, in `request`."""
        given_id = arguments.get("client_order_id")
        valid_id = isinstance(given_id, str) and 0 < len(given_id) <= CLIENT_ORDER_ID_MAX
        client_order_id = str(given_id) if valid_id else new_client_order_id()
        side, order_type, market = arguments["side"], arguments["order_type"], arguments["market"]
        record: dict[str, Any] = {
            "strategy_id": self._strategy_id,
            "execution_id": self._execution_id,
            "exchange": self._exchange,
            "client_order_id": client_order_id,
            "market": market if isinstance(market, str) and 0 < len(market) <= _MAX_TEXT else None,
            "side": side if side in SIDES else None,
            "order_type": order_type if order_type in ORDER_TYPES else None,
            "total_quantity": None,
            "price_per_unit": None,
            "request": _storable(
                {**arguments, "client_order_id": given_id if given_id is not None else client_order_id}
            ),
        }
        try:
            request, quantity, limit_price = self._order_request(arguments, client_order_id, given_id)
        except BrokerError as exc:
            await self._record_refusal(record, exc.message)
            raise
        record |= {"total_quantity": quantity, "price_per_unit": limit_price, "request": _jsonable(request)}

        refusal = await self._refusal(market, quantity, limit_price)
        if refusal is None and self._guard is not None:
            # The risk limits, which the strategy's CONFIG cannot loosen: checked last, at the latest
            # measure, so the order that would cross one is the one refused.
            refusal = await self._guard.before_order(market, side, quantity)
        if refusal is not None:
            await self._record_refusal(record, refusal, kind=errors.REFUSED)
            raise BrokerError(errors.REFUSED, f"create_order: {refusal}")

        order_id = await self._record(record | {"status": "submitting"})
        if order_id is None:
            message = f"create_order: client_order_id {client_order_id!r} was already used by this strategy"
            await self._record_refusal(record | {"client_order_id": new_client_order_id()}, message)
            raise BrokerError(errors.INVALID, message)
        self.orders_sent += 1
        try:
            order = await self._target.create_order(**request)
        except ExchangeError as exc:
            status = "unknown" if exc.kind == errors.ORDER_UNKNOWN else "error"
            response = {"kind": exc.kind, "message": exc.message, "status_code": exc.status_code}
            await self._update(
                order_id,
                {"status": status, "error": exc.message, "response": response},
                alert=("order_refused", exc.message) if status == "error" else None,
            )
            raise
        except Fenced:
            # The paper exchange checks the fence again in the transaction that would fill: the lease was
            # lost after the order was recorded, and nothing was filled. The record says so.
            await self._update(order_id, {"status": "error", "error": "not sent: the execution lost its lease"})
            raise
        except BaseException:
            # Neither answered nor refused (a bug, a cancellation): say so rather than leave "submitting".
            await self._update(order_id, {"status": "unknown", "error": "the broker failed while sending"})
            raise
        answered = str(order.get("status") or "unknown")
        await self._update(
            order_id,
            {
                "status": answered,
                "exchange_order_id": str(order.get("id")) if order.get("id") is not None else None,
                "response": _jsonable(order),
            },
            alert=("order_filled", None) if answered == "filled" else None,
        )
        return order

    def _order_request(
        self, arguments: dict[str, Any], client_order_id: str, given_id: Any
    ) -> tuple[dict[str, Any], Decimal, Decimal | None]:
        """The order as it will be sent, its quantity and its limit price, parsed once; or BrokerError."""
        side, order_type, market = arguments["side"], arguments["order_type"], arguments["market"]
        if side not in SIDES:
            raise BrokerError(errors.INVALID, f"create_order: side must be 'buy' or 'sell', got {_short(side)}")
        if order_type not in ORDER_TYPES:
            raise BrokerError(
                errors.INVALID,
                f"create_order: order_type must be 'market_order' or 'limit_order', got {_short(order_type)}",
            )
        if not isinstance(market, str) or not 0 < len(market) <= _MAX_TEXT:
            raise BrokerError(errors.INVALID, "create_order: market must be a market name such as 'BTCUSDT'")
        if given_id is not None and given_id != client_order_id:
            raise BrokerError(
                errors.INVALID,
                f"create_order: client_order_id must be a string of 1-{CLIENT_ORDER_ID_MAX} characters",
            )
        quantity = errors.positive_number(
            "total_quantity", arguments["total_quantity"], errors.INVALID, where="create_order"
        )
        price = arguments.get("price_per_unit")
        limit_price = None
        if order_type == "limit_order":
            if price is None:
                raise BrokerError(errors.INVALID, "create_order: a limit_order needs price_per_unit")
            limit_price = errors.positive_number("price_per_unit", price, errors.INVALID, where="create_order")
        # What is sent is what was checked: the parsed numbers (CoinDCX takes no price for market orders).
        request: dict[str, Any] = {
            "side": side,
            "order_type": order_type,
            "market": market,
            "total_quantity": quantity,
            "client_order_id": client_order_id,
        }
        if limit_price is not None:
            request["price_per_unit"] = limit_price
        return request, quantity, limit_price

    async def _record_refusal(self, record: dict[str, Any], reason: str, *, kind: str = errors.INVALID) -> None:
        values = record | {"status": "refused", "error": reason[:1000]}
        alert = ("order_refused", reason[:1000])
        if await self._record(values, alert=alert) is None:  # a reused client_order_id: record it all the same
            await self._record(values | {"client_order_id": new_client_order_id()}, alert=alert)

    async def _refusal(self, market: str, quantity: Decimal, limit_price: Decimal | None) -> str | None:
        """Why the strategy's own limits refuse this order, or None."""
        limits = self._limits
        allowed = limits.allowed_markets
        if allowed is not None and market not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            return f"market {market!r} is not in CONFIG['allowed_markets'] ({names})"
        if self.orders_sent >= limits.max_orders_per_execution:
            return (
                f"this run already placed {self.orders_sent} order(s), the most"
                f" CONFIG['max_orders_per_execution'] allows ({limits.max_orders_per_execution})"
            )
        quote = await self._quote_currency(market)
        if quote is None:
            return None  # an unknown market: let the exchange answer that in its own words
        # The cap holds on what can actually trade: a limit order priced away from the market fills at the
        # market (a sell far below it, a buy far above it), so it counts at the larger of the two prices.
        current = Decimal(str(await self._market.price(market)))
        price = current if limit_price is None else max(limit_price, current)
        notional = quantity * price
        cap = Decimal(str(limits.notional_cap(quote)))
        if notional > cap:
            return (
                f"order value {_plain(notional)} {quote} ({_plain(quantity)} x {_plain(price)}) is over"
                f" CONFIG['max_order_notional'] of {_plain(cap)} {quote}"
            )
        return None

    async def _quote_currency(self, market: str) -> str | None:
        for details in await self._market.markets_details():
            if details.get("coindcx_name") == market or details.get("symbol") == market:
                return str(details.get("base_currency_short_name"))
        return None

    async def _record(self, values: dict[str, Any], *, alert: tuple[str, str | None] | None = None) -> uuid.UUID | None:
        """Insert one order request before anything is sent; None when its client_order_id was already
        used by this strategy. Raises Fenced when the execution lost its lease: nothing is recorded, and
        nothing may be sent. `alert`: an order alert enqueued in the same transaction (live orders only)."""

        def alert_for(order_id: uuid.UUID) -> Alert | None:
            return None if alert is None else self._alert(alert, order_id, values)

        return await self._store.record_order(values, self._fence, alert=alert_for)

    async def _update(
        self, order_id: uuid.UUID, values: dict[str, Any], *, alert: tuple[str, str | None] | None = None
    ) -> None:
        try:
            await self._store.update_order(
                order_id,
                self._strategy_id,
                status=values["status"],
                error=values.get("error"),
                exchange_order_id=values.get("exchange_order_id"),
                response=values.get("response"),
                alert=None if alert is None else self._alert(alert, order_id, values),
            )
        except (DatabaseUnavailable, DatabaseTimeout, TransactionConflict) as exc:
            log.warning("strategy %s: could not record the answer to order %s: %s", self._strategy_id, order_id, exc)
        except StoreError:
            # The order's fate must reach the strategy even if the audit update failed; log it loudly.
            log.exception("strategy %s: could not record the answer to order %s", self._strategy_id, order_id)

    async def _mirror_status(self, answered: list[Any]) -> None:
        known = [o for o in answered if isinstance(o, dict) and o.get("id") is not None and o.get("status")]
        if not known:
            return

        def on_filled(order: dict[str, Any]) -> Alert | None:
            return self._alert(("order_filled", None), order["order_id"], order)

        await self._store.mirror_status(
            self._strategy_id,
            [(str(o["id"]), str(o["status"]), _jsonable(o)) for o in known],
            # Fill alerts are for live orders only (see _alert): only then is "not yet filled" asked.
            on_filled=on_filled if self._exchange == "coindcx" else None,
        )

    def _alert(self, alert: tuple[str, str | None], order_id: uuid.UUID, values: dict[str, Any]) -> Alert | None:
        """An order alert, enqueued by the store in the transaction that records the order: for live
        orders only (paper fills are the strategy's own simulation, and would drown the word that matters)."""
        if self._exchange != "coindcx":
            return None
        event, reason = alert
        payload = {
            "order_id": str(order_id),
            "execution_id": str(self._execution_id),
            "exchange": self._exchange,
            "market": values.get("market"),
            "side": values.get("side"),
            "order_type": values.get("order_type"),
            "total_quantity": str(values.get("total_quantity")) if values.get("total_quantity") is not None else None,
            "client_order_id": values.get("client_order_id"),
            "exchange_order_id": values.get("exchange_order_id"),
        }
        if reason is not None:
            payload["reason"] = reason
        return event, payload


_MAX_TEXT = 100  # longest market name, order id or other text parameter a strategy may pass
_TEXT_PARAMETERS = frozenset({"pair", "interval", "market", "symbol", "side", "id", "client_order_id"})
_TIME_PARAMETERS = frozenset({"start_time", "end_time", "from_timestamp", "to_timestamp"})
_MAX_TIMESTAMP_MS = 4_102_444_800_000  # 2100-01-01: later than any candle or trade there is
_LIMIT_MAX = {"get_candles": 1000, "get_trades": 500, "get_trade_history": 5000}  # CoinDCX's own maxima


def _checked(method: str, name: str, value: Any) -> Any:
    """A read call's parameter checked by its type and range, or BrokerError naming it and saying why."""
    if name == "side" and (not isinstance(value, str) or value not in SIDES):
        raise BrokerError(errors.INVALID, f"{method}: side must be 'buy' or 'sell', got {_short(value)}")
    if name == "interval" and (not isinstance(value, str) or value not in INTERVALS):
        raise BrokerError(
            errors.INVALID, f"{method}: interval must be one of {', '.join(INTERVALS)}, got {_short(value)}"
        )
    if name in _TEXT_PARAMETERS:
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
            raise BrokerError(
                errors.INVALID, f"{method}: {name} must be a string of 1-{_MAX_TEXT} characters, got {_short(value)}"
            )
        return value
    if name == "limit":
        maximum = _LIMIT_MAX.get(method, 1000)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise BrokerError(
                errors.INVALID, f"{method}: limit must be a whole number from 1 to {maximum}, got {_short(value)}"
            )
        return value
    if name in _TIME_PARAMETERS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_TIMESTAMP_MS:
            raise BrokerError(
                errors.INVALID,
                f"{method}: {name} must be a time in epoch milliseconds from 0 to {_MAX_TIMESTAMP_MS}"
                f" (2100-01-01), got {_short(value)}",
            )
        return value
    return value


def _short(value: Any) -> str:
    """A parameter's value for an error message, short and never a huge conversion."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str | int | float | type(None)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _storable(value: Any, depth: int = 0) -> Any:
    """What the strategy passed, as JSON that jsonb stores: long text cut, NUL removed, numbers
    that JSON cannot carry (or that would take a long conversion) as short text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if value.bit_length() <= 64 else _short(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value[:200].replace("\x00", "")
    if isinstance(value, Decimal):
        return str(value)[:200]
    if depth < 4 and isinstance(value, dict):
        return {str(k)[:100].replace("\x00", ""): _storable(v, depth + 1) for k, v in list(value.items())[:20]}
    if depth < 4 and isinstance(value, list | tuple):
        return [_storable(v, depth + 1) for v in list(value)[:20]]
    return _short(value)


def _plain(number: Decimal) -> str:
    return f"{number.normalize():f}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
