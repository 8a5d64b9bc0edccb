"""Turning what a strategy leaves in RESULT and STATE into JSON (in the child)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
from typing import Any

_MAX_DEPTH = 64


def _numpy_scalar(value: Any) -> Any:
    item = getattr(type(value), "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return value.item()
    return None


def strict_default(value: Any) -> Any:
    """`json.dumps` default for STATE: numpy scalars only; anything else is not JSON."""
    converted = _numpy_scalar(value)
    if converted is not None:
        return converted
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """Best-effort conversion for RESULT: pandas/numpy/datetime become data, the rest its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return repr(value)[:1000]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item, depth + 1) for item in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    module = type(value).__module__.partition(".")[0]
    if module == "numpy" and hasattr(value, "tolist"):
        return to_jsonable(value.tolist(), depth + 1)
    if module == "pandas" and hasattr(value, "to_json"):
        try:
            return json.loads(value.to_json(date_format="iso"))
        except (ValueError, TypeError):
            pass
    return repr(value)[:1000]
