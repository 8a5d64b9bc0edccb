"""Every statement a replica runs, named and kept in one place (procrastinate's queries.sql, in Python).

Times always come from the database's clock (`now()`), never a replica's, so replicas whose clocks
disagree still agree on what is due and what has expired.

Locking protocol, which every statement here follows:
- A `strategy_status` row is the strategy's lock. Claims take it with SKIP LOCKED and never wait;
  completions, lost-marking and reconcile writes wait for it briefly. Nothing holds it while user
  code runs: claims commit before the sandbox forks.
- `strategy_status.running_execution_id` is tested on the locked row itself, so a claim that raced
  with another replica's claim re-checks it on the newest row version (READ COMMITTED re-evaluates
  the WHERE clause of a locked row that changed) and skips the strategy.
- The partial unique indexes on `executions` are the backstop should any of this be wrong.
"""

from __future__ import annotations

from sqlalchemy import text

# --- reconcile ------------------------------------------------------------------------------------

# Strategies whose status does not reflect their spec yet. Locks the spec rows (skipping those another
# replica is reconciling); the status rows are then locked with a wait, since claims hold them only
# for the length of one statement.
LOCK_UNRECONCILED = text(
    """
    SELECT s.strategy_id, s.generation, s.desired_state, s.execution_interval,
           s.delete_requested_at IS NOT NULL AS delete_requested, s.code, s.started_at
    FROM strategies s
    LEFT JOIN strategy_status st ON st.strategy_id = s.strategy_id
    WHERE st.strategy_id IS NULL
       OR st.observed_generation <> s.generation
       OR (s.delete_requested_at IS NOT NULL)
       -- A pause whose time has come (the partial index of halted rows finds them).
       OR (st.status = 'halted' AND st.resume_at <= now())
    ORDER BY s.updated_at
    LIMIT :batch
    FOR UPDATE OF s SKIP LOCKED
    """
)

LOCK_STATUS_ROWS = text(
    """
    SELECT strategy_id, status, observed_generation, schedule_anchor_at, schedule_interval,
           next_execution_at, running_execution_id, status_reason, halted_at, resume_at
    FROM strategy_status
    WHERE strategy_id = ANY(:strategy_ids)
    FOR UPDATE
    """
)

UPSERT_STATUS = text(
    """
    INSERT INTO strategy_status (strategy_id, status, status_reason, observed_generation,
                                 schedule_anchor_at, schedule_interval, next_execution_at)
    VALUES (:strategy_id, :status, :status_reason, :observed_generation,
            :schedule_anchor_at, :schedule_interval, :next_execution_at)
    ON CONFLICT (strategy_id) DO UPDATE SET
        status = EXCLUDED.status,
        status_reason = EXCLUDED.status_reason,
        observed_generation = EXCLUDED.observed_generation,
        schedule_anchor_at = EXCLUDED.schedule_anchor_at,
        schedule_interval = EXCLUDED.schedule_interval,
        next_execution_at = EXCLUDED.next_execution_at,
        -- What a halt recorded stays while the strategy stays halted, and goes with the halt.
        halted_at = CASE WHEN EXCLUDED.status = 'halted' THEN strategy_status.halted_at END,
        halt_limit = CASE WHEN EXCLUDED.status = 'halted' THEN strategy_status.halt_limit END,
        halt_value = CASE WHEN EXCLUDED.status = 'halted' THEN strategy_status.halt_value END,
        halt_threshold = CASE WHEN EXCLUDED.status = 'halted' THEN strategy_status.halt_threshold END,
        resume_at = CASE WHEN EXCLUDED.status = 'halted' THEN strategy_status.resume_at END,
        -- A resume starts the guard's memory afresh: no failure streak, a new peak and day baseline.
        consecutive_failures = CASE WHEN :resumed THEN 0 ELSE strategy_status.consecutive_failures END,
        equity_peak = CASE WHEN :resumed THEN NULL ELSE strategy_status.equity_peak END,
        day_start_equity = CASE WHEN :resumed THEN NULL ELSE strategy_status.day_start_equity END,
        risk_day = CASE WHEN :resumed THEN NULL ELSE strategy_status.risk_day END,
        updated_at = now()
    """
)

# Sent (delivered at commit) when a reconcile pass scheduled something: replicas that woke for the
# same desired-state change but found it not yet reconciled look again. The payload cannot be a
# strategy id (ids start with a letter or digit), so listeners tell it from the trigger's wake-ups.
NOTIFY_CHANNEL = "strategy_executor"
SCHEDULE_CHANGED = "!schedule"
NOTIFY_SCHEDULE_CHANGED = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{SCHEDULE_CHANGED}')")

