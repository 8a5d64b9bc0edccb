"""Every order request is recorded, malformed ones too; an exchange API key belongs to one user.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

`orders.market`, `side`, `order_type` and `total_quantity` may be NULL for a request the broker
refused because one of them was not a value it accepts (the request as given is in `request`).
`strategy_credentials.api_key_digest` (SHA-256 of the public API key) lets deploy refuse a key that
another user's strategy holds; rows sealed before this revision have none until they are redeployed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NULLABLE = (("market", sa.Text()), ("side", sa.Text()), ("order_type", sa.Text()), ("total_quantity", sa.Numeric()))


def upgrade() -> None:
    for name, type_ in _NULLABLE:
        op.alter_column("orders", name, existing_type=type_, nullable=True)
    op.add_column("strategy_credentials", sa.Column("api_key_digest", sa.Text(), nullable=True))
    op.create_index("ix_strategy_credentials_api_key_digest", "strategy_credentials", ["api_key_digest"])


def downgrade() -> None:
    op.drop_index("ix_strategy_credentials_api_key_digest", table_name="strategy_credentials")
    op.drop_column("strategy_credentials", "api_key_digest")
    op.execute("DELETE FROM orders WHERE market IS NULL OR side IS NULL OR order_type IS NULL OR total_quantity IS NULL")
    for name, type_ in _NULLABLE:
        op.alter_column("orders", name, existing_type=type_, nullable=False)
