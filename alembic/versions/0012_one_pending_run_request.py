"""One pending run request per strategy: a request made while another is pending joins it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28

Every `POST /strategies/{id}/execute` (and the tenant API's run, and the dashboard's Run now) inserted
a row, though a claim answers all of a strategy's pending requests with one execution. On a strategy
halted by its risk guard nothing claims them, so they piled up one per click for as long as the halt
lasted, and every claim that had requests to look at grouped them all. Now a partial unique index
holds at most one pending (unclaimed) request per strategy; the API's insert names it in
`ON CONFLICT ... DO UPDATE` and gets the pending row back, which is race-free: of concurrent
requests exactly one inserts, the others count themselves in it. `request_count` is that count.

Existing duplicates are collapsed first, keeping data: for each strategy, the oldest pending request
(the one a claim would order by, and whose id a waiting client may hold) stays, its `request_count`
becomes the number of pending rows it stands for, and the others go. A claim would have marked them
all with the same execution, so nothing runs differently. Claimed requests are left as they are.

The table is locked against writes (SHARE ROW EXCLUSIVE; reads go on) for the collapse and the index
build, so an API of the previous version cannot insert a duplicate in between and fail the build.
It holds the pending requests plus the claimed ones of the retention window: a short lock.

Downgrade drops the index and the count; the collapsed rows are not brought back (they would be
answered by the same one execution as the row that stands for them).
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("LOCK TABLE run_requests IN SHARE ROW EXCLUSIVE MODE")
    op.add_column("run_requests", sa.Column("request_count", sa.Integer(), server_default="1", nullable=False))
    op.execute(
        """
        WITH ranked AS (
            SELECT run_request_id, strategy_id,
                   row_number() OVER (PARTITION BY strategy_id ORDER BY requested_at, run_request_id) AS rank,
                   count(*) OVER (PARTITION BY strategy_id) AS pending
            FROM run_requests
            WHERE claimed_at IS NULL
        ),
        dropped AS (
            DELETE FROM run_requests r
            USING ranked k
            WHERE r.run_request_id = k.run_request_id AND k.rank > 1
        )
        UPDATE run_requests r
        SET request_count = k.pending
        FROM ranked k
        WHERE r.run_request_id = k.run_request_id AND k.rank = 1 AND k.pending > 1
        """
    )
    op.create_index(
        "uq_run_requests_one_pending",
        "run_requests",
        ["strategy_id"],
        unique=True,
        postgresql_where=sa.text("claimed_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_run_requests_one_pending", table_name="run_requests", postgresql_where=sa.text("claimed_at IS NULL")
    )
    op.drop_column("run_requests", "request_count")
