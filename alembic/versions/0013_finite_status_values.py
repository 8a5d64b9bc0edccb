"""strategy_status holds only finite times and measures.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28

PostgreSQL takes 'infinity' and '-infinity' for a timestamp and 'NaN', 'Infinity' and '-Infinity' for
a numeric or double, and operators edit `strategy_status` with plain SQL. None of these values can be
shown by the API (Python's datetime has no infinity; JSON has no NaN): a hand-edited
`resume_at = 'infinity'` ("pause it for ever") made the strategy's status, its owner's whole bot list
and the dashboard answer 500, and `halted_at = '-infinity'` failed every reconcile pass of every
replica, once a second, until the row was fixed (a hostile-tenant session, acting as a careless
operator). Now each such column has a CHECK named after it (`ck_strategy_status_<column>_finite`), so
the write is refused where it is made, saying which column; NULL still passes.

Rows that already hold such values are repaired first, as the service would read their intent:
a `resume_at` at +infinity becomes NULL (a halt that does not end by itself: what NULL means there),
any other infinite time becomes now() (the row is otherwise kept as it is), and a non-finite measure
becomes NULL (unknown). The table is locked against writes for the repair and the checks (reads go
on): one row per strategy, validated in one pass.

Downgrade drops the checks; repaired values stay repaired.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in reconciler.tables (a migration keeps its own copy: the module may change after it).
TIMES = (
    "schedule_anchor_at",
    "next_execution_at",
    "last_execution_at",
    "halted_at",
    "resume_at",
    "created_at",
    "updated_at",
)
MEASURES = (
    "avg_execution_time",
    "last_execution_duration",
    "day_start_equity",
    "equity_peak",
    "halt_value",
    "halt_threshold",
)


def upgrade() -> None:
    op.execute("LOCK TABLE strategy_status IN SHARE ROW EXCLUSIVE MODE")
    op.execute("UPDATE strategy_status SET resume_at = NULL WHERE resume_at = 'infinity'")
    for column in TIMES:
        op.execute(f"UPDATE strategy_status SET {column} = now() WHERE NOT isfinite({column})")
    for column in MEASURES:
        op.execute(f"UPDATE strategy_status SET {column} = NULL WHERE NOT abs({column}) < 'Infinity'")
    for column in TIMES:
        op.create_check_constraint(f"{column}_finite", "strategy_status", f"isfinite({column})")
    for column in MEASURES:
        op.create_check_constraint(f"{column}_finite", "strategy_status", f"abs({column}) < 'Infinity'")


def downgrade() -> None:
    for column in (*TIMES, *MEASURES):
        op.drop_constraint(f"{column}_finite", "strategy_status", type_="check")