FINALIZE_DELETION = text(
    """
    DELETE FROM strategies
    WHERE strategy_id = :strategy_id AND delete_requested_at IS NOT NULL
    """
)

# --- claims ---------------------------------------------------------------------------------------

# Claims due scheduled ticks, oldest first, at most :slots of them, and commits before any code runs.
# A tick missed while nothing could run it is coalesced: the execution is for the latest grid point
# at or before now(), the grid points skipped are counted in missed_executions, and the next tick is
# the first grid point after now(). The execution ids are drawn in `due` so the status rows and the
# execution rows written by the same statement agree on them.
CLAIM_SCHEDULED = text(
    """
    WITH candidates AS (
        -- The front of the claimable index: due rows in due order. Bounded and index-driven, so the
        -- cost does not grow with the number of strategies nor depend on the planner's statistics;
        -- the margin over :slots covers rows other replicas hold locked this instant.
        SELECT strategy_id
        FROM strategy_status
        WHERE status = 'running' AND running_execution_id IS NULL AND next_execution_at <= now()
        ORDER BY next_execution_at
        LIMIT :slots + 32
    ),
    due AS (
        SELECT st.strategy_id, s.generation, s.code, s.config, s.exchange, st.state,
               st.next_execution_at, st.schedule_anchor_at AS anchor,
               make_interval(secs => st.schedule_interval) AS step,
               gen_random_uuid() AS execution_id
        FROM candidates c
        JOIN strategy_status st ON st.strategy_id = c.strategy_id
        JOIN strategies s ON s.strategy_id = st.strategy_id
        WHERE st.next_execution_at <= now()
          AND st.status = 'running'
          AND st.running_execution_id IS NULL
          AND st.observed_generation = s.generation
          AND s.desired_state = 'running'
          AND s.delete_requested_at IS NULL
        ORDER BY st.next_execution_at
        LIMIT :slots
        FOR UPDATE OF st SKIP LOCKED
    ),
    ticks AS (
        SELECT due.*,
               GREATEST(due.next_execution_at, due.anchor + due.step * k.now_index) AS tick,
               GREATEST(due.next_execution_at + due.step, due.anchor + due.step * (k.now_index + 1)) AS next_tick,
               GREATEST(k.now_index - k.due_index, 0) AS missed
        FROM due,
        LATERAL (
            SELECT floor(extract(epoch FROM now() - due.anchor) / extract(epoch FROM due.step))::bigint AS now_index,
                   round(extract(epoch FROM due.next_execution_at - due.anchor) / extract(epoch FROM due.step))::bigint
                       AS due_index
        ) k
    ),
    claimed AS (
        INSERT INTO executions (execution_id, strategy_id, trigger, scheduled_for, generation, replica_id,
                                lease_expires_at)
        SELECT execution_id, strategy_id, 'schedule', tick, generation, :replica_id,
               now() + make_interval(secs => :lease_seconds)
        FROM ticks
        RETURNING execution_id, strategy_id, scheduled_for, claimed_at
    ),
    advanced AS (
        UPDATE strategy_status st
        SET next_execution_at = t.next_tick,
            missed_executions = st.missed_executions + t.missed,
            running_execution_id = t.execution_id,
            updated_at = now()
        FROM ticks t
        WHERE st.strategy_id = t.strategy_id
    )
    SELECT c.execution_id, c.strategy_id, c.scheduled_for, c.claimed_at, 'schedule' AS trigger,
           t.generation, t.code, t.config, t.exchange, t.state
    FROM claimed c JOIN ticks t ON t.execution_id = c.execution_id
    ORDER BY c.scheduled_for
    """
)

