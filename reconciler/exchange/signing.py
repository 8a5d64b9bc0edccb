"""CoinDCX request signing: the JSON body, serialized once, is both what is signed and what is sent.

HMAC-SHA256 over the exact body bytes, keyed with the API secret, as lowercase hex. The body is
serialized compactly (no spaces), keys in insertion order, as CoinDCX's own samples do; signing a
re-serialization instead of the bytes on the wire would break on any whitespace difference.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def serialize_body(params: dict[str, Any], *, timestamp_ms: int) -> bytes:
    """The body to send: the parameters plus `timestamp` (epoch milliseconds), compact JSON.

    Parameters that are None are left out. `timestamp` goes last unless `params` has a `timestamp`
    key already (any value), in which case it takes that position.
    """
    body = {key: value for key, value in params.items() if value is not None or key == "timestamp"}
    body["timestamp"] = timestamp_ms
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def auth_headers(api_key: str, secret: str, body: bytes) -> dict[str, str]:
    return {
        "X-AUTH-APIKEY": api_key,
        "X-AUTH-SIGNATURE": sign(secret, body),
        "Content-Type": "application/json",
    }
