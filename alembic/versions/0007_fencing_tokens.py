"""Fencing tokens: every effect of an execution is written only under the token it was claimed with.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

`replicas.epoch` is drawn from `fencing_epochs` each time a replica registers (or re-registers after
it was presumed dead); a claim stamps it on the execution as `executions.fencing_token`, and marking
an execution lost draws a new one. Statements that record an effect (an order, the outcome, STATE)
check the token, the owner, the status and the lease in the statement itself.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE fencing_epochs")
    op.add_column("replicas", sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("executions", sa.Column("fencing_token", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("executions", "fencing_token")
    op.drop_column("replicas", "epoch")
    op.execute("DROP SEQUENCE fencing_epochs")
