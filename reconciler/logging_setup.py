"""Logging for the service: one line per record, text or JSON (LOG_FORMAT), level from LOG_LEVEL.

Context: `bind(replica=..., strategy_id=..., execution_id=...)` stores fields in a context variable,
and every record logged under it carries them (a `[key=value ...]` suffix in text, top-level keys
in JSON). asyncio copies the context into each task when the task is created, so a field bound
inside an execution's task stays on that execution's lines and never leaks to a sibling task.

Secrets: the service's own secrets (the API token, the encryption keys, the database password) are
registered with `redact` at start-up and replaced by `***` in every formatted line, a second line of
defence behind never logging them at all. Credentials of strategies are not registered: they are
decrypted only inside the broker, which never logs them (a test greps a whole run's log for them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.settings import Settings

# Field names in the order the text format shows them.
CONTEXT_FIELDS = ("replica", "strategy_id", "execution_id")

# Never mutated in place: each bind sets a new mapping, so a task's copy of the context stays its own.
_context: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))
_secrets: set[str] = set()


def bind(**fields: object) -> None:
    """Add fields to the current context (the running task's, under asyncio) for every later line."""
    _context.set({**_context.get(), **{key: str(value) for key, value in fields.items() if value is not None}})


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Fields for the lines logged within the block only."""
    token = _context.set({**_context.get(), **{key: str(value) for key, value in fields.items() if value is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


def redact(*secrets: str | None) -> None:
    """Never let these strings reach a log line (too-short strings are ignored: they would mask words)."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            _secrets.add(secret)


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_context.get())
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context: Mapping[str, str] = getattr(record, "context", {})
        if context:
            ordered = [key for key in CONTEXT_FIELDS if key in context] + sorted(set(context) - set(CONTEXT_FIELDS))
            line += " [" + " ".join(f"{key}={context[key]}" for key in ordered) + "]"
        return _scrub(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(entry, default=str))


def configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request access lines belong to uvicorn's own logger at INFO; keep the driver quiet.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces its plugins on import at INFO; the migration steps themselves stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def redact_settings(settings: Settings) -> None:
    """Register the service's own secrets from its settings (call once the embedded ones are filled in)."""
    for secret in (settings.executor_api_token, settings.jwt_secret):
        redact(secret.get_secret_value() if secret else None)
    if settings.encryption_key is not None:
        # `id:base64key,older_id:older_key`: the key material, wherever a fragment of it might travel.
        for part in settings.encryption_key.get_secret_value().split(","):
            redact(part.strip(), part.partition(":")[2].strip())
    if settings.database_url is not None:
        # Imported here: logging is set up long before (and in processes that never need) a database.
        from reconciler.storage.db import url_password

        with contextlib.suppress(Exception):
            redact(url_password(settings.database_url.get_secret_value()))
