"""The `CoinDCXClient` a strategy sees: every method call crosses the socketpair to the replica's broker.

The proxy holds no credentials and no connection of its own, only a `call` function handed in by the
child runtime. Its methods and parameter names come from `CLIENT_METHODS`, the table the broker reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from reconciler.outcome import CLIENT_METHODS
from reconciler.sandbox.jsonable import strict_default


class ExchangeError(Exception):
    """What a failed client call raises; `kind` says why (one of `reconciler.refusals.KINDS`:
    "invalid_request", "limit_refused", "rate_limited", "rejected", ...)."""

    __module__ = "builtins"  # shown as `ExchangeError: ...` in the strategy's traceback

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Call = Callable[[str, dict[str, Any]], Any]


def _method(name: str, parameters: tuple[str, ...], call: Call) -> Callable[..., Any]:
    def method(self: object, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(parameters):
            raise TypeError(f"{name}() takes at most {len(parameters)} arguments ({len(args)} given)")
        params = dict(zip(parameters, args, strict=False))
        for key, value in kwargs.items():
            if key not in parameters:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if key in params:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            params[key] = value
        # Numbers JSON cannot carry (inf, nan, integers past 4,300 digits) go to the broker as text, so
        # that it refuses them with an ExchangeError naming the parameter and records the order request.
        params = {key: _carried(value) for key, value in params.items()}
        try:  # numpy scalars are fine; anything else must already be JSON
            params = json.loads(json.dumps(params, default=strict_default, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}(): arguments must be JSON values: {exc}") from None
        return call(name, params)

    method.__name__ = method.__qualname__ = name
    return method


def _carried(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    return value


def make_client_class(call: Call) -> type:
    """A `CoinDCXClient` class bound to `call`; constructor arguments (old code passes keys) are ignored."""

    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        pass

    def __repr__(self: object) -> str:
        return "<CoinDCXClient (brokered)>"

    namespace: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__module__": "coindcx"}
    for name, parameters in CLIENT_METHODS.items():
        namespace[name] = _method(name, parameters, call)
    return type("CoinDCXClient", (), namespace)
