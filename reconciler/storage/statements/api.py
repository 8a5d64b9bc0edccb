"""Every SQL statement the executor API runs, named and kept in one place (procrastinate's queries.sql).

The API writes desired state only (`strategies`, `strategy_credentials`, `run_requests`) and reads
the status tables the replicas write. Times come from the database clock (`now()`), never the app's.

Every statement is PostgreSQL text, so what an operator reads in `pg_stat_statements` or types into
psql is what is written here. A statement whose shape depends on the call (an optional filter, a
keyset cursor) is a small function that joins fixed fragments of this module: only these fragments
ever become SQL text, and every value is a bound parameter. jsonb parameters are sent as JSON text
(`reconciler.storage.jsonb.dumps`) and cast in the statement.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

# The status a client sees: a deletion request wins, then what a replica last wrote, else pending.
_DERIVED_STATUS = "CASE WHEN s.delete_requested_at IS NOT NULL THEN 'deleting' ELSE coalesce(st.status, 'pending') END"

_SUMMARY_COLUMNS = f"""
    s.strategy_id, s.user_id, s.name, s.exchange, s.execution_interval, s.desired_state, s.generation,
    s.delete_requested_at, s.created_at, s.updated_at,
    {_DERIVED_STATUS} AS status,
    EXISTS (SELECT 1 FROM strategy_credentials c WHERE c.strategy_id = s.strategy_id) AS has_credentials"""

_STATUS_COLUMNS = f"""{_SUMMARY_COLUMNS},
    st.status_reason,
    coalesce(st.observed_generation, 0) AS observed_generation,
    st.next_execution_at,
    coalesce(st.execution_count, 0) AS total_executions,
    coalesce(st.successful_executions, 0) AS successful_executions,
    coalesce(st.failed_executions, 0) AS failed_executions,
    coalesce(st.missed_executions, 0) AS missed_executions,
    st.avg_execution_time, st.last_execution_at, st.last_error, st.last_execution_duration,
    coalesce(st.consecutive_failures, 0) AS consecutive_failures,
    s.risk, st.halted_at, st.halt_limit, st.halt_value, st.halt_threshold, st.resume_at"""

_SPEC_JOIN = "strategies s LEFT JOIN strategy_status st ON st.strategy_id = s.strategy_id"

_EXECUTION_COLUMNS = """
    execution_id, strategy_id, trigger, scheduled_for, generation, status, replica_id, claimed_at,
    started_at, finished_at, lease_expires_at, fencing_token, duration, output, output_truncated, error,
    result, wallet_value, wallet_currency"""

_ORDER_COLUMNS = """
    order_id, strategy_id, execution_id, exchange, client_order_id, exchange_order_id, market, side,
    order_type, total_quantity, price_per_unit, status, error, request, response, created_at, updated_at"""

_RUN_REQUEST_COLUMNS = "run_request_id, strategy_id, requested_at, claimed_at, execution_id, request_count"

_WEBHOOK_COLUMNS = "webhook_id, user_id, url, events, created_at"


# --- desired state: writes ----------------------------------------------------------------------

# Insert a spec, or replace an existing one and bump its generation. The conflict branch only fires
# for a strategy of the same user that is not being deleted; when it does not fire, nothing is
# returned and the caller reads the row to explain the conflict. `created` is true for an insert
# (`xmax = 0` holds only for a row version no transaction has updated).
UPSERT_STRATEGY = text(
    """
    INSERT INTO strategies AS s (strategy_id, user_id, name, code, config, risk, execution_interval,
                                 exchange, desired_state)
    VALUES (:strategy_id, :user_id, :name, :code, CAST(:config AS jsonb), CAST(:risk AS jsonb),
            :execution_interval, :exchange, :desired_state)
    ON CONFLICT (strategy_id) DO UPDATE SET
        name = EXCLUDED.name,
        code = EXCLUDED.code,
        config = EXCLUDED.config,
        risk = EXCLUDED.risk,
        execution_interval = EXCLUDED.execution_interval,
        exchange = EXCLUDED.exchange,
        desired_state = EXCLUDED.desired_state,
        generation = s.generation + 1,
        updated_at = now()
    WHERE s.delete_requested_at IS NULL AND s.user_id = EXCLUDED.user_id
    RETURNING s.strategy_id, (xmax = 0) AS created
    """
)

# Replace the spec of :user_id's strategy of that id and bump its generation, never insert: a redeploy
# of a strategy by its id (the tenant API) acts only on one that still exists. Checked by the update
# itself, so a deletion finalized after the API's ownership check leaves nothing to update, rather
# than an upsert bringing the strategy back. The same assignments as UPSERT_STRATEGY's update.
REPLACE_STRATEGY = text(
    """
    UPDATE strategies
    SET name = :name,
        code = :code,
        config = CAST(:config AS jsonb),
        risk = CAST(:risk AS jsonb),
        execution_interval = :execution_interval,
        exchange = :exchange,
        desired_state = :desired_state,
        generation = generation + 1,
        updated_at = now()
    WHERE strategy_id = :strategy_id AND user_id = :user_id AND delete_requested_at IS NULL
    RETURNING strategy_id
    """
)

SELECT_OWNER = text("SELECT user_id, delete_requested_at FROM strategies WHERE strategy_id = :strategy_id")

UPSERT_CREDENTIALS = text(
    """
    INSERT INTO strategy_credentials (strategy_id, key_id, credentials, api_key_digest)
    VALUES (:strategy_id, :key_id, :credentials, :api_key_digest)
    ON CONFLICT (strategy_id) DO UPDATE SET
        key_id = EXCLUDED.key_id,
        credentials = EXCLUDED.credentials,
        api_key_digest = EXCLUDED.api_key_digest,
        updated_at = now()
    """
)

# Serialise deploys of one exchange API key until commit, so two users cannot both claim it at once.
LOCK_API_KEY = text("SELECT pg_advisory_xact_lock(hashtextextended('api-key:' || :api_key_digest, 0))")

# Whether a strategy of a user other than :user_id holds this API key (never which one).
API_KEY_HELD_BY_ANOTHER_USER = text(
    """
    SELECT EXISTS (
        SELECT 1
        FROM strategy_credentials c
        JOIN strategies s ON s.strategy_id = c.strategy_id
        WHERE c.api_key_digest = :api_key_digest AND s.user_id <> :user_id
    )
    """
)

DELETE_CREDENTIALS = text("DELETE FROM strategy_credentials WHERE strategy_id = :strategy_id")

# An explicit start (:desired_state running) lifts a risk halt that happened before it: a halt is
# status; this is the person's answer to it, on record in the spec.
SET_DESIRED_STATE = text(
    """
    UPDATE strategies
    SET desired_state = :desired_state,
        generation = generation + 1,
        updated_at = now(),
        started_at = CASE WHEN :desired_state = 'running' THEN now() ELSE started_at END
    WHERE strategy_id = :strategy_id AND delete_requested_at IS NULL
    RETURNING strategy_id
    """
)

# Mark a strategy for deletion (once: a repeated request changes nothing); replicas finalize it.
REQUEST_DELETION = text(
    """
    UPDATE strategies
    SET delete_requested_at = now(), generation = generation + 1, updated_at = now()
    WHERE strategy_id = :strategy_id AND delete_requested_at IS NULL
    RETURNING strategy_id
    """
)

# A manual run of a strategy that exists and is not being deleted (nothing inserted otherwise).
# FOR KEY SHARE holds off a replica finalizing the deletion between this check and the insert.
# A strategy has at most one pending request (uq_run_requests_one_pending, migration 0012): while one
# is pending, this returns that row, counted once more, instead of inserting another. One execution
# answers a strategy's pending requests anyway, so the caller gets the request that will really run.
# The conflict is settled by the index, not by a read before the insert: of concurrent requests one
# inserts and the others wait for it and update it. A request that meets a pending row a claim is
# marking waits for the claim; that row is no longer pending then, so this one inserts a new request
# (the claimed execution may have read the spec before this click). `already_pending`: the row existed
# (`xmax` is 0 only on a row version no transaction updated or locked, i.e. the one just inserted).
REQUEST_RUN = text(
    f"""
    INSERT INTO run_requests AS r (strategy_id)
    SELECT strategy_id FROM strategies
    WHERE strategy_id = :strategy_id AND delete_requested_at IS NULL
    FOR KEY SHARE
    ON CONFLICT (strategy_id) WHERE claimed_at IS NULL
    DO UPDATE SET request_count = r.request_count + 1
    RETURNING {_RUN_REQUEST_COLUMNS}, (r.xmax <> 0) AS already_pending
    """
)

# The strategy's halt while its risk guard holds it (no row otherwise): a run request would never be
# claimed until the halt lifts, so the API refuses it and says why. A strategy being deleted is not
# reported halted: that refusal (REQUEST_RUN inserting nothing) is the one that still holds later.
# Nor is a halt the spec already lifts and the next reconcile pass will clear (reconcile.decide): a
# stop, a start after the halt, or a pause that has ended. Its status says `halted` for a moment
# more, but a request made now is claimed once the pass has run: `start` then `execute` just works.
# Only while a pass will come: a stop or start still unreconciled (the pass's mark,
# `reconciled_generation`, differs), or a pause past its end (a pass looks at those too). A halt
# written by hand on an already reconciled stopped strategy is never looked at by a pass, and no
# claim takes a halted strategy's requests (CLAIM_REQUESTED): it is refused like any other halt.
SELECT_HALT = text(
    """
    SELECT st.halted_at, st.halt_limit, st.halt_value, st.halt_threshold, st.resume_at, st.status_reason
    FROM strategy_status st
    JOIN strategies s ON s.strategy_id = st.strategy_id
    WHERE st.strategy_id = :strategy_id
      AND st.status = 'halted'
      AND s.delete_requested_at IS NULL
      AND NOT (s.reconciled_generation IS DISTINCT FROM s.generation
               AND (s.desired_state = 'stopped'
                    OR (s.started_at IS NOT NULL AND (st.halted_at IS NULL OR s.started_at > st.halted_at))))
      AND NOT (st.resume_at IS NOT NULL AND st.resume_at <= now())
    """
)


# --- reads ----------------------------------------------------------------------------------------

SELECT_SPEC = text(
    f"SELECT {_SUMMARY_COLUMNS}, s.code, s.config, s.risk FROM {_SPEC_JOIN} WHERE s.strategy_id = :strategy_id"
)

SELECT_STATUS = text(f"SELECT {_STATUS_COLUMNS} FROM {_SPEC_JOIN} WHERE s.strategy_id = :strategy_id")

SELECT_STRATEGY_EXISTS = text("SELECT strategy_id, exchange FROM strategies WHERE strategy_id = :strategy_id")

SELECT_PAPER_BALANCES = text(
    "SELECT currency, balance, locked_balance FROM paper_balances WHERE strategy_id = :strategy_id ORDER BY currency"
)


def list_strategies(*, by_user: bool, by_status: bool, after: bool, include_code: bool) -> TextClause:
    """Newest first; keyset-paginated on (created_at, strategy_id). Parameters: :limit, and
    :user_id, :status, :after_created_at and :after_strategy_id for the parts asked for."""
    where = ["TRUE"]
    if by_user:
        where.append("s.user_id = :user_id")
    if by_status:
        where.append(f"{_DERIVED_STATUS} = :status")
    if after:
        where.append("(s.created_at, s.strategy_id) < (:after_created_at, :after_strategy_id)")
    code = ", s.code" if include_code else ""
    return text(
        f"SELECT {_SUMMARY_COLUMNS}{code} FROM {_SPEC_JOIN} WHERE {' AND '.join(where)}"
        " ORDER BY s.created_at DESC, s.strategy_id DESC LIMIT :limit"
    )


def list_executions(*, by_status: bool, after: bool) -> TextClause:
    """A strategy's executions, newest first; keyset-paginated on (scheduled_for, execution_id).
    Parameters: :strategy_id, :limit, and :status, :after_scheduled_for, :after_execution_id."""
    where = ["strategy_id = :strategy_id"]
    if by_status:
        where.append("status = :status")
    if after:
        where.append("(scheduled_for, execution_id) < (:after_scheduled_for, :after_execution_id)")
    return text(
        f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE {' AND '.join(where)}"
        " ORDER BY scheduled_for DESC, execution_id DESC LIMIT :limit"
    )


SELECT_EXECUTION = text(f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE execution_id = :execution_id")

SELECT_RUN_REQUEST = text(f"SELECT {_RUN_REQUEST_COLUMNS} FROM run_requests WHERE run_request_id = :run_request_id")


def list_orders(*, after: bool) -> TextClause:
    """A strategy's orders, newest first; keyset-paginated on (created_at, order_id).
    Parameters: :strategy_id, :limit, and :after_created_at, :after_order_id."""
    cursor = " AND (created_at, order_id) < (:after_created_at, :after_order_id)" if after else ""
    return text(
        f"SELECT {_ORDER_COLUMNS} FROM orders WHERE strategy_id = :strategy_id{cursor}"
        " ORDER BY created_at DESC, order_id DESC LIMIT :limit"
    )


# --- health -------------------------------------------------------------------------------------

COUNT_ACTIVE_STRATEGIES = text(
    "SELECT count(*) FROM strategies WHERE desired_state = 'running' AND delete_requested_at IS NULL"
)

# A replica is alive while its lease has not expired by the database's clock.
SELECT_LIVE_REPLICAS = text("SELECT replica_id, sandbox_layers FROM replicas WHERE lease_expires_at > now()")


# --- webhooks (desired state: the API writes them; replicas read them to send alerts) -------------

INSERT_WEBHOOK = text(
    f"""
    INSERT INTO webhooks (webhook_id, user_id, url, events, key_id, secret)
    VALUES (:webhook_id, :user_id, :url, CAST(:events AS text[]), :key_id, :secret)
    RETURNING {_WEBHOOK_COLUMNS}
    """
)

# Every webhook, or (:user_id not null) one user's; newest first, at most 500.
LIST_WEBHOOKS = text(
    f"""
    SELECT {_WEBHOOK_COLUMNS} FROM webhooks
    WHERE (CAST(:user_id AS text) IS NULL OR user_id = :user_id)
    ORDER BY created_at DESC, webhook_id
    LIMIT 500
    """
)

SELECT_WEBHOOK = text(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = :webhook_id")

# A webhook goes with its undelivered alerts (the foreign keys cascade).
DELETE_WEBHOOK = text(f"DELETE FROM webhooks WHERE webhook_id = :webhook_id RETURNING {_WEBHOOK_COLUMNS}")

# A webhook's deliveries, newest first, each with its attempts as a JSON list.
LIST_DELIVERIES = text(
    """
    SELECT d.delivery_id, d.event, d.strategy_id, d.payload, d.created_at, d.attempts, d.next_attempt_at,
           d.delivered_at, d.abandoned_at, d.last_error,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'attempt', a.attempt, 'replica_id', a.replica_id, 'started_at', a.started_at,
                       'finished_at', a.finished_at, 'status_code', a.status_code, 'error', a.error)
                   ORDER BY a.attempt_id), '[]'::jsonb)
            FROM alert_attempts a
            WHERE a.delivery_id = d.delivery_id) AS attempt_log
    FROM alert_deliveries d
    WHERE d.webhook_id = :webhook_id
    ORDER BY d.created_at DESC, d.delivery_id
    LIMIT :limit
    """
)


# --- the tenant API: a user's own deployments -------------------------------------------------------

# The strategy, if it belongs to :user_id: another user's answers exactly like a missing one.
SELECT_OWNED = text("SELECT strategy_id FROM strategies WHERE strategy_id = :strategy_id AND user_id = :user_id")

# The user's newest strategy of that name that is not being deleted (a redeploy by name).
SELECT_LIVE_BY_NAME = text(
    """
    SELECT strategy_id FROM strategies
    WHERE user_id = :user_id AND name = :name AND delete_requested_at IS NULL
    ORDER BY created_at DESC, strategy_id DESC
    LIMIT 1
    """
)


def list_user_status(*, after: bool) -> TextClause:
    """A user's strategies with status and statistics, newest first; keyset-paginated like
    list_strategies. Parameters: :user_id, :limit, and :after_created_at, :after_strategy_id."""
    cursor = " AND (s.created_at, s.strategy_id) < (:after_created_at, :after_strategy_id)" if after else ""
    return text(
        f"SELECT {_STATUS_COLUMNS} FROM {_SPEC_JOIN} WHERE s.user_id = :user_id{cursor}"
        " ORDER BY s.created_at DESC, s.strategy_id DESC LIMIT :limit"
    )


# The last :per_strategy executions of each of :strategy_ids (times and outcome only), newest first.
SELECT_RECENT_OUTCOMES = text(
    """
    SELECT strategy_id, execution_id, status, scheduled_for, finished_at, duration
    FROM (
        SELECT strategy_id, execution_id, status, scheduled_for, finished_at, duration,
               row_number() OVER (PARTITION BY strategy_id ORDER BY scheduled_for DESC, execution_id DESC) AS rank
        FROM executions
        WHERE strategy_id = ANY(CAST(:strategy_ids AS text[]))
    ) ranked
    WHERE rank <= :per_strategy
    ORDER BY strategy_id, scheduled_for DESC, execution_id DESC
    """
)

SELECT_STRATEGY_STATE = text("SELECT state FROM strategy_status WHERE strategy_id = :strategy_id")

# The last :limit wallet values recorded by paper executions, newest first.
SELECT_WALLET_HISTORY = text(
    """
    SELECT finished_at, wallet_value, wallet_currency, execution_id
    FROM executions
    WHERE strategy_id = :strategy_id AND wallet_value IS NOT NULL AND finished_at IS NOT NULL
    ORDER BY finished_at DESC
    LIMIT :limit
    """
)
