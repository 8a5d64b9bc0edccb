"""Secrets an embedded installation generates on first start and keeps in its data directory."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def load_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The secret stored at `path`, creating it (mode 0600) if missing; and whether it was created."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value, True


def new_api_token() -> str:
    return secrets.token_urlsafe(32)
