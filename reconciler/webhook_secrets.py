"""Webhook signing secrets, sealed at rest with the same keys (ENCRYPTION_KEY) as exchange credentials.

Each is bound to its webhook row (the associated data names the webhook id), so a sealed secret
copied onto another webhook does not open.
"""

from __future__ import annotations

import secrets
import uuid

from reconciler.crypto import CredentialCipher, Credentials, Sealed

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _row(webhook_id: uuid.UUID) -> str:
    return f"webhook:{webhook_id}"


def seal_secret(cipher: CredentialCipher, webhook_id: uuid.UUID, secret: str) -> Sealed:
    return cipher.encrypt(Credentials(api_key="webhook", api_secret=secret), strategy_id=_row(webhook_id))


def open_secret(cipher: CredentialCipher, webhook_id: uuid.UUID, sealed: Sealed) -> str:
    return cipher.decrypt(sealed, strategy_id=_row(webhook_id)).api_secret
