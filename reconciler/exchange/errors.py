"""Exchange failures as `BrokerError`s a strategy can catch, each with a `kind` it can branch on.

Every message is written for a strategy author and is built only from the method name, the HTTP
status and the exchange's own error text: never from request headers or bodies, so never a secret.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from reconciler import refusals
from reconciler.outcome import BrokerError

# The kinds a strategy may see, so `except BrokerError as e: if e.kind == "rate_limited": ...` works;
# one vocabulary with the sandbox supervisor's own refusals (reconciler.refusals).
INVALID = refusals.INVALID_REQUEST  # the strategy's call is malformed (unknown method, bad parameter)
REFUSED = refusals.LIMIT_REFUSED  # the strategy's own limits (markets, notional, orders per run) refuse it
RATE_LIMITED = refusals.RATE_LIMITED  # too many calls: our bucket or the exchange's HTTP 429
REJECTED = refusals.REJECTED  # the exchange refused the request (HTTP 400/422: funds, price range, ...)
AUTH = refusals.AUTH  # the exchange does not accept the API key or signature
NOT_FOUND = refusals.NOT_FOUND  # no such order or market
UNAVAILABLE = refusals.UNAVAILABLE  # HTTP 5xx or the connection failed, after the retries we allow
TIMEOUT = refusals.TIMEOUT  # no answer within EXCHANGE_TIMEOUT_SECONDS, after the retries we allow
BAD_RESPONSE = refusals.BAD_RESPONSE  # the exchange answered with something that is not the documented JSON
ORDER_UNKNOWN = refusals.ORDER_UNKNOWN  # an order create failed ambiguously and its fate could not be checked
CREDENTIALS = refusals.CREDENTIALS  # this strategy's credentials are missing or cannot be decrypted


class ExchangeError(BrokerError):
    """An error answered by, or on the way to, the exchange."""

    def __init__(self, kind: str, message: str, *, status_code: int | None = None) -> None:
        super().__init__(kind, message)
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.kind in (RATE_LIMITED, UNAVAILABLE, TIMEOUT)


def kind_for_status(status_code: int) -> str:
    if status_code == 429:
        return RATE_LIMITED
    if status_code >= 500:
        return UNAVAILABLE
    if status_code in (401, 403):
        return AUTH
    if status_code == 404:
        return NOT_FOUND
    return REJECTED


def from_response(method: str, status_code: int, body: object) -> ExchangeError:
    """Map a non-2xx answer to an ExchangeError, quoting the exchange's `message` when it gave one."""
    detail = ""
    if isinstance(body, dict):
        detail = str(body.get("message") or body.get("error") or "")
    elif isinstance(body, str):
        detail = body.strip()[:200]
    kind = kind_for_status(status_code)
    explanation = {
        RATE_LIMITED: "too many requests; slow down",
        UNAVAILABLE: "the exchange is unavailable",
        AUTH: "the exchange did not accept this strategy's API key or signature",
        NOT_FOUND: "not found",
        REJECTED: "the exchange rejected the request",
    }[kind]
    suffix = f": {detail}" if detail else ""
    message = f"{method}: {explanation}{suffix} (HTTP {status_code})"
    return ExchangeError(kind, message, status_code=status_code)


# Bounds of the amounts (prices, quantities) a strategy may send, wide enough for any market CoinDCX
# lists and narrow enough that every accepted number is stored exactly (NUMERIC) and sent as a JSON number
# the exchange can read: at most MAX_SIGNIFICANT_DIGITS digits, MAX_DECIMALS places, below MAX_AMOUNT.
MAX_SIGNIFICANT_DIGITS = 20
MAX_DECIMALS = 18
MAX_AMOUNT = Decimal(10) ** 15
_MAX_TEXT = 64  # a number written as text longer than this is not one an exchange accepts


def positive_number(name: str, value: Any, kind: str, *, where: str = "") -> Decimal:
    """`value` as a positive Decimal within the bounds above, or an ExchangeError of `kind` naming the
    parameter and why. The one parser for every price and quantity, in the broker and the paper exchange.

    Size is checked before any conversion: a 20,000-digit int or string is refused by its length, never
    turned into text or Decimal (Python refuses int-to-text conversions past 4,300 digits, and PostgreSQL
    NUMERIC would overflow on 1e999999).
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ExchangeError(kind, f"{prefix}{name} must be a number, got {type(value).__name__}")
    if isinstance(value, int) and value.bit_length() > 64:
        raise ExchangeError(
            kind, f"{prefix}{name} must be below {MAX_AMOUNT:.0e}, got an integer of {value.bit_length()} bits"
        )
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        raise ExchangeError(
            kind, f"{prefix}{name} must be a number of at most {_MAX_TEXT} characters, got {len(value)} characters"
        )
    try:
        number = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ExchangeError(kind, f"{prefix}{name} must be a number, got {str(value)[:_MAX_TEXT]!r}") from None
    shown = _shown(value)
    if not number.is_finite() or number <= 0:
        raise ExchangeError(kind, f"{prefix}{name} must be a positive number, got {shown}")
    if number >= MAX_AMOUNT:
        raise ExchangeError(kind, f"{prefix}{name} must be below {MAX_AMOUNT:.0e}, got {shown}")
    digits, places = significant_digits(number), decimal_places(number)
    if places > MAX_DECIMALS:
        raise ExchangeError(kind, f"{prefix}{name} has more than {MAX_DECIMALS} decimal places, got {shown}")
    if digits > MAX_SIGNIFICANT_DIGITS:
        raise ExchangeError(
            kind, f"{prefix}{name} has {digits} significant digits, more than the {MAX_SIGNIFICANT_DIGITS} allowed"
        )
    return number


def _strip(number: Decimal) -> tuple[tuple[int, ...], int]:
    """Digits and exponent without trailing zeros, computed exactly (Decimal.normalize() rounds to the
    context's 28 digits, which let a 30-digit quantity pass a precision check it should fail)."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    trimmed = list(digits)
    while len(trimmed) > 1 and trimmed[-1] == 0:
        trimmed.pop()
        exponent += 1
    return tuple(trimmed), exponent


def decimal_places(number: Decimal) -> int:
    """How many digits after the decimal point `number` needs (0.0100 -> 2), exactly."""
    _, exponent = _strip(number)
    return max(0, -exponent)


def significant_digits(number: Decimal) -> int:
    digits, _ = _strip(number)
    return len(digits)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value[:_MAX_TEXT])
    return text if len(text) <= 40 else text[:37] + "..."