# Claims manual run requests: one execution per strategy with pending requests, which answers all of
# them (pressing "run" twice while the first is pending runs once). The requests are marked first and
# the executions created only for strategies whose requests this statement really marked, so a request
# claimed concurrently elsewhere never yields a second run.
CLAIM_REQUESTED = text(
    """
    WITH pending AS (
        -- Strategies with pending requests, oldest request first: driven by the partial index of
        -- pending requests, so the cost follows the requests, not the number of strategies.
        SELECT strategy_id, min(requested_at) AS first_requested
        FROM run_requests
        WHERE claimed_at IS NULL
        GROUP BY strategy_id
        ORDER BY first_requested
        LIMIT :slots + 32
    ),
    picked AS (
        SELECT st.strategy_id, s.generation, s.code, s.config, s.exchange, st.state,
               gen_random_uuid() AS execution_id
        FROM pending q
        JOIN strategy_status st ON st.strategy_id = q.strategy_id
        JOIN strategies s ON s.strategy_id = q.strategy_id
        WHERE st.running_execution_id IS NULL
          AND st.observed_generation = s.generation
          AND st.status IN ('running', 'stopped', 'error')
          AND s.delete_requested_at IS NULL
        ORDER BY q.first_requested
        LIMIT :slots
        FOR UPDATE OF st SKIP LOCKED
    ),
    marked AS (
        UPDATE run_requests r
        SET claimed_at = now(), execution_id = p.execution_id
        FROM picked p
        WHERE r.strategy_id = p.strategy_id AND r.claimed_at IS NULL
        RETURNING r.strategy_id, r.requested_at
    ),
    requested AS (
        SELECT strategy_id, min(requested_at) AS requested_at FROM marked GROUP BY strategy_id
    ),
    claimed AS (
        INSERT INTO executions (execution_id, strategy_id, trigger, scheduled_for, generation, replica_id,
                                lease_expires_at)
        SELECT p.execution_id, p.strategy_id, 'manual', q.requested_at, p.generation, :replica_id,
               now() + make_interval(secs => :lease_seconds)
        FROM picked p JOIN requested q ON q.strategy_id = p.strategy_id
        RETURNING execution_id, strategy_id, scheduled_for, claimed_at
    ),
    running AS (
        UPDATE strategy_status st
        SET running_execution_id = c.execution_id, updated_at = now()
        FROM claimed c
        WHERE st.strategy_id = c.strategy_id
    )
    SELECT c.execution_id, c.strategy_id, c.scheduled_for, c.claimed_at, 'manual' AS trigger,
           p.generation, p.code, p.config, p.exchange, p.state
    FROM claimed c JOIN picked p ON p.execution_id = c.execution_id
    ORDER BY c.scheduled_for
    """
)

DATABASE_NOW = text("SELECT now()")

# When the loop claimed less than it could, it sleeps until the earliest of these (or a NOTIFY). The
# conditions mirror the claims', so nothing counts as due that a claim would not take (which would
# spin the loop), and both halves start from the front of a partial index (its first 32 rows). A
# strategy with an execution in flight is left out: the replica running it is woken when it records the outcome,
# and then sees the strategy's next tick and any request that waited for it.
NEXT_DUE = text(
    """
    SELECT LEAST(
        (SELECT min(st.next_execution_at)
         FROM (SELECT strategy_id FROM strategy_status
               WHERE status = 'running' AND running_execution_id IS NULL AND next_execution_at IS NOT NULL
               ORDER BY next_execution_at
               LIMIT 32) c
         JOIN strategy_status st ON st.strategy_id = c.strategy_id
         JOIN strategies s ON s.strategy_id = st.strategy_id
         WHERE st.observed_generation = s.generation
           AND s.desired_state = 'running'
           AND s.delete_requested_at IS NULL),
        (SELECT min(q.first_requested)
         FROM (SELECT strategy_id, min(requested_at) AS first_requested
               FROM run_requests WHERE claimed_at IS NULL
               GROUP BY strategy_id ORDER BY first_requested LIMIT 32) q
         JOIN strategy_status st ON st.strategy_id = q.strategy_id
         JOIN strategies s ON s.strategy_id = q.strategy_id
         WHERE st.running_execution_id IS NULL
           AND st.status IN ('running', 'stopped', 'error')
           AND st.observed_generation = s.generation
           AND s.delete_requested_at IS NULL)
    ) - now() AS wait
    """
)

# --- outcomes -------------------------------------------------------------------------------------

# Records a batch of outcomes and folds them into their strategies' statistics, in one statement.
# `status = 'running'` makes it a no-op for an execution another replica already marked lost: every
# claimed execution ends in exactly one recorded outcome, whichever replica records it first. A batch
# holds at most one execution per strategy (a strategy never has two in flight), so each status row
# joins one outcome.
COMPLETE_EXECUTIONS = text(
    """
    WITH outcome AS (
        SELECT * FROM unnest(
            CAST(:execution_ids AS uuid[]), CAST(:statuses AS text[]), CAST(:durations AS float8[]),
            CAST(:outputs AS text[]), CAST(:truncated AS boolean[]), CAST(:errors AS text[]),
            CAST(:results AS jsonb[]), CAST(:states AS jsonb[])
        ) AS o(execution_id, status, duration, output, output_truncated, error, result, state)
    ),
    finished AS (
        UPDATE executions e
        SET status = o.status,
            finished_at = now(),
            started_at = now() - make_interval(secs => o.duration),
            duration = o.duration,
            output = o.output,
            output_truncated = o.output_truncated,
            error = o.error,
            result = o.result,
            lease_expires_at = NULL
        FROM outcome o
        WHERE e.execution_id = o.execution_id AND e.status = 'running'
        RETURNING e.execution_id, e.strategy_id, e.status, e.duration, e.finished_at, e.error
    )
    UPDATE strategy_status st
    SET running_execution_id = CASE WHEN st.running_execution_id = f.execution_id
                                    THEN NULL ELSE st.running_execution_id END,
        execution_count = st.execution_count + 1,
        successful_executions = st.successful_executions + (f.status = 'succeeded')::int,
        failed_executions = st.failed_executions + (f.status <> 'succeeded')::int,
        avg_execution_time = (COALESCE(st.avg_execution_time, 0) * st.execution_count + f.duration)
                             / (st.execution_count + 1),
        last_execution_duration = f.duration,
        last_execution_at = f.finished_at,
        last_error = CASE WHEN f.status = 'succeeded' THEN st.last_error ELSE f.error END,
        consecutive_failures = CASE WHEN f.status = 'succeeded' THEN 0 ELSE st.consecutive_failures + 1 END,
        state = COALESCE(o.state, st.state),
        updated_at = now()
    FROM finished f
    JOIN outcome o ON o.execution_id = f.execution_id
    WHERE st.strategy_id = f.strategy_id
    RETURNING f.execution_id, st.strategy_id, st.consecutive_failures,
              -- A run request that waited for this execution can be claimed now.
              EXISTS (SELECT 1 FROM run_requests r
                      WHERE r.strategy_id = st.strategy_id AND r.claimed_at IS NULL) AS run_requested
    """
)

