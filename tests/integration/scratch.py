"""A database of its own for a migration test: created empty on the test server, migrated to the
revision the test starts from, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from alembic import command
from reconciler.storage.db import libpq_url, sync_url
from reconciler.storage.migrate import alembic_config


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`; its URL. Dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(sync_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def alembic(url: str, direction: str, revision: str) -> None:
    """`alembic upgrade|downgrade REVISION` on `url`, committed."""
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
        connection.commit()
    engine.dispose()
