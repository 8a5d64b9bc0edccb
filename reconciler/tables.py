"""The schema as SQLAlchemy Core tables: the one source `alembic check` compares the migrations against.

Desired state (spec) and actual state (status) live in separate tables, so write ownership reads off
the schema: the API writes `strategies`, `strategy_credentials` and `run_requests`; replicas write
`strategy_status`, `executions`, `replicas` and `orders`. Enumerations are text with CHECK constraints:
they read as words in psql and grow without a type migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TIMESTAMPTZ = TIMESTAMP(timezone=True)
NOW = text("now()")

EXCHANGES = ("paper", "coindcx")
DESIRED_STATES = ("running", "stopped")
STRATEGY_STATUSES = ("pending", "running", "stopped", "error", "deleting", "halted")
TRIGGERS = ("schedule", "manual")
IN_FLIGHT = "running"
TERMINAL_STATUSES = ("succeeded", "failed", "timed_out", "memory_exceeded", "lost", "interrupted")
EXECUTION_STATUSES = (IN_FLIGHT, *TERMINAL_STATUSES)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# --- desired state: written by the API only -----------------------------------------------------

strategies = Table(
    "strategies",
    metadata,
    Column("strategy_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("config", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Risk limits the broker and the replicas enforce ({} for none); see reconciler/risk.py.
    Column("risk", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Set by every explicit `start`: a halt older than this is lifted (a person decided to go on).
    Column("started_at", TIMESTAMPTZ),
    # Seconds between ticks of the fixed-rate schedule.
    Column("execution_interval", Integer, nullable=False),
    Column("exchange", Text, nullable=False, server_default="paper"),
    Column("desired_state", Text, nullable=False, server_default="running"),
    # Bumped on every spec change; replicas report the generation they acted on as observed_generation.
    Column("generation", BigInteger, nullable=False, server_default="1"),
    # A deletion request: replicas stop scheduling, and delete the rows once nothing is in flight.
    Column("delete_requested_at", TIMESTAMPTZ),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    # Written by the replica that brought the status up to this generation, on the spec's row (migration
    # 0010): specs where it differs from `generation` are the partial index a reconcile pass reads.
    Column("reconciled_generation", BigInteger),
    CheckConstraint("execution_interval > 0", name="execution_interval_positive"),
    CheckConstraint(_one_of("exchange", EXCHANGES), name="exchange_known"),
    CheckConstraint(_one_of("desired_state", DESIRED_STATES), name="desired_state_known"),
    CheckConstraint("generation > 0", name="generation_positive"),
    Index(None, "user_id"),
    Index(
        "ix_strategies_unreconciled",
        "updated_at",
        postgresql_where=text(
            "(reconciled_generation IS DISTINCT FROM generation OR delete_requested_at IS NOT NULL) IS TRUE"
        ),
    ),
)

strategy_credentials = Table(
    "strategy_credentials",
    metadata,
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Which ENCRYPTION_KEY sealed `credentials`, so keys can be rotated by re-encrypting.
    Column("key_id", Text, nullable=False),
    # AES-GCM ciphertext of {"api_key", "api_secret"}; never plaintext anywhere in the database.
    Column("credentials", LargeBinary, nullable=False),
    # SHA-256 of the API key (a public identifier the exchange sees in every request, not a secret): an
    # exchange key belongs to one user, and deploy refuses a key another user's strategy holds.
    Column("api_key_digest", Text),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Index("ix_strategy_credentials_api_key_digest", "api_key_digest"),
)

run_requests = Table(
    "run_requests",
    metadata,
    Column("run_request_id", BigInteger, Identity(), primary_key=True),
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("requested_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    # Set by the replica that claimed it, in the same statement that creates the execution.
    Column("claimed_at", TIMESTAMPTZ),
    # The execution that answered the request, written by the statement that inserts it. No foreign
    # key: `executions` is partitioned, and a key to it would make every retention drop scan the
    # dropped day under an exclusive lock (see migration 0008). Claimed requests are pruned on the
    # executions' retention; the API's wait looks the execution up, and reads a pruned one as gone.
    Column("execution_id", UUID(as_uuid=True)),
    # How many run requests (API calls) this row answers: a request made while one of its strategy's is
    # still pending joins that one (the index below) and counts here instead of adding a row.
    Column("request_count", Integer, nullable=False, server_default="1"),
    Index("ix_run_requests_pending", "requested_at", postgresql_where=text("claimed_at IS NULL")),
    Index(None, "strategy_id"),
    # At most one pending request per strategy (migration 0012): one execution answers all of a
    # strategy's pending requests anyway, and without this a halted strategy, whose requests no claim
    # takes, gathered one row per click for as long as the halt lasted, each claim scanning them all.
    # The API's insert names this index in ON CONFLICT, so concurrent requests cannot both insert.
    Index(
        "uq_run_requests_one_pending",
        "strategy_id",
        unique=True,
        postgresql_where=text("claimed_at IS NULL"),
    ),
)

# --- actual state: written by replicas only -----------------------------------------------------

# strategy_status's times and measures, each held to a finite value (see its CHECKs).
STATUS_TIMES = (
    "schedule_anchor_at",
    "next_execution_at",
    "last_execution_at",
    "halted_at",
    "resume_at",
    "created_at",
    "updated_at",
)
STATUS_MEASURES = (
    "avg_execution_time",
    "last_execution_duration",
    "day_start_equity",
    "equity_peak",
    "halt_value",
    "halt_threshold",
)


def _finite(times: tuple[str, ...], measures: tuple[str, ...]) -> list[CheckConstraint]:
    """One named CHECK per column, so a refused write names it. NaN sorts above every number in
    PostgreSQL, so `abs(x) < 'Infinity'` refuses NaN and both infinities in one comparison; NULL passes."""
    return [CheckConstraint(f"isfinite({column})", name=f"{column}_finite") for column in times] + [
        CheckConstraint(f"abs({column}) < 'Infinity'", name=f"{column}_finite") for column in measures
    ]


strategy_status = Table(
    "strategy_status",
    metadata,
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("status_reason", Text),
    Column("observed_generation", BigInteger, nullable=False, server_default="0"),
    # The fixed-rate grid: ticks fall on schedule_anchor_at + k * schedule_interval.
    Column("schedule_anchor_at", TIMESTAMPTZ),
    Column("schedule_interval", Integer),
    Column("next_execution_at", TIMESTAMPTZ),
    # The execution in flight, if any: the one place the in-flight state lives. Claims take only rows
    # where it is NULL (on the locked row itself), and every running execution must be the one named
    # here (the foreign key `fk_executions_in_flight` below), so a strategy never has two in flight.
    Column("running_execution_id", UUID(as_uuid=True)),
    Column("execution_count", BigInteger, nullable=False, server_default="0"),
    Column("successful_executions", BigInteger, nullable=False, server_default="0"),
    Column("failed_executions", BigInteger, nullable=False, server_default="0"),
    # Ticks that fell due while nothing could run them: coalesced into the next run, counted here.
    Column("missed_executions", BigInteger, nullable=False, server_default="0"),
    Column("avg_execution_time", Double),
    Column("last_execution_duration", Double),
    Column("last_execution_at", TIMESTAMPTZ),
    Column("last_error", Text),
    # The strategy's STATE dict, persisted between runs.
    Column("state", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # --- risk: what the guard measured and, while `status = 'halted'`, why it stopped the strategy.
    # Executions in a row that ended other than `succeeded` (reset by a success and by a resume).
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    # The UTC day the daily-loss baseline belongs to, the equity it started from, and the highest
    # equity seen since deploy (or the last resume): drawdown is measured from this peak.
    Column("risk_day", Date),
    Column("day_start_equity", Numeric),
    Column("equity_peak", Numeric),
    Column("halted_at", TIMESTAMPTZ),
    Column("halt_limit", Text),
    Column("halt_value", Numeric),
    Column("halt_threshold", Numeric),
    # When a `pause` halt lifts by itself; NULL for `stop` (a person must start the strategy again).
    Column("resume_at", TIMESTAMPTZ),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    CheckConstraint(_one_of("status", STRATEGY_STATUSES), name="status_known"),
    CheckConstraint("(status = 'halted') = (halted_at IS NOT NULL)", name="halted_iff_halted_at"),
    CheckConstraint("schedule_interval > 0", name="schedule_interval_positive"),
    # Every time and measure here is a finite value (migration 0013): PostgreSQL takes 'infinity' for a
    # timestamp and 'NaN' or 'Infinity' for a number, which the API cannot show (a hand-edited
    # resume_at = 'infinity' made the status, the bot list and the dashboard answer 500). Refused
    # where it is written, with the column's name, instead.
    *_finite(STATUS_TIMES, STATUS_MEASURES),
    # The target of `fk_executions_in_flight` (a foreign key needs a unique key to point at); unique
    # already, since strategy_id is the primary key.
    UniqueConstraint("strategy_id", "running_execution_id"),
    # Exactly the rows a claim may take, in the order it takes them: claims and the next-due lookup
    # walk it from the front and stop, however many strategies are deployed.
    Index(
        "ix_strategy_status_claimable",
        "next_execution_at",
        postgresql_where=text("status = 'running' AND running_execution_id IS NULL"),
    ),
    # Paused strategies in the order they resume: the reconcile pass finds the due ones from the front.
    Index("ix_strategy_status_resume", "resume_at", postgresql_where=text("status = 'halted'")),
)

# Partitioned by day on `scheduled_for` (native RANGE partitioning): retention drops a whole day
# instead of deleting rows. The partitions are not in this module: replicas create them ahead and drop
# them past the retention (`reconciler.storage.statements.partitions`); `executions_default` catches a
# row no daily partition covers, so no insert can fail for want of one. Every unique key carries the
# partition key, as PostgreSQL requires: the primary key is (execution_id, scheduled_for), and the
# statements that find an execution by id on the hot path carry its scheduled_for, so each touches
# one partition. Migration 0008 says why the design is this one.
executions = Table(
    "executions",
    metadata,
    Column("execution_id", UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()")),
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("trigger", Text, nullable=False),
    # The tick this execution is for (a manual run: when the oldest request it answers was made), and
    # the partition key.
    Column("scheduled_for", TIMESTAMPTZ, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("status", Text, nullable=False, server_default=IN_FLIGHT),
    Column("replica_id", Text, nullable=False),
    Column("claimed_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("started_at", TIMESTAMPTZ),
    Column("finished_at", TIMESTAMPTZ),
    # Extended by the owning replica's heartbeat; once it passes, any replica may mark the row lost.
    Column("lease_expires_at", TIMESTAMPTZ),
    # The fencing token this execution was claimed under (its replica's epoch then); marking it lost
    # draws a new one. Every effect of the execution is recorded only under the token it holds.
    Column("fencing_token", BigInteger, nullable=False, server_default="0"),
    Column("duration", Double),
    Column("output", Text),
    Column("output_truncated", Boolean, nullable=False, server_default=text("false")),
    Column("error", Text),
    Column("result", JSONB),
    # A paper strategy's whole wallet (balances and held funds) valued at the feed's prices when
    # the run ended, in `wallet_currency`: the points of its value-over-time chart. NULL otherwise.
    Column("wallet_value", Numeric),
    Column("wallet_currency", Text),
    # The execution's own id while it is in flight, NULL once it ended: what `fk_executions_in_flight`
    # checks, so only running rows are held to it.
    Column(
        "in_flight_id",
        UUID(as_uuid=True),
        # Written as PostgreSQL prints it back, so `alembic check` compares like with like.
        Computed(f"CASE WHEN (status = '{IN_FLIGHT}'::text) THEN execution_id ELSE NULL::uuid END", persisted=True),
    ),
    PrimaryKeyConstraint("execution_id", "scheduled_for"),
    CheckConstraint(_one_of("trigger", TRIGGERS), name="trigger_known"),
    CheckConstraint(_one_of("status", EXECUTION_STATUSES), name="status_known"),
    CheckConstraint(f"(status = '{IN_FLIGHT}') = (finished_at IS NULL)", name="finished_iff_terminal"),
    # Never two in-flight executions of one strategy: a running execution must be the one its strategy's
    # status row names in running_execution_id, and that row names one. (A partial unique index on
    # running rows cannot span partitions without the partition key, which would defeat it.) Checked at
    # the end of each statement, so a claim inserts the execution and sets the pointer in one statement.
    ForeignKeyConstraint(
        ["strategy_id", "in_flight_id"],
        ["strategy_status.strategy_id", "strategy_status.running_execution_id"],
        name="fk_executions_in_flight",
    ),
    # One execution per (strategy, scheduled tick): the partition key is in it, so it spans partitions.
    Index(
        "uq_executions_strategy_tick",
        "strategy_id",
        "scheduled_for",
        unique=True,
        postgresql_where=text("trigger = 'schedule'"),
    ),
    # What the foreign key's check looks up when a status row's pointer changes (one tiny index per
    # partition: running rows only).
    Index("ix_executions_in_flight", "strategy_id", "in_flight_id", postgresql_where=text("in_flight_id IS NOT NULL")),
    Index("ix_executions_strategy_recent", "strategy_id", text("scheduled_for DESC")),
    Index("ix_executions_lease", "lease_expires_at", postgresql_where=text("status = 'running'")),
    postgresql_partition_by="RANGE (scheduled_for)",
)

replicas = Table(
    "replicas",
    metadata,
    Column("replica_id", Text, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("version", Text, nullable=False),
    # Which sandbox layers are active on this replica's host ({"seccomp": true, ...}).
    Column("sandbox_layers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("started_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("heartbeat_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("lease_expires_at", TIMESTAMPTZ, nullable=False),
    Column("stopping", Boolean, nullable=False, server_default=text("false")),
    # Drawn from `fencing_epochs` at each (re)registration: executions claimed under an older epoch
    # are fenced off, whatever the replica believes.
    Column("epoch", BigInteger, nullable=False, server_default="0"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The execution that made the request. No foreign key (`executions` is partitioned; see migration
    # 0008): the fenced insert writes it only while that execution exists, runs and is this replica's,
    # checked in the statement itself. The audit trail outlives the executions' retention: an order
    # whose execution's day was dropped keeps the id, as a log line would.
    Column("execution_id", UUID(as_uuid=True)),
    Column("exchange", Text, nullable=False),
    Column("client_order_id", Text, nullable=False),
    Column("exchange_order_id", Text),
    # NULL in these four only for a request the broker refused as malformed (a side that is not 'buy' or
    # 'sell', a quantity that is not a number it accepts): `request` holds what the strategy passed.
    Column("market", Text),
    Column("side", Text),
    Column("order_type", Text),
    Column("total_quantity", Numeric),
    Column("price_per_unit", Numeric),
    # The exchange's status for an accepted order; 'refused' when the broker's limits refused it,
    # 'error' when the exchange rejected the request or could not be reached.
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("request", JSONB, nullable=False),
    Column("response", JSONB),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    CheckConstraint(_one_of("exchange", EXCHANGES), name="exchange_known"),
    CheckConstraint(_one_of("side", ("buy", "sell")), name="side_known"),
    UniqueConstraint("strategy_id", "client_order_id"),
    Index("ix_orders_strategy_recent", "strategy_id", text("created_at DESC")),
    Index(None, "execution_id"),
)

# --- paper exchange -----------------------------------------------------------------------------
# The simulated exchange's own book-keeping, written by replicas only (the broker of a paper
# strategy). Amounts are NUMERIC so balances add up exactly; `orders` above stays the audit trail of
# what the strategy asked for, these tables are the paper exchange's side of it.

PAPER_ORDER_STATUSES = ("open", "partially_filled", "filled", "cancelled", "rejected")

paper_balances = Table(
    "paper_balances",
    metadata,
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("currency", Text, primary_key=True),
    # As CoinDCX reports it: `balance` is available, `locked_balance` is held by open orders.
    Column("balance", Numeric, nullable=False),
    Column("locked_balance", Numeric, nullable=False, server_default="0"),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    CheckConstraint("balance >= 0", name="balance_non_negative"),
    CheckConstraint("locked_balance >= 0", name="locked_balance_non_negative"),
)

paper_orders = Table(
    "paper_orders",
    metadata,
    # The paper exchange's order id, the `id` a strategy sees.
    Column("paper_order_id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column(
        "strategy_id",
        Text,
        ForeignKey("strategies.strategy_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("client_order_id", Text, nullable=False),
    Column("market", Text, nullable=False),
    Column("side", Text, nullable=False),
    Column("order_type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("price_per_unit", Numeric),
    Column("total_quantity", Numeric, nullable=False),
    Column("remaining_quantity", Numeric, nullable=False),
    Column("avg_price", Numeric, nullable=False, server_default="0"),
    Column("fee_amount", Numeric, nullable=False, server_default="0"),
    # What an open order holds (quote for buys, base for sells), released on fill or cancel.
    Column("locked_currency", Text, nullable=False),
    Column("locked_amount", Numeric, nullable=False, server_default="0"),
    # Limit orders fill when the price crosses; this is how far along the price path they were checked.
    Column("checked_until", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("updated_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    CheckConstraint(_one_of("side", ("buy", "sell")), name="side_known"),
    CheckConstraint(_one_of("order_type", ("market_order", "limit_order")), name="order_type_known"),
    CheckConstraint(_one_of("status", PAPER_ORDER_STATUSES), name="status_known"),
    CheckConstraint("total_quantity > 0", name="total_quantity_positive"),
    CheckConstraint("remaining_quantity >= 0", name="remaining_quantity_non_negative"),
    UniqueConstraint("strategy_id", "client_order_id"),
    Index(
        "ix_paper_orders_open",
        "strategy_id",
        "market",
        postgresql_where=text("status IN ('open', 'partially_filled')"),
    ),
    Index("ix_paper_orders_strategy_recent", "strategy_id", text("created_at DESC")),
)


# --- risk and alerts ----------------------------------------------------------------------------
# Written by the API (webhooks, which are desired state) and by replicas (deliveries, attempts).

ALERT_EVENTS = (
    "halted",
    "resumed",
    "consecutive_failures",
    "order_filled",
    "order_refused",
    "execution_lost",
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("user_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),
    # The HMAC key, sealed like exchange credentials (AES-GCM, bound to this row); never returned.
    Column("key_id", Text, nullable=False),
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    CheckConstraint("events <@ ARRAY[" + ", ".join(repr(e) for e in ALERT_EVENTS) + "]::text[]", name="events_known"),
    Index(None, "user_id"),
)

# The outbox: a row per (event, webhook), inserted in the transaction that made the event happen, so
# an event is never lost between "it happened" and "it was sent". `delivery_id` is the stable event
# id every attempt carries: delivery is at-least-once, and a receiver deduplicates on it.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("delivery_id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("webhook_id", UUID(as_uuid=True), ForeignKey("webhooks.webhook_id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Text, nullable=False),
    # No foreign key: the word that a strategy was halted outlives the strategy's deletion.
    Column("strategy_id", Text),
    Column("event", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    # Held by the replica sending it until then; a replica that dies mid-send lets it expire, and
    # another sends it again (same delivery_id).
    Column("lease_expires_at", TIMESTAMPTZ),
    Column("delivered_at", TIMESTAMPTZ),
    # Set when the retries ran out; the attempts say why.
    Column("abandoned_at", TIMESTAMPTZ),
    Column("last_error", Text),
    CheckConstraint(_one_of("event", ALERT_EVENTS), name="event_known"),
    Index(
        "ix_alert_deliveries_pending",
        "next_attempt_at",
        postgresql_where=text("delivered_at IS NULL AND abandoned_at IS NULL"),
    ),
    Index("ix_alert_deliveries_webhook_id_created_at", "webhook_id", text("created_at DESC")),
)

alert_attempts = Table(
    "alert_attempts",
    metadata,
    Column("attempt_id", BigInteger, Identity(), primary_key=True),
    Column(
        "delivery_id",
        UUID(as_uuid=True),
        ForeignKey("alert_deliveries.delivery_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("replica_id", Text, nullable=False),
    # Written when the attempt starts (before the request is sent), finished when its answer is known:
    # an attempt whose replica died mid-send stays on record with finished_at NULL.
    Column("started_at", TIMESTAMPTZ, nullable=False, server_default=NOW),
    Column("finished_at", TIMESTAMPTZ),
    Column("status_code", Integer),
    Column("error", Text),
    Index(None, "delivery_id"),
)
