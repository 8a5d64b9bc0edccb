"""Bearer-token authentication of every route but GET /health and /metrics, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import json_body
from api.schemas import ErrorResponse

# Public whatever the method: another method on them gets the router's 405, not a 401.
PUBLIC_PATHS = {"/health", "/metrics"}


class BearerAuthMiddleware:
    """The executor API's token. `exempt(path)` names the paths that authenticate otherwise (the
    tenant API and the dashboard, with a user's JWT) or not at all (the API's description)."""

    def __init__(self, app: ASGIApp, token: str | None, exempt: Callable[[str], bool] = lambda path: False) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._token is None:
            body = ErrorResponse(
                error="auth_not_configured",
                message="EXECUTOR_API_TOKEN is not set on the server: every route but /health is refused",
            )
            await json_body(body, 503)(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented is None or not hmac.compare_digest(presented, self._token):
            message = "missing bearer token" if presented is None else "invalid bearer token"
            body = ErrorResponse(error="unauthorized", message=f"{message}: send 'Authorization: Bearer <token>'")
            await json_body(body, 401, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            presented = token.strip()
            return presented if scheme.lower() == b"bearer" and presented else None
    return None
