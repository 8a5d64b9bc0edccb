"""The kinds of refusal a strategy's `client.<method>(...)` call can get: one vocabulary for the broker
(`reconciler.exchange`) and the sandbox supervisor, so `except ExchangeError as e: if e.kind == ...`
means the same wherever the refusal came from. Pure constants; the sandbox child imports them too.
"""

from __future__ import annotations

import logging
import secrets

from reconciler.outcome import BrokerError

INVALID_REQUEST = "invalid_request"
LIMIT_REFUSED = "limit_refused"
RATE_LIMITED = "rate_limited"
REJECTED = "rejected"
AUTH = "auth"
NOT_FOUND = "not_found"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"
BAD_RESPONSE = "bad_response"
ORDER_UNKNOWN = "order_unknown"
CREDENTIALS = "credentials"
INTERNAL = "internal"

# What each kind tells a strategy author, and what to do about it (the README's table is this one).
KINDS: dict[str, str] = {
    INVALID_REQUEST: "the call is malformed (unknown method, missing or bad parameter): fix the call",
    LIMIT_REFUSED: "the strategy's own limits (CONFIG markets, notional, orders per run, client calls per run)"
    " refuse it: change the order or the limit",
    RATE_LIMITED: "too many calls for this API key (ours or the exchange's 429): call less often",
    REJECTED: "the exchange refused the request (funds, price range, ...): read the message",
    AUTH: "the exchange does not accept the API key or signature: redeploy with valid credentials",
    NOT_FOUND: "no such order or market",
    UNAVAILABLE: "the exchange (or this run's client) is not reachable: try again in a later run",
    TIMEOUT: "the exchange did not answer in time: check the order's status before repeating it",
    BAD_RESPONSE: "the exchange answered with something that is not its documented JSON",
    ORDER_UNKNOWN: "an order create failed ambiguously and its fate could not be checked: look it up",
    CREDENTIALS: "this strategy's credentials are missing or cannot be decrypted: redeploy them",
    INTERNAL: "the service failed handling the call (logged with the reference in the message): not the"
    " strategy's fault; try again in a later run",
}


def internal_error(
    method: str, exc: BaseException, logger: logging.Logger, context: str, *, database: bool = False
) -> BrokerError:
    """Log `exc` under a short reference and return the refusal the strategy sees instead.

    Never the exception's own text: it may carry the replica's secrets. The reference lets an author
    who reports the message be matched with the log line.
    """
    reference = secrets.token_hex(4)
    logger.error("%s: client call %s failed (reference %s)", context, method, reference, exc_info=exc)
    if database:
        message = (
            f"{method}: the service could not reach its database, so the call was not completed "
            f"(reference {reference}); try again in a later run"
        )
    else:
        message = (
            f"{method}: the service failed while handling this call (reference {reference}); this is not "
            "caused by the strategy's code; try again in a later run, and report the reference if it persists"
        )
    return BrokerError(INTERNAL, message)
