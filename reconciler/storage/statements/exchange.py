"""Every SQL statement of the exchange layer, named and kept in one place (procrastinate's queries.sql).

Run by replicas only, through `reconciler.storage.exchange_store`; the broker, the paper exchange and
the risk guard call its methods and never see a statement. PostgreSQL text like every other module
here; the one statement whose shape depends on the call (the paper fills' optional filters) keeps one
shape with `(:x IS NULL OR ...)`, since it reads one strategy's rows through its own index anyway.
"""

from __future__ import annotations

from sqlalchemy import text

OPEN_PAPER_STATUSES = ("open", "partially_filled")

# --- credentials ----------------------------------------------------------------------------------

SELECT_CREDENTIALS = text("SELECT key_id, credentials FROM strategy_credentials WHERE strategy_id = :strategy_id")

# One batch of a key rotation, locked until its transaction re-seals it; keyset-paginated on the id
# (:after is NULL for the first batch).
LOCK_CREDENTIALS_BATCH = text(
    """
    SELECT strategy_id, key_id, credentials
    FROM strategy_credentials
    WHERE CAST(:after AS text) IS NULL OR strategy_id > :after
    ORDER BY strategy_id
    LIMIT :batch
    FOR UPDATE
    """
)

UPDATE_CREDENTIALS = text(
    """
    UPDATE strategy_credentials
    SET key_id = :key_id, credentials = :credentials, updated_at = now()
    WHERE strategy_id = :strategy_id
    """
)

SELECT_ONE_CREDENTIAL_WITH_KEY = text(
    "SELECT strategy_id, credentials FROM strategy_credentials WHERE key_id = :key_id LIMIT 1"
)

COUNT_CREDENTIALS_BY_KEY = text("SELECT key_id, count(*) AS count FROM strategy_credentials GROUP BY key_id")


# --- the orders audit trail -------------------------------------------------------------------------

# FENCED (see `statements.replica`): the execution is still running, still this replica's, under the
# same token, within its lease. FOR SHARE holds off lost-marking (and a re-claim) until the
# transaction that checked it commits, so what it writes is written while the fence holds.
_FENCE_HOLDS = """
    EXISTS (SELECT 1 FROM executions e
            WHERE e.execution_id = :fence_execution_id
              AND e.scheduled_for = :fence_scheduled_for  -- the partition key: one partition looked at
              AND e.status = 'running'
              AND e.replica_id = :fence_replica_id
              AND e.fencing_token = :fence_token
              AND e.lease_expires_at > now()
            FOR SHARE)"""

SELECT_FENCE_HOLDS = text(f"SELECT {_FENCE_HOLDS}")

# The order's columns as the broker records them; every parameter cast, since an INSERT ... SELECT
# would otherwise read an untyped NULL as text.
_ORDER_VALUES = """
    CAST(:order_id AS uuid), CAST(:strategy_id AS text), CAST(:execution_id AS uuid), CAST(:exchange AS text),
    CAST(:client_order_id AS text), CAST(:market AS text), CAST(:side AS text), CAST(:order_type AS text),
    CAST(:total_quantity AS numeric), CAST(:price_per_unit AS numeric), CAST(:status AS text),
    CAST(:error AS text), CAST(:request AS jsonb)"""

_ORDER_INSERT = """
    INSERT INTO orders (order_id, strategy_id, execution_id, exchange, client_order_id, market, side, order_type,
                        total_quantity, price_per_unit, status, error, request)"""

# One order request, written before it is sent (so a crash mid-call still leaves a record), under the
# order_id the store drew for it; nothing returned for a client_order_id the strategy already used, or
# for that order_id already stored (see SELECT_OWN_ORDER). Outside an execution only (the broker's
# own tests): an execution's orders go through INSERT_FENCED_ORDER.
INSERT_ORDER = text(
    f"""
    {_ORDER_INSERT}
    VALUES ({_ORDER_VALUES})
    ON CONFLICT DO NOTHING
    RETURNING order_id
    """
)

