"""Shared fixtures: a real PostgreSQL for every test that needs one.

The suite starts its own embedded server (or uses TEST_DATABASE_URL, an admin URL of an existing
server), migrates one template database once, and clones it per test (`CREATE DATABASE ... TEMPLATE`),
so each test gets committed-row isolation from every other test at the cost of a file copy.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from reconciler.embedded import EmbeddedPostgres
from reconciler.storage.db import libpq_url, sync_url
from reconciler.storage.migrate import migrate


def _with_database(url: str, database: str) -> str:
    return make_url(sync_url(url)).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL of the `postgres` database on a server the suite may create databases on."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        yield sync_url(explicit)
        return
    root = Path(tempfile.mkdtemp(prefix="se-test-pg-"))
    root.chmod(0o711)  # the unprivileged server user (when we are root) must reach its data dir
    server = EmbeddedPostgres(data_dir=root / "cluster", fast_unsafe=True)
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = f"se_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(_with_database(pg_admin_url, name))
    try:
        yield name
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, migrated database of this test's own."""
    name = f"se_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        with psycopg.connect(libpq_url(pg_admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection to the test's database, for asserting on the rows written."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn
