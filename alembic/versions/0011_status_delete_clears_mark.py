"""A status row deleted by hand clears its spec's reconcile mark, so a pass recreates it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28

Why: before 0010 a reconcile pass joined every spec to its status row and found a spec without one
(`st.strategy_id IS NULL`) wherever it was. Since 0010 a pass looks only at the specs the partial
index `ix_strategies_unreconciled` holds, and a spec whose status row an operator deleted in psql
keeps its mark (`reconciled_generation = generation`): it was never scheduled again until its spec
was written. The pass's condition still treats a missing status row as unreconciled; what was missing
was a way into the index.

Now deleting a status row clears the mark on its spec and wakes the replicas, so the next pass (within
a second or so) recreates the status row from the spec, as it does for a new spec. The mark change
itself notifies no one (0010's `strategies_notify_update` leaves it out), so the trigger sends the
notification itself, only when it cleared a mark.

When the spec itself is deleted (a deletion finalized by a replica, or by hand), its status row goes
by the foreign key's cascade: the trigger then finds no spec row to mark and does nothing.

Locks: the trigger runs after the status row is deleted, so it takes the spec row's lock while holding
the status row's, the opposite of the reconcile pass's order (spec, then status). A hand delete that
races a pass on the same strategy can deadlock with it; PostgreSQL aborts one after `deadlock_timeout`,
and either the pass tries again a second later or the operator's DELETE reports the deadlock and
changes nothing. Nothing the service itself runs deletes status rows, so only an operator meets it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION strategy_status_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE strategies SET reconciled_generation = NULL
            WHERE strategy_id = OLD.strategy_id AND reconciled_generation IS NOT NULL;
            IF FOUND THEN
                PERFORM pg_notify('strategy_executor', OLD.strategy_id);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER strategy_status_deleted AFTER DELETE ON strategy_status "
        "FOR EACH ROW EXECUTE FUNCTION strategy_status_deleted()"
    )
    # Specs whose status row is already gone (deleted by hand since 0010): into the index now.
    op.execute(
        """
        UPDATE strategies s SET reconciled_generation = NULL
        WHERE s.reconciled_generation IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM strategy_status st WHERE st.strategy_id = s.strategy_id)
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER strategy_status_deleted ON strategy_status")
    op.execute("DROP FUNCTION strategy_status_deleted()")
