"""Statements of the alert sender (a replica), named and kept in one place.

The outbox protocol: a claim takes due deliveries with SKIP LOCKED, bumps their attempt count,
leases them for the length of one attempt, and records the attempt as started, all in one statement
that commits before anything is sent. The result is then written only if the delivery is still at
this attempt (`attempts = :attempt`): a replica that outlived its lease cannot overwrite the record of
the replica that took over. A replica that dies after sending and before recording leaves the lease
to expire; the delivery is sent again with the same delivery_id, which is why receivers deduplicate.
"""

from __future__ import annotations

from sqlalchemy import text

CLAIM_DELIVERIES = text(
    """
    WITH picked AS (
        SELECT delivery_id
        FROM alert_deliveries
        WHERE delivered_at IS NULL AND abandoned_at IS NULL
          AND next_attempt_at <= now()
          AND (lease_expires_at IS NULL OR lease_expires_at < now())
        ORDER BY next_attempt_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE alert_deliveries d
        SET attempts = d.attempts + 1,
            lease_expires_at = now() + make_interval(secs => :lease_seconds)
        FROM picked p
        WHERE d.delivery_id = p.delivery_id
        RETURNING d.delivery_id, d.webhook_id, d.user_id, d.strategy_id, d.event, d.payload, d.created_at,
                  d.attempts
    ),
    attempt AS (
        INSERT INTO alert_attempts (delivery_id, attempt, replica_id)
        SELECT delivery_id, attempts, :replica_id FROM claimed
        RETURNING attempt_id, delivery_id
    )
    SELECT c.delivery_id, c.webhook_id, c.user_id, c.strategy_id, c.event, c.payload, c.created_at,
           c.attempts, a.attempt_id, w.url, w.key_id, w.secret
    FROM claimed c
    JOIN attempt a ON a.delivery_id = c.delivery_id
    JOIN webhooks w ON w.webhook_id = c.webhook_id
    ORDER BY c.created_at
    """
)

# Seconds until the next delivery falls due: a retry's backoff ends, or a dead sender's lease expires.
NEXT_DELIVERY_DUE = text(
    """
    SELECT min(GREATEST(next_attempt_at, COALESCE(lease_expires_at, next_attempt_at))) - now() AS wait
    FROM alert_deliveries
    WHERE delivered_at IS NULL AND abandoned_at IS NULL
    """
)

MARK_DELIVERED = text(
    """
    UPDATE alert_deliveries
    SET delivered_at = now(), lease_expires_at = NULL, last_error = NULL
    WHERE delivery_id = :delivery_id AND attempts = :attempt AND delivered_at IS NULL
    """
)

MARK_FAILED = text(
    """
    UPDATE alert_deliveries
    SET next_attempt_at = now() + make_interval(secs => :retry_in),
        lease_expires_at = NULL,
        last_error = :error,
        abandoned_at = CASE WHEN :abandon THEN now() END
    WHERE delivery_id = :delivery_id AND attempts = :attempt AND delivered_at IS NULL
    """
)

FINISH_ATTEMPT = text(
    """
    UPDATE alert_attempts
    SET finished_at = now(), status_code = :status_code, error = :error
    WHERE attempt_id = :attempt_id
    """
)
