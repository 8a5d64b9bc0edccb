"""Fixtures for the exchange tests: a fresh real PostgreSQL database per test.

`database_url` is a stand-in with the same name and contract as the shared fixture in
`tests/conftest.py` (a SQLAlchemy URL of a fresh, empty, schema-ready database); once that is merged,
this one can be deleted. Uses TEST_DATABASE_URL (an admin URL) if set, else the local trust server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from reconciler.tables import metadata
from tests.exchange.fake_coindcx import FakeCoinDCX

_LOCAL = "postgresql+psycopg://root@127.0.0.1:5432/test"


def _admin_url() -> str:
    url = make_url(os.environ.get("TEST_DATABASE_URL") or _LOCAL)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def database_url() -> Iterator[str]:
    admin = make_url(_admin_url())
    maintenance = _libpq(admin.set(database="postgres").render_as_string(hide_password=False))
    name = f"se_exchange_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        metadata.create_all(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeCoinDCX]:
    server = FakeCoinDCX().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(fake_server: FakeCoinDCX) -> FakeCoinDCX:
    fake_server.state.reset()
    return fake_server
