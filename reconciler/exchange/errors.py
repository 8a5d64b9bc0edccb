"""Exchange failures as `BrokerError`s a strategy can catch, each with a `kind` it can branch on.

Every message is written for a strategy author and is built only from the method name, the HTTP
status and the exchange's own error text: never from request headers or bodies, so never a secret.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from reconciler.outcome import BrokerError

# The kinds a strategy may see, so `except BrokerError as e: if e.kind == "rate_limited": ...` works.
INVALID = "invalid_request"  # the strategy's call is malformed (unknown method, bad parameter)
REFUSED = "limit_refused"  # the strategy's own limits (markets, notional, orders per run) refuse it
RATE_LIMITED = "rate_limited"  # too many calls: our bucket or the exchange's HTTP 429
REJECTED = "rejected"  # the exchange refused the request (HTTP 400/422: funds, price range, ...)
AUTH = "auth"  # the exchange does not accept the API key or signature
NOT_FOUND = "not_found"  # no such order or market
UNAVAILABLE = "unavailable"  # HTTP 5xx or the connection failed, after the retries we allow
TIMEOUT = "timeout"  # no answer within EXCHANGE_TIMEOUT_SECONDS, after the retries we allow
BAD_RESPONSE = "bad_response"  # the exchange answered with something that is not the documented JSON
ORDER_UNKNOWN = "order_unknown"  # an order create failed ambiguously and its fate could not be checked
CREDENTIALS = "credentials"  # this strategy's credentials are missing or cannot be decrypted


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


def positive_number(name: str, value: Any, kind: str, *, where: str = "") -> Decimal:
    """`value` as a positive, finite Decimal, or an ExchangeError of `kind` naming the parameter."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ExchangeError(kind, f"{prefix}{name} must be a number, got {type(value).__name__}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ExchangeError(kind, f"{prefix}{name} must be a number, got {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise ExchangeError(kind, f"{prefix}{name} must be a positive number, got {value!r}")
    return number