# Executions whose lease ran out while their replica's lease also ran out: that replica is gone (or
# cut off from the database), so the execution is recorded as lost and its strategy is free to run
# its next tick on any replica. A replica that is merely slow keeps its executions by heartbeating.
MARK_LOST = text(
    """
    WITH lost AS (
        UPDATE executions e
        SET status = 'lost',
            finished_at = now(),
            lease_expires_at = NULL,
            error = 'replica ' || e.replica_id || ' stopped renewing its lease while this execution ran'
        WHERE e.status = 'running'
          AND e.lease_expires_at < now()
          AND NOT EXISTS (SELECT 1 FROM replicas r
                          WHERE r.replica_id = e.replica_id AND r.lease_expires_at >= now())
        RETURNING e.execution_id, e.strategy_id, e.finished_at, e.error
    )
    UPDATE strategy_status st
    SET running_execution_id = CASE WHEN st.running_execution_id = l.execution_id
                                    THEN NULL ELSE st.running_execution_id END,
        execution_count = st.execution_count + 1,
        failed_executions = st.failed_executions + 1,
        consecutive_failures = st.consecutive_failures + 1,
        last_execution_at = l.finished_at,
        last_error = l.error,
        updated_at = now()
    FROM lost l
    WHERE st.strategy_id = l.strategy_id
    RETURNING l.execution_id, l.strategy_id, st.consecutive_failures, l.error
    """
)

# --- replicas -------------------------------------------------------------------------------------

REGISTER_REPLICA = text(
    """
    INSERT INTO replicas (replica_id, hostname, pid, slots, version, sandbox_layers, lease_expires_at)
    VALUES (:replica_id, :hostname, :pid, :slots, :version, CAST(:sandbox_layers AS jsonb),
            now() + make_interval(secs => :lease_seconds))
    ON CONFLICT (replica_id) DO UPDATE SET
        heartbeat_at = now(),
        lease_expires_at = EXCLUDED.lease_expires_at,
        stopping = false
    """
)

# A heartbeat renews the replica's lease; RENEW_LEASES then renews those of all its executions in flight.
HEARTBEAT = text(
    """
    UPDATE replicas
    SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => :lease_seconds),
        stopping = :stopping
    WHERE replica_id = :replica_id
    RETURNING replica_id
    """
)

RENEW_LEASES = text(
    """
    UPDATE executions
    SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
    WHERE replica_id = :replica_id AND status = 'running'
    """
)

DEREGISTER_REPLICA = text("DELETE FROM replicas WHERE replica_id = :replica_id")

# Rows of replicas that died long ago (their executions were marked lost by then).
FORGET_DEAD_REPLICAS = text(
    """
    DELETE FROM replicas
    WHERE lease_expires_at < now() - make_interval(secs => :after_seconds)
    """
)

# --- retention ------------------------------------------------------------------------------------

PRUNE_EXECUTIONS = text(
    """
    DELETE FROM executions
    WHERE execution_id IN (
        SELECT execution_id FROM executions
        WHERE finished_at < now() - make_interval(secs => :retention_seconds)
        ORDER BY finished_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """
)

PRUNE_RUN_REQUESTS = text(
    """
    DELETE FROM run_requests
    WHERE run_request_id IN (
        SELECT run_request_id FROM run_requests
        WHERE claimed_at < now() - make_interval(secs => :retention_seconds)
        ORDER BY claimed_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """
)
