"""strategy_status is vacuumed after a fixed number of changed rows, not a fraction of the table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27

Why: every claim and every outcome updates a strategy's status row and moves it in or out of the
partial index `ix_strategy_status_claimable`, which the claim walks from its front (due rows, in due
order). Each claim leaves the entry it consumed dead at that front, and dead entries go only when the
table is vacuumed. Autovacuum's default trigger is a fraction of the table (20%; 5% where tuned):
at 1,000,000 strategies that is 50,000-200,000 dead rows, so the claim walked hundreds of pages of
dead entries before its first live one, while at 10,000 strategies the same demand triggered a vacuum
every few hundred rows (`tests/benchmarks/bench_scale.py`: ~2.5x the buffers per claim at 1M). With a
fixed threshold the dead front is bounded by the demand between two autovacuum visits, whatever the
number of strategies; a cost delay of 0 lets the vacuum finish before the next front has built up.

`vacuum_index_cleanup = on`: by default a vacuum skips the indexes when fewer than 2% of the table's
pages hold dead rows. Claims run in due order, and rows due together sit together in the heap, so at
a million strategies a vacuum's dead rows covered a few hundred of ~40,000 pages: every vacuum skipped
the indexes and the dead front stayed (the claim still read 1.6x the blocks at 1M as at 10k). Each
vacuum now also scans the table's indexes: a few tens of MB at a million strategies.

The vacuum itself scans only the pages changed since the last one (the visibility map) and the table's
indexes. A table this size changes in place: the storage parameters are catalog entries, taken under a
brief SHARE UPDATE EXCLUSIVE lock, and nothing is rewritten.

How often autovacuum visits a database is the server's `autovacuum_naptime` (default 1 minute); a
deployment at hundreds of executions a second sets it to 10 s or less (see the README, Operations).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 2,000 rows: ~1,000 executions (a claim and an outcome each change the row), a few index pages of dead
# entries. At low demand a vacuum of a small table costs next to nothing; at high demand this keeps the
# table vacuumed at every autovacuum visit.
STATUS_VACUUM = (
    "autovacuum_vacuum_scale_factor = 0, "
    "autovacuum_vacuum_threshold = 2000, "
    "autovacuum_vacuum_cost_delay = 0, "
    "vacuum_index_cleanup = on"
)


def upgrade() -> None:
    op.execute(f"ALTER TABLE strategy_status SET ({STATUS_VACUUM})")


def downgrade() -> None:
    op.execute(
        "ALTER TABLE strategy_status RESET "
        "(autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay, "
        "vacuum_index_cleanup)"
    )
