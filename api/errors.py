"""Errors as JSON: every failure a client can see has a body `{"error": code, "message": ...}`.

Expected failures are `ApiError`s raised by handlers; Starlette's own 404/405 are rewritten to the same
shape; a lost database is a 503; anything else is a 500 carrying the request id, logged with its
traceback, and never with the traceback in the body.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.schemas import ErrorResponse, FieldError, ValidationErrorResponse
from reconciler.storage.db import DatabaseTimeout, DatabaseUnavailable, StoreError, TransactionConflict

log = logging.getLogger("api")

REQUEST_ID_HEADER = "x-request-id"


class ApiError(Exception):
    """`body`: a documented error body with more than `error` and `message` (whose two it carries
    too), sent as it is instead of the plain ErrorResponse."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: BaseModel | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})
        self.body = body


class NotFound(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)


class Conflict(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(409, "conflict", message)


class PayloadTooLarge(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(413, "payload_too_large", message)


class RequestInvalid(ApiError):
    def __init__(self, detail: list[FieldError]) -> None:
        super().__init__(422, "validation_error", "; ".join(f"{e.field}: {e.reason}" for e in detail))
        self.detail = detail

    @classmethod
    def one(cls, field: str, reason: str) -> RequestInvalid:
        return cls([FieldError(field=field, reason=reason)])


def json_body(
    model: ErrorResponse | ValidationErrorResponse, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(exclude_none=True),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if isinstance(exc, RequestInvalid):
        return json_body(ValidationErrorResponse(detail=exc.detail), exc.status, exc.headers)
    if exc.body is not None:
        # By alias: the tenant API's bodies are camelCase. Nulls kept: they are part of the documented
        # shape there (a halt's resume_at null says "until started").
        return Response(
            exc.body.model_dump_json(by_alias=True),
            status_code=exc.status,
            media_type="application/json",
            headers=exc.headers,
        )
    return json_body(ErrorResponse(error=exc.error, message=exc.message), exc.status, exc.headers)


_HTTP_ERRORS = {
    400: ("bad_request", "the request is malformed"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "method not allowed on this route"),
}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error, message = _HTTP_ERRORS.get(exc.status_code, ("http_error", exc.detail))
    if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        message = f"method {request.method} not allowed on {request.url.path}; allowed: {exc.headers['Allow']}"
    elif exc.status_code == 404:
        message = f"no route {request.url.path}"
    return json_body(ErrorResponse(error=error, message=message), exc.status_code, exc.headers)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("request %s: %s", request_id(request), exc)
    body = ErrorResponse(
        error="database_unavailable",
        message="the database is unavailable; retry shortly",
        request_id=request_id(request),
    )
    return json_body(body, 503, {"Retry-After": "1"})


async def database_busy(request: Request, exc: Exception) -> Response:
    # A statement or lock timeout, or a deadlock that outlived its retries: the database is up but
    # could not serve this request in time. Retrying shortly is the right answer, as for an outage.
    log.warning("request %s: %s", request_id(request), exc)
    body = ErrorResponse(
        error="database_busy",
        message="the database could not serve this request in time; retry shortly",
        request_id=request_id(request),
    )
    return json_body(body, 503, {"Retry-After": "1"})


async def store_error(request: Request, exc: Exception) -> Response:
    log.error("request %s failed in the store: %s", request_id(request), exc, exc_info=exc)
    body = ErrorResponse(error="internal_error", message="internal error", request_id=request_id(request))
    return json_body(body, 500)


EXCEPTION_HANDLERS = {
    ApiError: api_error,
    HTTPException: http_error,
    DatabaseUnavailable: database_unavailable,
    DatabaseTimeout: database_busy,
    TransactionConflict: database_busy,
    StoreError: store_error,
}


class RequestIdMiddleware:
    """Outermost: gives each request an id (echoed in X-Request-ID) and turns a crash into a 500 JSON.

    Handled here rather than by Starlette's ServerErrorMiddleware, which re-raises after responding.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            log.info("request %s: the client went away before its body was read", rid)
        except Exception:
            log.exception("request %s %s %s failed", rid, scope.get("method"), scope.get("path"))
            if started:
                raise
            body = ErrorResponse(error="internal_error", message="internal error", request_id=rid)
            await json_body(body, 500)(scope, receive, send_with_id)