# One order request, recorded before it is sent, and only under its execution's fencing check:
# nothing is inserted (and so nothing may be sent) for an execution that lost its lease.
INSERT_FENCED_ORDER = text(
    f"""
    {_ORDER_INSERT}
    SELECT {_ORDER_VALUES}
    WHERE {_FENCE_HOLDS}
    ON CONFLICT DO NOTHING
    RETURNING order_id
    """
)

# The order a retried insert met: the transaction that drew :order_id may have committed with its reply
# lost, and a row under that id is that earlier attempt's, never another order's. A statement of its
# own, so it sees a row committed while the insert waited on it.
SELECT_OWN_ORDER = text("SELECT order_id FROM orders WHERE order_id = :order_id")

# The exchange's answer to an order: what it said replaces the record's status; the error, the
# exchange's id and its answer are set when given (an answer is never unsaid). `changed`: whether the
# status was another before, so the answer's alert goes with the first application only (a commit
# whose reply was lost is applied again by the retry). The old row is read locked (FOR UPDATE), so two
# answers at once cannot both see the old status.
UPDATE_ORDER = text(
    """
    WITH before AS (SELECT order_id, status AS old_status FROM orders WHERE order_id = :order_id FOR UPDATE)
    UPDATE orders o
    SET status = :status,
        error = coalesce(CAST(:error AS text), o.error),
        exchange_order_id = coalesce(CAST(:exchange_order_id AS text), o.exchange_order_id),
        response = coalesce(CAST(:response AS jsonb), o.response),
        updated_at = now()
    FROM before
    WHERE o.order_id = before.order_id
    RETURNING before.old_status IS DISTINCT FROM CAST(:status AS text) AS changed
    """
)

UPDATE_ORDER_BY_EXCHANGE_ID = text(
    """
    UPDATE orders
    SET status = :status, response = CAST(:response AS jsonb), updated_at = now()
    WHERE strategy_id = :strategy_id AND exchange_order_id = :exchange_order_id
    """
)

# A paper execution's wallet value at its end; only while the execution is still in flight (an
# execution already recorded lost or finished keeps what it has). With its partition key given (NULL
# only outside an execution), the constant folds into the plan and one partition is looked at.
RECORD_WALLET_VALUE = text(
    """
    UPDATE executions
    SET wallet_value = :value, wallet_currency = :currency
    WHERE execution_id = :execution_id AND status = 'running'
      AND scheduled_for = coalesce(CAST(:scheduled_for AS timestamptz), scheduled_for)
    """
)


# --- paper exchange ----------------------------------------------------------------------------------

COUNT_PAPER_BALANCES = text("SELECT count(*) FROM paper_balances WHERE strategy_id = :strategy_id")

# The starting paper wallet (:currencies and :balances side by side); a no-op for currencies the
# strategy already has rows for.
SEED_PAPER_BALANCES = text(
    """
    INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance)
    SELECT :strategy_id, w.currency, w.balance, 0
    FROM unnest(CAST(:currencies AS text[]), CAST(:balances AS numeric[])) AS w(currency, balance)
    ON CONFLICT DO NOTHING
    """
)

SELECT_PAPER_BALANCES = text(
    """
    SELECT currency, balance, locked_balance
    FROM paper_balances
    WHERE strategy_id = :strategy_id
    ORDER BY currency
    """
)

# Locked in currency order, so two transactions of one strategy cannot deadlock on them.
LOCK_PAPER_BALANCES = text(
    """
    SELECT currency, balance, locked_balance
    FROM paper_balances
    WHERE strategy_id = :strategy_id AND currency = ANY(CAST(:currencies AS text[]))
    ORDER BY currency
    FOR UPDATE
    """
)

# A zero row for a currency the strategy did not hold yet (before ADD_PAPER_BALANCE credits it).
ENSURE_PAPER_BALANCE = text(
    """
    INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance)
    VALUES (:strategy_id, :currency, 0, 0)
    ON CONFLICT DO NOTHING
    """
)

