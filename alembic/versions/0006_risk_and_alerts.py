"""Risk limits, halts, and webhook alerts with a delivery outbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

New nullable columns and new tables only: nothing is rewritten, and each ALTER takes a brief lock.
The status CHECK gains 'halted'.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('pending', 'running', 'stopped', 'error', 'deleting')"
_NEW_STATUSES = "status IN ('pending', 'running', 'stopped', 'error', 'deleting', 'halted')"
_EVENTS = "'halted', 'resumed', 'consecutive_failures', 'order_filled', 'order_refused', 'execution_lost'"


def upgrade() -> None:
    op.add_column(
        "strategies", sa.Column("risk", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False)
    )
    op.add_column("strategies", sa.Column("started_at", postgresql.TIMESTAMP(timezone=True), nullable=True))

    op.add_column(
        "strategy_status", sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("strategy_status", sa.Column("risk_day", sa.Date(), nullable=True))
    op.add_column("strategy_status", sa.Column("day_start_equity", sa.Numeric(), nullable=True))
    op.add_column("strategy_status", sa.Column("equity_peak", sa.Numeric(), nullable=True))
    op.add_column("strategy_status", sa.Column("halted_at", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column("strategy_status", sa.Column("halt_limit", sa.Text(), nullable=True))
    op.add_column("strategy_status", sa.Column("halt_value", sa.Numeric(), nullable=True))
    op.add_column("strategy_status", sa.Column("halt_threshold", sa.Numeric(), nullable=True))
    op.add_column("strategy_status", sa.Column("resume_at", postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_strategy_status_status_known"), "strategy_status", type_="check")
    op.create_check_constraint(op.f("ck_strategy_status_status_known"), "strategy_status", _NEW_STATUSES)
    op.create_check_constraint(
        op.f("ck_strategy_status_halted_iff_halted_at"),
        "strategy_status",
        "(status = 'halted') = (halted_at IS NOT NULL)",
    )
    op.create_index(
        "ix_strategy_status_resume",
        "strategy_status",
        ["resume_at"],
        unique=False,
        postgresql_where=sa.text("status = 'halted'"),
    )

    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"events <@ ARRAY[{_EVENTS}]::text[]", name=op.f("ck_webhooks_events_known")),
        sa.PrimaryKeyConstraint("webhook_id", name="pk_webhooks"),
    )
    op.create_index("ix_webhooks_user_id", "webhooks", ["user_id"], unique=False)

    op.create_table(
        "alert_deliveries",
        sa.Column("delivery_id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("webhook_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("strategy_id", sa.Text(), nullable=True),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("lease_expires_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("delivered_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("abandoned_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(f"event IN ({_EVENTS})", name=op.f("ck_alert_deliveries_event_known")),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.webhook_id"], name="fk_alert_deliveries_webhook_id_webhooks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_alert_deliveries"),
    )
    op.create_index(
        "ix_alert_deliveries_pending",
        "alert_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL AND abandoned_at IS NULL"),
    )
    op.create_index(
        "ix_alert_deliveries_webhook_id_created_at",
        "alert_deliveries",
        ["webhook_id", sa.text("created_at DESC")],
        unique=False,
    )

    op.create_table(
        "alert_attempts",
        sa.Column("attempt_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("delivery_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("replica_id", sa.Text(), nullable=False),
        sa.Column("started_at", postgresql.TIMESTAMP(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["alert_deliveries.delivery_id"],
            name="fk_alert_attempts_delivery_id_alert_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_alert_attempts"),
    )
    op.create_index("ix_alert_attempts_delivery_id", "alert_attempts", ["delivery_id"], unique=False)


def downgrade() -> None:
    op.drop_table("alert_attempts")
    op.drop_table("alert_deliveries")
    op.drop_table("webhooks")
    op.drop_index("ix_strategy_status_resume", table_name="strategy_status")
    op.drop_constraint(op.f("ck_strategy_status_halted_iff_halted_at"), "strategy_status", type_="check")
    op.execute("UPDATE strategy_status SET status = 'stopped' WHERE status = 'halted'")
    op.drop_constraint(op.f("ck_strategy_status_status_known"), "strategy_status", type_="check")
    op.create_check_constraint(op.f("ck_strategy_status_status_known"), "strategy_status", _OLD_STATUSES)
    for column in (
        "resume_at",
        "halt_threshold",
        "halt_value",
        "halt_limit",
        "halted_at",
        "equity_peak",
        "day_start_equity",
        "risk_day",
        "consecutive_failures",
    ):
        op.drop_column("strategy_status", column)
    op.drop_column("strategies", "started_at")
    op.drop_column("strategies", "risk")
