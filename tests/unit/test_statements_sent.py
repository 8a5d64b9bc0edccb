"""The statements as a Wire sends them: short enough for psycopg to keep their parse, and unchanged
but for comments and indentation."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from psycopg import _queries
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from reconciler.storage import statements
from reconciler.storage.db import _driver_sql, compact_sql


def all_statements() -> list[tuple[str, TextClause]]:
    found = []
    for module_info in pkgutil.iter_modules(statements.__path__):
        module = importlib.import_module(f"{statements.__name__}.{module_info.name}")
        for name, value in vars(module).items():
            if isinstance(value, TextClause):
                found.append((f"{module_info.name}.{name}", value))
    return found


def test_every_statement_a_wire_sends_is_short_enough_for_psycopg_to_keep_its_parse() -> None:
    # Longer than this, psycopg parses the placeholders again at every execute (the claim and the
    # outcome batch did, until their comments stopped being sent).
    limit = _queries.MAX_CACHED_STATEMENT_LENGTH
    named = all_statements()
    assert {"replica.CLAIM_SCHEDULED", "replica.COMPLETE_EXECUTIONS"} <= {name for name, _ in named}
    sizes = {name: len(_driver_sql(statement, psycopg_dialect()).encode()) for name, statement in named}
    too_long = {name: size for name, size in sizes.items() if size > limit}
    assert not too_long, f"sent longer than {limit} bytes: {too_long}"


def test_comments_indentation_and_blank_lines_go_and_nothing_else() -> None:
    sql = """
        SELECT a,  -- the first
               'x -- not a comment' AS b,   -- it's a comment, apostrophe and all

        -- a whole line of comment
               "odd--name" AS c, 'it''s' AS d
        FROM t
    """
    assert compact_sql(sql) == "SELECT a,\n'x -- not a comment' AS b,\n\"odd--name\" AS c, 'it''s' AS d\nFROM t"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'a literal\n   over two lines' -- kept as written\n",
        "SELECT $$ -- in a dollar-quoted body $$\n   FROM t\n",
        "SELECT E'\\'--\\'' AS a\n   FROM t -- kept\n",
    ],
    ids=["literal over lines", "dollar quoting", "backslash escape"],
)
def test_what_it_cannot_read_safely_is_sent_as_written(sql: str) -> None:
    assert compact_sql(sql) == sql