# Add (signed) amounts to a balance. An UPDATE, not an upsert: PostgreSQL checks the CHECK
# constraints on an upsert's proposed row before it finds the conflict, and a delta may be negative.
ADD_PAPER_BALANCE = text(
    """
    UPDATE paper_balances
    SET balance = balance + CAST(:balance AS numeric),
        locked_balance = locked_balance + CAST(:locked AS numeric),
        updated_at = now()
    WHERE strategy_id = :strategy_id AND currency = :currency
    """
)

_PAPER_ORDER_COLUMNS = """
    paper_order_id, strategy_id, client_order_id, market, side, order_type, status, price_per_unit,
    total_quantity, remaining_quantity, avg_price, fee_amount, locked_currency, locked_amount,
    checked_until, created_at, updated_at"""

INSERT_PAPER_ORDER = text(
    f"""
    INSERT INTO paper_orders ({_PAPER_ORDER_COLUMNS})
    VALUES (:paper_order_id, :strategy_id, :client_order_id, :market, :side, :order_type, :status,
            CAST(:price_per_unit AS numeric), CAST(:total_quantity AS numeric),
            CAST(:remaining_quantity AS numeric), CAST(:avg_price AS numeric), CAST(:fee_amount AS numeric),
            :locked_currency, CAST(:locked_amount AS numeric), :checked_until, :created_at, :updated_at)
    ON CONFLICT DO NOTHING
    RETURNING {_PAPER_ORDER_COLUMNS}
    """
)

# One of the strategy's orders, locked: by its id, or by its client_order_id (two statements, so each
# keeps its index whatever plan PostgreSQL caches for a prepared statement).
LOCK_PAPER_ORDER_BY_ID = text(
    f"""
    SELECT {_PAPER_ORDER_COLUMNS}
    FROM paper_orders
    WHERE strategy_id = :strategy_id AND paper_order_id = :paper_order_id
    FOR UPDATE
    """
)

LOCK_PAPER_ORDER_BY_CLIENT_ID = text(
    f"""
    SELECT {_PAPER_ORDER_COLUMNS}
    FROM paper_orders
    WHERE strategy_id = :strategy_id AND client_order_id = :client_order_id
    FOR UPDATE
    """
)

# The strategy's resting orders, optionally of one market and side, oldest first.
_OPEN_PAPER_ORDERS = f"""
    SELECT {_PAPER_ORDER_COLUMNS}
    FROM paper_orders
    WHERE strategy_id = :strategy_id
      AND status IN ('open', 'partially_filled')
      AND (CAST(:market AS text) IS NULL OR market = :market)
      AND (CAST(:side AS text) IS NULL OR side = :side)
    ORDER BY created_at, paper_order_id"""

SELECT_OPEN_PAPER_ORDERS = text(_OPEN_PAPER_ORDERS)
LOCK_OPEN_PAPER_ORDERS = text(f"{_OPEN_PAPER_ORDERS}\n    FOR UPDATE")

# A resting order checked against the prices up to :checked_until without crossing its limit.
PAPER_ORDER_CHECKED = text(
    "UPDATE paper_orders SET checked_until = :checked_until WHERE paper_order_id = :paper_order_id"
)

PAPER_ORDER_FILLED = text(
    """
    UPDATE paper_orders
    SET status = 'filled', remaining_quantity = 0, avg_price = :avg_price, fee_amount = :fee_amount,
        locked_amount = 0, checked_until = :at, updated_at = :at
    WHERE paper_order_id = :paper_order_id
    """
)

PAPER_ORDER_CANCELLED = text(
    """
    UPDATE paper_orders
    SET status = 'cancelled', locked_amount = 0, updated_at = :at
    WHERE paper_order_id = :paper_order_id
    """
)

# The strategy's filled orders, newest first, optionally of one market and within a time range.
SELECT_PAPER_FILLS = text(
    f"""
    SELECT {_PAPER_ORDER_COLUMNS}
    FROM paper_orders
    WHERE strategy_id = :strategy_id
      AND status = 'filled'
      AND (CAST(:symbol AS text) IS NULL OR market = :symbol)
      AND (CAST(:since AS timestamptz) IS NULL OR updated_at >= :since)
      AND (CAST(:until AS timestamptz) IS NULL OR updated_at <= :until)
    ORDER BY updated_at DESC
    LIMIT :limit
    """
)
