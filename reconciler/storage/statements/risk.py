"""Statements of the risk guard and of the alert outbox's producers, named and kept in one place.

Run by replicas only (the broker's guard and the replica store); times from the database's clock.
Every alert is enqueued by `ENQUEUE_ALERT` in the same transaction as the change it reports, so an
event that happened is an event that will be sent (the transactional outbox).
"""

from __future__ import annotations

from sqlalchemy import text

# What the guard needs once per execution: the limits (spec), what it remembered (status), the
# database's clock (the UTC day is the database's, not a replica's).
SELECT_RISK = text(
    """
    SELECT s.risk, st.status, st.risk_day, st.day_start_equity, st.equity_peak, now() AS db_now
    FROM strategies s
    LEFT JOIN strategy_status st ON st.strategy_id = s.strategy_id
    WHERE s.strategy_id = :strategy_id
    """
)

# The closing reads of many strategies at once, in one statement (one snapshot, no transaction around
# it): SELECT_RISK's columns, with each row's strategy_id and its paper wallet (available plus locked
# per currency, as two arrays in currency order; empty before its first trade).
SELECT_CLOSING_READS = text(
    """
    SELECT s.strategy_id, s.risk, st.status, st.risk_day, st.day_start_equity, st.equity_peak, now() AS db_now,
           ARRAY(SELECT b.currency FROM paper_balances b
                 WHERE b.strategy_id = s.strategy_id ORDER BY b.currency) AS currencies,
           ARRAY(SELECT b.balance + b.locked_balance FROM paper_balances b
                 WHERE b.strategy_id = s.strategy_id ORDER BY b.currency) AS held
    FROM strategies s
    LEFT JOIN strategy_status st ON st.strategy_id = s.strategy_id
    WHERE s.strategy_id = ANY(CAST(:strategy_ids AS text[]))
    """
)

SAVE_EQUITY_STATE = text(
    """
    UPDATE strategy_status
    SET risk_day = :risk_day, day_start_equity = :day_start_equity, equity_peak = :equity_peak
    WHERE strategy_id = :strategy_id
    """
)

# A halt is actual state: the status row, never the spec. Only a running strategy is halted (one
# stopped or being deleted meanwhile stays as the person left it); the schedule is cleared, so no
# claim takes it, and `resume_at` says when a pause lifts (NULL: a person must start it again).
HALT_STRATEGY = text(
    """
    UPDATE strategy_status
    SET status = 'halted',
        status_reason = :reason,
        halted_at = now(),
        halt_limit = :limit,
        halt_value = :value,
        halt_threshold = :threshold,
        resume_at = CASE
            WHEN :next_utc_day THEN (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
            WHEN CAST(:after_seconds AS float8) IS NOT NULL
                THEN now() + make_interval(secs => CAST(:after_seconds AS float8))
        END,
        schedule_anchor_at = NULL,
        schedule_interval = NULL,
        next_execution_at = NULL,
        updated_at = now()
    WHERE strategy_id = :strategy_id AND status = 'running'
    RETURNING halted_at, resume_at
    """
)

# A pause's end must wake a reconcile pass, and only a pass learns when the next one is (NEXT_RESUME).
# A halt is written by whichever replica recorded the execution, inside that transaction, and nothing
# else tells the others (or its own loop): sent at the halt's commit, this wakes every replica's pass
# as a spec change does, which reads the new pause's end. Without it, a 2 s pause lasted until the
# next resync, up to a minute later.
NOTIFY_PAUSED = text("SELECT pg_notify('strategy_executor', CAST(:strategy_id AS text))")

# One outbox row per webhook of the strategy's owner that asked for this event.
ENQUEUE_ALERT = text(
    """
    INSERT INTO alert_deliveries (webhook_id, user_id, strategy_id, event, payload)
    SELECT w.webhook_id, w.user_id, s.strategy_id, :event, CAST(:payload AS jsonb)
    FROM strategies s
    JOIN webhooks w ON w.user_id = s.user_id
    WHERE s.strategy_id = :strategy_id AND CAST(:event AS text) = ANY(w.events)
    RETURNING delivery_id
    """
)

ALERT_CHANNEL_PAYLOAD = "!alert"
NOTIFY_ALERT = text(f"SELECT pg_notify('strategy_executor', '{ALERT_CHANNEL_PAYLOAD}')")

# Seconds until the earliest pause ends (negative: overdue), walking the partial index from the front.
NEXT_RESUME = text(
    """
    SELECT min(resume_at) - now() AS wait
    FROM strategy_status
    WHERE status = 'halted' AND resume_at IS NOT NULL
    """
)

# The limits of strategies whose executions were just recorded: the failure streak is checked in Python.
SELECT_RISK_SPECS = text(
    """
    SELECT strategy_id, risk, user_id FROM strategies WHERE strategy_id = ANY(:strategy_ids)
    """
)

# A live order the exchange now reports filled, that was not on record as filled yet: one alert per fill.
ORDER_NOT_YET_FILLED = text(
    """
    SELECT order_id, market, side, order_type, total_quantity, client_order_id, exchange_order_id
    FROM orders
    WHERE strategy_id = :strategy_id AND exchange_order_id = :exchange_order_id AND status <> 'filled'
    """
)
