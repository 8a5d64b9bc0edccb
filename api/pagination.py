"""Opaque keyset cursors: the (time, id) of the last item of a page, as URL-safe base64 JSON."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import TypeVar

from api.errors import RequestInvalid

K = TypeVar("K", str, uuid.UUID)


def encode_cursor(at: datetime, key: str | uuid.UUID) -> str:
    raw = json.dumps([at.isoformat(), str(key)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, key_type: type[K]) -> tuple[datetime, K] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive time")
        return parsed, key_type(key)
    except (binascii.Error, ValueError, TypeError, AttributeError, UnicodeDecodeError):
        raise RequestInvalid.one("cursor", "not a cursor returned by this API") from None
