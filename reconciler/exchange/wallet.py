"""A paper wallet's value in one currency, at the feed's current prices.

Each currency is converted through a market that trades it against the valuation currency directly
(BTC via BTCUSDT, INR via USDTINR), else through one intermediate quote (a coin listed only against
INR: via its INR market, then USDTINR). A currency with no such route is left out and named, so a
chart never silently mixes units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from reconciler.exchange.feed import PriceFeed

VALUATION_CURRENCY = "USDT"
_EIGHT = Decimal("0.00000001")


@dataclass(frozen=True, slots=True)
class WalletValue:
    currency: str
    value: Decimal
    unpriced: tuple[str, ...]  # currencies held that no market could convert


async def wallet_value(
    holdings: Mapping[str, Decimal], feed: PriceFeed, currency: str = VALUATION_CURRENCY
) -> WalletValue:
    """`holdings`: currency -> amount (available plus held by open orders)."""
    markets = _pairs(await feed.markets_details())
    rates: dict[str, Decimal] = {currency: Decimal(1)}
    total = Decimal(0)
    unpriced = []
    for held, amount in sorted(holdings.items()):
        if not amount:
            continue
        rate = await _rate(held, currency, markets, feed, rates)
        if rate is None:
            unpriced.append(held)
            continue
        total += amount * rate
    # Eight decimals: finer than any price here, and a stored value that reads like an amount.
    return WalletValue(currency=currency, value=total.quantize(_EIGHT), unpriced=tuple(unpriced))


# The last list of market details seen and its pairs. Feeds hand out one list until their markets
# change (the simulated feed's are fixed; CoinDCX's are fetched every few minutes), and every paper
# execution is valued as it ends: its pairs are worked out once per list, not once per execution.
_last_pairs: tuple[list[dict[str, Any]], list[tuple[str, str, str]]] | None = None


def _pairs(details: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    global _last_pairs
    cached = _last_pairs
    if cached is not None and cached[0] is details:
        return cached[1]
    pairs = [_pair(d) for d in details]
    _last_pairs = (details, pairs)
    return pairs


def _pair(details: Mapping[str, Any]) -> tuple[str, str, str]:
    """(market, target, base): a price is how many `base` one `target` costs."""
    return (
        str(details.get("coindcx_name")),
        str(details.get("target_currency_short_name")),
        str(details.get("base_currency_short_name")),
    )


async def _direct(source: str, into: str, markets: list[tuple[str, str, str]], feed: PriceFeed) -> Decimal | None:
    for market, target, base in markets:
        if target == source and base == into:
            return Decimal(str(await feed.price(market)))
        if target == into and base == source:
            price = Decimal(str(await feed.price(market)))
            return 1 / price if price else None
    return None


async def _rate(
    source: str,
    into: str,
    markets: list[tuple[str, str, str]],
    feed: PriceFeed,
    rates: dict[str, Decimal],
) -> Decimal | None:
    if source in rates:
        return rates[source]
    rate = await _direct(source, into, markets, feed)
    if rate is None:
        for middle in sorted({base for _, _, base in markets} - {source, into}):
            first = await _direct(source, middle, markets, feed)
            second = await _direct(middle, into, markets, feed) if first is not None else None
            if first is not None and second is not None:
                rate = first * second
                break
    if rate is not None:
        rates[source] = rate
    return rate
