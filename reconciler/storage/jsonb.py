"""JSON for jsonb columns that gives back a float as a float.

jsonb keeps numbers as NUMERIC and prints them without an exponent, with as many decimals as were
written: `1.5e+300` (how Python writes that float) comes back as a 301-digit integer, and a STATE or
RESULT float turns into an int. Floats that Python writes with `e+` (all of them integral, |x| ≥ 1e16)
are written here positionally with a `.0`, which jsonb keeps; everything else is plain `json.dumps`.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> str:
    text = json.dumps(value)
    if "e+" not in text:  # no such float (an "e+" inside a string only costs the slow path)
        return text
    marker = uuid.uuid4().hex
    literals: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, float) and "e+" in repr(item):
            literals.append(f"{Decimal(repr(item)):f}.0")
            return f"{marker}:{len(literals) - 1}"
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [mark(inner) for inner in item]
        return item

    text = json.dumps(mark(value))
    for index, literal in enumerate(literals):
        text = text.replace(f'"{marker}:{index}"', literal, 1)
    return text
