"""What the embedded server needs from PostgreSQL before migrations can run: the service's database.

Kept in the storage layer with every other conversation with PostgreSQL; `reconciler.embedded` runs
the server's binaries and calls this once the server answers.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
CREATE_DATABASE = sql.SQL("CREATE DATABASE {}")


def create_database(conninfo: str, name: str) -> None:
    """Create database `name` unless it exists, over `conninfo` (a maintenance database)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute(DATABASE_EXISTS, (name,)).fetchone() is None:
            conn.execute(CREATE_DATABASE.format(sql.Identifier(name)))
