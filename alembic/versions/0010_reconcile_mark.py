"""strategies.reconciled_generation: the reconcile pass finds the specs it must act on by an index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

Why: a reconcile pass looks for the strategies whose status does not reflect their spec yet (a spec
written since, a deletion requested, a pause whose time has come). That condition compares two
tables (`strategies.generation` against `strategy_status.observed_generation`), which no index can
hold, so every pass joined every strategy to its status row: ~56,000 blocks and 0.5-0.9 s of server
time at a million strategies, once a minute per replica (20-30% of a PostgreSQL core at 20 replicas),
to find the few, usually none, that changed.

Now the replica that reconciles a spec also writes, on the spec's row, the generation it brought the
status up to. A spec whose `reconciled_generation` differs from its `generation` (every write through
the API bumps the generation; a new spec has none), or whose deletion was requested, is in the partial
index `ix_strategies_unreconciled`, which holds only those: a pass reads that index and the halted rows'
partial index, not the table. The condition itself is unchanged and still checked against the status
row, so the mark only narrows where the pass looks; it never decides.

The mark lives on `strategies`, whose every change wakes the replicas (`strategies_notify`): that
trigger now leaves out an update that changes the mark (only a replica writes it, and nothing else with
it), so a replica writing it does not wake every replica for a pass with nothing to do. Every other
update notifies as before, an operator's in psql included.

Existing rows are marked as reconciled where their status already observes their generation, before
the index is built (one pass over the table; a million strategies take seconds).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The condition, and the index's predicate, written as one boolean expression tested IS TRUE: the
# statistics below are then the planner's estimate of it (as a plain OR of two comparisons it guessed
# that nearly every row meets it, and read both tables whole instead of this index).
CONDITION = "(reconciled_generation IS DISTINCT FROM generation OR delete_requested_at IS NOT NULL)"
UNRECONCILED = f"{CONDITION} IS TRUE"


def upgrade() -> None:
    op.add_column("strategies", sa.Column("reconciled_generation", sa.BigInteger(), nullable=True))
    # Replaced before the backfill below, which would otherwise notify once per row.
    op.execute("DROP TRIGGER strategies_notify ON strategies")
    op.execute(
        "CREATE TRIGGER strategies_notify AFTER INSERT ON strategies "
        "FOR EACH ROW EXECUTE FUNCTION notify_desired_state_change()"
    )
    op.execute(
        "CREATE TRIGGER strategies_notify_update AFTER UPDATE ON strategies FOR EACH ROW "
        "WHEN (OLD.reconciled_generation IS NOT DISTINCT FROM NEW.reconciled_generation) "
        "EXECUTE FUNCTION notify_desired_state_change()"
    )
    op.execute(
        """
        UPDATE strategies s SET reconciled_generation = s.generation
        FROM strategy_status st
        WHERE st.strategy_id = s.strategy_id AND st.observed_generation = s.generation
        """
    )
    op.create_index("ix_strategies_unreconciled", "strategies", ["updated_at"], postgresql_where=sa.text(UNRECONCILED))
    op.execute(f"CREATE STATISTICS strategies_unreconciled ON ({CONDITION}) FROM strategies")
    op.execute("ANALYZE strategies")


def downgrade() -> None:
    op.execute("DROP STATISTICS strategies_unreconciled")
    op.drop_index("ix_strategies_unreconciled", table_name="strategies", postgresql_where=sa.text(UNRECONCILED))
    op.execute("DROP TRIGGER strategies_notify_update ON strategies")
    op.execute("DROP TRIGGER strategies_notify ON strategies")
    op.execute(
        "CREATE TRIGGER strategies_notify AFTER INSERT OR UPDATE ON strategies "
        "FOR EACH ROW EXECUTE FUNCTION notify_desired_state_change()"
    )
    op.drop_column("strategies", "reconciled_generation")
