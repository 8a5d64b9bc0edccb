"""Each paper execution records its wallet's value when the run ends.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Two nullable columns: adding them rewrites nothing and takes only a brief lock.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('executions', sa.Column('wallet_value', sa.Numeric(), nullable=True))
    op.add_column('executions', sa.Column('wallet_currency', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('executions', 'wallet_currency')
    op.drop_column('executions', 'wallet_value')
