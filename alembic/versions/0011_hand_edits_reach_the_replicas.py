"""An operator's hand edits in psql reach the replicas: a spec edited without its generation, a status
row deleted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28

Replicas act on a spec when its generation differs from what its status observed (and, since 0010,
from the mark `reconciled_generation`). The API bumps the generation with every write; an operator's
UPDATE in psql does not, so a hand edit of `desired_state` or `execution_interval` woke the replicas
(the notify trigger fires on every update) and then was never acted on: a status `running` for a
spec `stopped`, forever, its overdue row at the front of the claimable index where claims skipped it
over and over. Now a BEFORE UPDATE trigger bumps the generation (and `updated_at`, as the API does)
when a column the replicas act on changes and the statement left the generation alone. The API's
writes, which bump it themselves, and a replica's mark, which changes none of those columns, pass
through untouched.

A status row deleted by hand: before 0010 a reconcile pass joined every spec to its status row and
found a spec without one (`st.strategy_id IS NULL`) wherever it was. Since 0010 a pass looks only at the specs the partial
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

An execution row deleted by hand while it ran: its strategy's status kept pointing at it
(`running_execution_id`), so nothing of that strategy was claimed again, neither a tick nor a manual
run, and a deletion of the strategy waited for that execution forever. Now deleting an in-flight row
clears the pointer (a row trigger on the partitioned table, fired only for in-flight rows, so the
retention's deletes and partition drops never run it); the replica running it finds its fence gone
and records nothing, as for any execution fenced off.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The columns a replica acts on (the reconcile decision, the code check, and what a claim reads).
_ACTED_ON = (
    "code",
    "config",
    "risk",
    "execution_interval",
    "exchange",
    "desired_state",
    "started_at",
    "delete_requested_at",
)


def upgrade() -> None:
    old = ", ".join(f"OLD.{column}" for column in _ACTED_ON)
    new = ", ".join(f"NEW.{column}" for column in _ACTED_ON)
    op.execute(
        f"""
        CREATE FUNCTION strategies_hand_edit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.generation = OLD.generation AND ROW({new}) IS DISTINCT FROM ROW({old}) THEN
                NEW.generation := OLD.generation + 1;
                NEW.updated_at := now();
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER strategies_hand_edit BEFORE UPDATE ON strategies "
        "FOR EACH ROW EXECUTE FUNCTION strategies_hand_edit()"
    )
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
    op.execute(
        """
        CREATE FUNCTION executions_in_flight_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE strategy_status SET running_execution_id = NULL, updated_at = now()
            WHERE strategy_id = OLD.strategy_id AND running_execution_id = OLD.execution_id;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER executions_in_flight_deleted AFTER DELETE ON executions FOR EACH ROW "
        "WHEN (OLD.in_flight_id IS NOT NULL) EXECUTE FUNCTION executions_in_flight_deleted()"
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
    op.execute("DROP TRIGGER executions_in_flight_deleted ON executions")
    op.execute("DROP FUNCTION executions_in_flight_deleted()")
    op.execute("DROP TRIGGER strategies_hand_edit ON strategies")
    op.execute("DROP FUNCTION strategies_hand_edit()")
    op.execute("DROP TRIGGER strategy_status_deleted ON strategy_status")
    op.execute("DROP FUNCTION strategy_status_deleted()")
