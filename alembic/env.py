"""Alembic environment: migrations run on a connection handed in by the service, or on DATABASE_URL."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, pool

from alembic import context
from reconciler.storage.db import sync_url
from reconciler.tables import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_server_default=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("alembic: set DATABASE_URL, or run `strategy-executor migrate`")
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_server_default=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("alembic: offline mode is not supported; run against a database")
run_migrations_online()
