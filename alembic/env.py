"""Alembic environment: migrations run on a connection handed in by the service, or on DATABASE_URL."""

from __future__ import annotations

import os
import re

from sqlalchemy import create_engine, pool

from alembic import context
from reconciler.storage.db import sync_url
from reconciler.tables import metadata

config = context.config
target_metadata = metadata

# The daily partitions of `executions` (and its default partition) are made and dropped by the replicas
# (reconciler.storage.statements.partitions), not by migrations: they are not drift.
_PARTITION = re.compile(r"^executions_(default|\d{8})$")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and _PARTITION.match(name))


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_server_default=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("alembic: set DATABASE_URL, or run `strategy-executor migrate`")
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_server_default=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("alembic: offline mode is not supported; run against a database")
run_migrations_online()
