"""Tenant JWTs: `Authorization: Bearer <JWT>` signed with JWT_SECRET, HS256 only, `sub` and `exp` required.

PyJWT checks the signature, the algorithm (only HS256 is accepted, so neither `none` nor a key
confusion with another algorithm gets through), and `exp`. The user id is `sub`, and must look like
the user ids the executor API accepts. The executor API's token is not a JWT and never passes here;
a JWT never equals the executor token, so neither opens the other's routes.
"""

from __future__ import annotations

import re
import time

import jwt

from api.schemas import USER_ID_PATTERN

ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 30 * 86_400
# HS256 keys shorter than the hash are weak; PyJWT warns below 32 bytes too.
MIN_SECRET_BYTES = 32

_USER_ID = re.compile(USER_ID_PATTERN)


class TenantAuthError(Exception):
    """The token is missing, malformed, forged, expired or names no valid user; the message says which."""


class TenantAuth:
    def __init__(self, secret: str, *, leeway_seconds: float = 5.0) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._leeway = leeway_seconds

    def user_id(self, token: str) -> str:
        """The verified user id (`sub`) of `token`, or TenantAuthError."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"], "verify_signature": True, "verify_exp": True},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise TenantAuthError("the token has expired; ask for a new one") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TenantAuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise TenantAuthError(f"the token is not signed with {ALGORITHM}") from None
        except jwt.InvalidSignatureError:
            raise TenantAuthError("the token's signature does not verify") from None
        except jwt.InvalidTokenError:
            raise TenantAuthError("not a valid JWT") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
            raise TenantAuthError("the token's 'sub' is not a valid user id")
        return sub

    def mint(self, user_id: str, *, ttl_seconds: int = DEFAULT_TTL_SECONDS, now: float | None = None) -> str:
        if not _USER_ID.fullmatch(user_id):
            raise ValueError("user id must be 1-128 characters of letters, digits, '_', '.', '@', ':', '-'")
        issued = int(time.time() if now is None else now)
        return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_seconds}, self._secret, ALGORITHM)
