"""An exchange API key's identity, as the exchange counts it: one digest for deploy's ownership check
(an API key belongs to one user) and for the broker's rate-limit buckets (one bucket per key).

The API key is the public half of a credential (it travels in every signed request's `X-AUTH-APIKEY`
header); the digest is kept so that the key itself is stored only sealed. HTTP strips the whitespace
around a header value, so `"KEY "` and `"KEY"` are one key to the exchange, and one here.
"""

from __future__ import annotations

import hashlib


def normalize_api_key(api_key: str) -> str:
    return api_key.strip(" \t")


def api_key_digest(api_key: str) -> str:
    return hashlib.sha256(normalize_api_key(api_key).encode()).hexdigest()
