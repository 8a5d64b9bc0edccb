"""Executions partitioned by day: retention drops a whole day instead of deleting rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

At the target load (3,333 executions a second, 7 days kept) `executions` holds ~2 billion rows, and
pruning them with batched DELETEs writes as much again (every deleted row is a WAL record, dead
tuples, index entries to vacuum). Partitioned by RANGE on `scheduled_for`, one partition a UTC day
(`executions_YYYYMMDD`), retention is a `DROP TABLE` of a day: a file unlinked, whatever its size.

Why the partition key is `scheduled_for`, and how the invariants survive. PostgreSQL enforces a
unique index on a partitioned table only when it contains the partition key (each partition checks
its own rows):
- one execution per (strategy, scheduled tick): `uq_executions_strategy_tick` is (strategy_id,
  scheduled_for), which contains the key: it stays a partial unique index, exactly as before. This
  is what chose the key: `claimed_at` would be an easier key (always now()), but no unique key
  would then span a tick.
- never two in flight: a unique index on (strategy_id) WHERE status = 'running' cannot span
  partitions (adding the key would allow one in flight per day). The in-flight state now lives on
  `strategy_status.running_execution_id`, which the claims already set in the claiming statement and
  test (claiming only where it is NULL, on the locked row): a generated column
  `executions.in_flight_id` (the execution's id while it runs, NULL after) and the foreign key
  `fk_executions_in_flight` (strategy_id, in_flight_id) -> strategy_status (strategy_id,
  running_execution_id) make every running execution the one its strategy's status row names, and a
  row names one. Checked at the end of each statement, so a claim inserts the execution and points
  at it in one statement, and an outcome ends it and clears the pointer in one.
- the primary key is (execution_id, scheduled_for); the replica's statements that find an execution
  by id (outcomes, the orders' fencing check, lease renewal, lost-marking) carry its scheduled_for,
  so each touches one partition.

Foreign keys that referenced `executions` (orders.execution_id, run_requests.execution_id, ON DELETE
SET NULL) are dropped, not made composite. A key to a partitioned table must name the partition key,
and PostgreSQL then refuses to drop or detach a day while any row references it, checking with a
join that scans the whole day under ACCESS EXCLUSIVE on `executions` (and on the referencing
table): measured, ~170 ms for a 2-million-row day; a day at the target load holds ~288 million.
Integrity is kept where it is written: an order names its execution only through the fenced insert,
which checks in the same statement (FOR SHARE) that the execution exists, runs and is the replica's;
a run request names the execution inserted by the same claiming statement. Neither is ever rewritten.
After retention drops the day, an order keeps the id of the execution that made it (the audit trail
of orders has no retention; before, the id became NULL), and a claimed run request is pruned on the
same retention.

`orders` stays one table: it grows by order request, not by execution (most runs place none; at most
`max_orders_per_execution` each), has no retention (it is the record of what was asked of an
exchange), and its unique key (strategy_id, client_order_id), the guard against placing an order
twice, has no time in it: partitioned by time, that key could only hold within a day.

`executions_default` catches any row no day covers (a run request claimed long after it was made
carries the request's time; a day not created for want of a replica), so no execution ever fails to
insert for want of a partition. Its cost: attaching a day scans the default (ACCESS EXCLUSIVE on it)
for rows of that day and fails if there are any. Replicas create days a week ahead, so the default
only ever receives past rows, and stays empty in normal running; a day whose rows already sit in
the default is left to it. (It also rules out DETACH ... CONCURRENTLY, hence a short lock_timeout
on the drop.)

The data is kept: the rows are copied into the new table, a partition for each day they fall on (the
last 35 days; older rows go to the default, and retention deletes them), plus today and the week
ahead. The pointer becomes the truth first: a running execution's strategy points at it, and a
pointer to an execution that is not running is cleared. Downgrade copies the rows back into one
table and restores the old keys (an order or request naming an execution no longer kept gets NULL,
as ON DELETE SET NULL would have done).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept in step with reconciler.storage.statements.partitions (a migration does not import the code it
# outlives).
DAYS_AHEAD = 7
DAYS_BACK = 35

_COLUMNS = (
    "execution_id, strategy_id, trigger, scheduled_for, generation, status, replica_id, claimed_at, started_at, "
    "finished_at, lease_expires_at, fencing_token, duration, output, output_truncated, error, result, "
    "wallet_value, wallet_currency"
)
_STATUSES = "status IN ('running', 'succeeded', 'failed', 'timed_out', 'memory_exceeded', 'lost', 'interrupted')"
TIMESTAMPTZ = postgresql.TIMESTAMP(timezone=True)


def _columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("execution_id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("scheduled_for", TIMESTAMPTZ, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("claimed_at", TIMESTAMPTZ, server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", TIMESTAMPTZ, nullable=True),
        sa.Column("finished_at", TIMESTAMPTZ, nullable=True),
        sa.Column("lease_expires_at", TIMESTAMPTZ, nullable=True),
        sa.Column("fencing_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("output_truncated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        sa.Column("wallet_value", sa.Numeric(), nullable=True),
        sa.Column("wallet_currency", sa.Text(), nullable=True),
    ]


def _checks() -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint("(status = 'running') = (finished_at IS NULL)", name=op.f("ck_executions_finished_iff_terminal")),
        sa.CheckConstraint(_STATUSES, name=op.f("ck_executions_status_known")),
        sa.CheckConstraint("trigger IN ('schedule', 'manual')", name=op.f("ck_executions_trigger_known")),
        sa.ForeignKeyConstraint(
            ["strategy_id"],
            ["strategies.strategy_id"],
            name="fk_executions_strategy_id_strategies",
            ondelete="CASCADE",
        ),
    ]


def _set_aside_old_table() -> None:
    """Rename the old table and its index-backed names, which are global in the schema."""
    op.rename_table("executions", "executions_0007")
    op.execute("ALTER TABLE executions_0007 RENAME CONSTRAINT pk_executions TO pk_executions_0007")
    for index in (
        "ix_executions_finished",
        "ix_executions_lease",
        "ix_executions_strategy_recent",
        "uq_executions_one_in_flight",
        "uq_executions_strategy_tick",
    ):
        op.execute(f"DROP INDEX IF EXISTS {index}")


def upgrade() -> None:
    op.drop_constraint("fk_orders_execution_id_executions", "orders", type_="foreignkey")
    op.drop_constraint("fk_run_requests_execution_id_executions", "run_requests", type_="foreignkey")
    _set_aside_old_table()

    # The pointer becomes the truth: each running execution (at most one per strategy, which the old
    # unique index guaranteed) is named by its strategy's status row, and nothing else is.
    op.execute(
        """
        INSERT INTO strategy_status (strategy_id, status)
        SELECT DISTINCT e.strategy_id, 'pending' FROM executions_0007 e WHERE e.status = 'running'
        ON CONFLICT (strategy_id) DO NOTHING
        """
    )
    op.execute(
        """
        UPDATE strategy_status st SET running_execution_id = NULL
        WHERE running_execution_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM executions_0007 e
                          WHERE e.execution_id = st.running_execution_id AND e.status = 'running')
        """
    )
    op.execute(
        """
        UPDATE strategy_status st SET running_execution_id = e.execution_id
        FROM executions_0007 e
        WHERE e.strategy_id = st.strategy_id AND e.status = 'running'
          AND st.running_execution_id IS DISTINCT FROM e.execution_id
        """
    )
    op.create_unique_constraint(
        "uq_strategy_status_strategy_id_running_execution_id", "strategy_status", ["strategy_id", "running_execution_id"]
    )

    op.create_table(
        "executions",
        *_columns(),
        sa.Column(
            "in_flight_id",
            sa.UUID(),
            sa.Computed("CASE WHEN status = 'running' THEN execution_id END", persisted=True),
            nullable=True,
        ),
        *_checks(),
        sa.ForeignKeyConstraint(
            ["strategy_id", "in_flight_id"],
            ["strategy_status.strategy_id", "strategy_status.running_execution_id"],
            name="fk_executions_in_flight",
        ),
        sa.PrimaryKeyConstraint("execution_id", "scheduled_for", name="pk_executions"),
        postgresql_partition_by="RANGE (scheduled_for)",
    )
    op.create_index(
        "uq_executions_strategy_tick",
        "executions",
        ["strategy_id", "scheduled_for"],
        unique=True,
        postgresql_where=sa.text("trigger = 'schedule'"),
    )
    op.create_index(
        "ix_executions_in_flight",
        "executions",
        ["strategy_id", "in_flight_id"],
        postgresql_where=sa.text("in_flight_id IS NOT NULL"),
    )
    op.create_index("ix_executions_strategy_recent", "executions", ["strategy_id", sa.literal_column("scheduled_for DESC")])
    op.create_index("ix_executions_lease", "executions", ["lease_expires_at"], postgresql_where=sa.text("status = 'running'"))
    op.execute("CREATE TABLE executions_default PARTITION OF executions DEFAULT")

    # A day for each UTC day the rows fall on (recent ones), and from today a week ahead. Created as
    # partitions directly: nothing else uses the new table yet.
    op.execute(
        f"""
        DO $$
        DECLARE
            day date;
        BEGIN
            FOR day IN
                SELECT DISTINCT (scheduled_for AT TIME ZONE 'UTC')::date FROM executions_0007
                WHERE scheduled_for >= (now() AT TIME ZONE 'UTC')::date - {DAYS_BACK}
                  AND scheduled_for < (now() AT TIME ZONE 'UTC')::date
                UNION
                SELECT generate_series(0, {DAYS_AHEAD}) + (now() AT TIME ZONE 'UTC')::date
            LOOP
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF executions FOR VALUES FROM (%L) TO (%L)',
                    'executions_' || to_char(day, 'YYYYMMDD'),
                    day::text || ' 00:00:00+00',
                    (day + 1)::text || ' 00:00:00+00'
                );
            END LOOP;
        END
        $$
        """
    )
    op.execute(f"INSERT INTO executions ({_COLUMNS}) SELECT {_COLUMNS} FROM executions_0007")
    op.drop_table("executions_0007")
    op.execute("ANALYZE executions")


def downgrade() -> None:
    op.rename_table("executions", "executions_0008")
    op.execute("ALTER TABLE executions_0008 RENAME CONSTRAINT pk_executions TO pk_executions_0008")
    for index in (
        "uq_executions_strategy_tick",
        "ix_executions_in_flight",
        "ix_executions_strategy_recent",
        "ix_executions_lease",
    ):
        op.execute(f"DROP INDEX IF EXISTS {index}")
    op.create_table(
        "executions",
        *_columns(),
        *_checks(),
        sa.PrimaryKeyConstraint("execution_id", name="pk_executions"),
    )
    op.execute(f"INSERT INTO executions ({_COLUMNS}) SELECT {_COLUMNS} FROM executions_0008")
    op.drop_table("executions_0008")  # its partitions with it
    op.drop_constraint("uq_strategy_status_strategy_id_running_execution_id", "strategy_status", type_="unique")
    op.create_index(
        "ix_executions_finished", "executions", ["finished_at"], postgresql_where=sa.text("finished_at IS NOT NULL")
    )
    op.create_index("ix_executions_lease", "executions", ["lease_expires_at"], postgresql_where=sa.text("status = 'running'"))
    op.create_index("ix_executions_strategy_recent", "executions", ["strategy_id", sa.literal_column("scheduled_for DESC")])
    op.create_index(
        "uq_executions_one_in_flight", "executions", ["strategy_id"], unique=True, postgresql_where=sa.text("status = 'running'")
    )
    op.create_index(
        "uq_executions_strategy_tick",
        "executions",
        ["strategy_id", "scheduled_for"],
        unique=True,
        postgresql_where=sa.text("trigger = 'schedule'"),
    )
    # References to executions no longer kept become NULL, as ON DELETE SET NULL made them.
    for table in ("orders", "run_requests"):
        op.execute(
            f"""
            UPDATE {table} t SET execution_id = NULL
            WHERE t.execution_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.execution_id = t.execution_id)
            """
        )
        op.create_foreign_key(
            f"fk_{table}_execution_id_executions",
            table,
            "executions",
            ["execution_id"],
            ["execution_id"],
            ondelete="SET NULL",
        )
