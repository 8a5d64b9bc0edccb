"""Exchange credentials sealed at rest with AES-GCM, under keys that can be rotated.

`ENCRYPTION_KEY` is a comma-separated list of `<key_id>:<urlsafe-base64 of 32 bytes>`. The first key
seals; every listed key opens, so rotation is: put the new key first, keep the old one after it, run
`rotate` (re-seals every row under the new key), then drop the old key. The key id is stored beside
the ciphertext, so a row sealed by a key no longer configured is named as such instead of failing as
"corrupt". The strategy id is the AES-GCM associated data: a ciphertext copied onto another strategy's
row does not open.

Pure: no database, no settings import beyond what the caller passes, so the API can seal at deploy.
Nothing here puts a secret into a repr, a str or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_BYTES = 32
_NONCE_BYTES = 12
# Format version byte in front of every blob, so the layout can change without guessing.
_VERSION = b"\x01"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CryptoError(Exception):
    """Base class: something about ENCRYPTION_KEY or a sealed credential is wrong."""


class EncryptionKeyError(CryptoError):
    """ENCRYPTION_KEY is missing or malformed; raised at start-up or deploy, never mid-run."""


class DecryptionError(CryptoError):
    """A sealed credential does not open with the configured keys (wrong key, tampered, other row)."""


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """A strategy's exchange API key and secret. The secret never appears in repr or str."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={_mask(self.api_key)!r}, api_secret='***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the `strategy_credentials` row stores: the sealing key's id and the ciphertext."""

    key_id: str
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r}, ciphertext=<{len(self.ciphertext)} bytes>)"


def _mask(api_key: str) -> str:
    # Enough of the public key id to tell two keys apart in logs, never the whole thing.
    return api_key[:4] + "…" if len(api_key) > 8 else "…"


def generate_key(key_id: str | None = None) -> str:
    """A new ENCRYPTION_KEY entry, `<key_id>:<base64>`; the key id defaults to a random short name."""
    key_id = key_id or "k" + os.urandom(4).hex()
    if not _KEY_ID.match(key_id):
        raise EncryptionKeyError("a key id is 1-64 letters, digits, '.', '_' or '-'")
    secret = base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()
    return f"{key_id}:{secret}"


def parse_keys(value: str) -> list[tuple[str, bytes]]:
    """Parse ENCRYPTION_KEY into (key_id, key) pairs, first = sealing key. Errors never echo the value."""
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if not entries:
        raise EncryptionKeyError(_MISSING)
    keys: list[tuple[str, bytes]] = []
    for position, entry in enumerate(entries, start=1):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID.match(key_id):
            raise EncryptionKeyError(
                f"ENCRYPTION_KEY entry {position} is not '<key_id>:<urlsafe-base64 32 bytes>'"
                " (generate one with `strategy-executor generate-key`)"
            )
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"ENCRYPTION_KEY entry {position} ({key_id!r}) is not base64") from None
        if len(raw) != _KEY_BYTES:
            raise EncryptionKeyError(
                f"ENCRYPTION_KEY entry {position} ({key_id!r}) decodes to {len(raw)} bytes, not {_KEY_BYTES}"
            )
        if any(existing == key_id for existing, _ in keys):
            raise EncryptionKeyError(f"ENCRYPTION_KEY lists key id {key_id!r} twice")
        keys.append((key_id, raw))
    return keys


_MISSING = "ENCRYPTION_KEY is not set; generate one with `strategy-executor generate-key`"


class CredentialCipher:
    """Seals and opens `Credentials` with the configured keys; the first key seals."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        # An empty list is allowed so a paper-only replica can start; every use then raises clearly.
        self._keys = {key_id: AESGCM(raw) for key_id, raw in keys}
        self._current = keys[0][0] if keys else None

    @classmethod
    def from_key_string(cls, value: str | None, *, required: bool = True) -> CredentialCipher:
        if not value or not value.strip():
            if required:
                raise EncryptionKeyError(_MISSING)
            return cls([])
        return cls(parse_keys(value))

    @classmethod
    def from_settings(cls, settings: object, *, required: bool = True) -> CredentialCipher:
        """From `settings.encryption_key` (a pydantic SecretStr or None)."""
        secret = getattr(settings, "encryption_key", None)
        value = secret.get_secret_value() if secret is not None else None
        return cls.from_key_string(value, required=required)

    @property
    def current_key_id(self) -> str:
        if self._current is None:
            raise EncryptionKeyError(_MISSING)
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __repr__(self) -> str:
        return f"CredentialCipher(key_ids={list(self._keys)!r})"

    def encrypt(self, credentials: Credentials, *, strategy_id: str) -> Sealed:
        key_id = self.current_key_id
        plaintext = json.dumps(
            {"api_key": credentials.api_key, "api_secret": credentials.api_secret}, separators=(",", ":")
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[key_id].encrypt(nonce, plaintext, _associated(strategy_id, key_id))
        return Sealed(key_id=key_id, ciphertext=_VERSION + nonce + sealed)

    def decrypt(self, sealed: Sealed, *, strategy_id: str) -> Credentials:
        if not self._keys:
            raise EncryptionKeyError(_MISSING)
        aead = self._keys.get(sealed.key_id)
        if aead is None:
            raise DecryptionError(
                f"credentials of strategy {strategy_id!r} are sealed with key id {sealed.key_id!r}, which is "
                f"not in ENCRYPTION_KEY (configured: {', '.join(self._keys)})"
            )
        blob = sealed.ciphertext
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise DecryptionError(f"credentials of strategy {strategy_id!r} are not a sealed blob")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plaintext = aead.decrypt(nonce, body, _associated(strategy_id, sealed.key_id))
        except InvalidTag:
            raise DecryptionError(
                f"credentials of strategy {strategy_id!r} do not open with key {sealed.key_id!r}"
                " (wrong key material, or the row was tampered with or copied from another strategy)"
            ) from None
        data = json.loads(plaintext)
        return Credentials(api_key=data["api_key"], api_secret=data["api_secret"])

    def reseal(self, sealed: Sealed, *, strategy_id: str) -> Sealed:
        """Re-encrypt under the current key (a no-op result is still a fresh nonce)."""
        return self.encrypt(self.decrypt(sealed, strategy_id=strategy_id), strategy_id=strategy_id)


def _associated(strategy_id: str, key_id: str) -> bytes:
    # Binds the ciphertext to its row: opening it for another strategy or under another key id fails.
    return f"strategy-executor/credentials/v1\x00{strategy_id}\x00{key_id}".encode()
