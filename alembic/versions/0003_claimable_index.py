"""Claims walk an index of exactly the claimable status rows, in due order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

The claim statement used to join every strategy to its status and sort them when the planner had no
statistics yet (freshly deployed strategies): 13 ms per claim at 3,000 strategies. Walking this
partial index from the front stops after a few rows, whatever the statistics say.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_strategy_status_due", table_name="strategy_status")
    op.create_index(
        "ix_strategy_status_claimable",
        "strategy_status",
        ["next_execution_at"],
        unique=False,
        postgresql_where=sa.text("status = 'running' AND running_execution_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_strategy_status_claimable", table_name="strategy_status")
    op.create_index(
        "ix_strategy_status_due",
        "strategy_status",
        ["next_execution_at"],
        unique=False,
        postgresql_where=sa.text("next_execution_at IS NOT NULL"),
    )
