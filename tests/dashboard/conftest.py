"""The dashboard's tests use the API tests' app builder over the test's own database."""

from __future__ import annotations

from tests.api.conftest import build_client  # noqa: F401 - the fixture, re-exported
