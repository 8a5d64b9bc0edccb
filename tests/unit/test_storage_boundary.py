"""One owner for PostgreSQL: outside `reconciler/storage/`, no module of the service imports a driver.

The API, the loop, the exchange layer and the alert sender call store methods and receive plain values;
only the storage layer imports SQLAlchemy or psycopg. Allowed besides: `reconciler/tables.py`, the
schema metadata that `alembic check` compares with the database (the alembic environment lives
outside `api/` and `reconciler/`). The walk reads source, so an import inside a function or under
TYPE_CHECKING counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ("sqlalchemy", "psycopg", "psycopg2", "psycopg_pool", "asyncpg")
ALLOWED = {Path("reconciler/tables.py")}
STORAGE = Path("reconciler/storage")


def driver_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import of a driver package (or one of its submodules) in `source`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in DRIVERS]
    return found


def service_modules() -> list[Path]:
    modules = []
    for package in ("api", "reconciler"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in ALLOWED or relative.is_relative_to(STORAGE):
                continue
            modules.append(relative)
    return modules


def test_the_walk_sees_the_modules_that_once_ran_sql() -> None:
    modules = set(service_modules())
    for name in (
        "reconciler/exchange/broker.py",
        "reconciler/exchange/paper.py",
        "reconciler/exchange/risk_guard.py",
        "reconciler/alerts.py",
        "reconciler/loop.py",
        "reconciler/embedded.py",
        "reconciler/logging_setup.py",
        "api/routes.py",
    ):
        assert Path(name) in modules


def test_the_check_finds_every_form_of_import() -> None:
    source = """
import psycopg
import os, sqlalchemy.ext.asyncio as sa
from sqlalchemy.engine import make_url
from psycopg import sql
from reconciler.storage import db
from . import sqlalchemy_like
def later():
    import psycopg_pool
"""
    assert [module for _, module in driver_imports(source)] == [
        "psycopg",
        "sqlalchemy.ext.asyncio",
        "sqlalchemy.engine",
        "psycopg",
        "psycopg_pool",
    ]


def test_no_module_outside_the_storage_layer_imports_a_driver() -> None:
    offenders = [
        f"{path}:{line}: imports {module}"
        for path in service_modules()
        for line, module in driver_imports((ROOT / path).read_text())
    ]
    assert offenders == [], "only reconciler/storage/ may talk to PostgreSQL:\n" + "\n".join(offenders)
