"""Keyset cursors: the (time, id) of the last item of a page, as `<microseconds since 1970>_<id>`.

Clients treat them as opaque and only echo `next_cursor` back. The OpenAPI document still states their
form as a pattern, and every string of that form is a valid position (the page after that time and
id), so a generated client or a property-based test that follows the document is never refused.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from api.errors import RequestInvalid
from api.schemas import STRATEGY_CURSOR_PATTERN, UUID_CURSOR_PATTERN

K = TypeVar("K", str, uuid.UUID)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PATTERNS = {str: re.compile(STRATEGY_CURSOR_PATTERN), uuid.UUID: re.compile(UUID_CURSOR_PATTERN)}


def encode_cursor(at: datetime, key: str | uuid.UUID) -> str:
    return f"{(at - _EPOCH) // _MICROSECOND}_{key}"


def decode_cursor(cursor: str | None, key_type: type[K]) -> tuple[datetime, K] | None:
    if cursor is None:
        return None
    if not _PATTERNS[key_type].fullmatch(cursor):
        raise RequestInvalid.one("cursor", "not a cursor returned by this API")
    micros, _, key = cursor.partition("_")
    return _EPOCH + int(micros) * _MICROSECOND, key_type(key)
