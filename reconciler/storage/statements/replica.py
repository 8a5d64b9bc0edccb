"""Every statement a replica runs, named and kept in one place (procrastinate's queries.sql, in Python).

Times always come from the database's clock (`now()`), never a replica's, so replicas whose clocks
disagree still agree on what is due and what has expired. The lock order all statements follow is
written in `reconciler.storage.statements`.

Fencing: every statement that records an effect of an execution (the outcome and STATE here, an
order in `exchange`) carries `FENCED`'s conditions: the execution is still `running`, still owned by
this replica, still holds the fencing token it was claimed with, and its lease has not expired, all
checked by the database in the statement that writes. A replica that lost its lease changes nothing.

Partitions: `executions` is partitioned by day on `scheduled_for`. Every statement here that finds an
execution by id (outcomes, lease renewal, lost-marking) also matches its `scheduled_for`, which the
replica holds in the execution's `Fence`: PostgreSQL then prunes to the one partition that holds it, at
run time for the rows of an unnested batch (EXPLAIN shows the other partitions as "never executed"),
instead of probing the primary key index of every day kept. A batch also passes the earliest and
latest of its keys as plain parameters (:earliest, :latest), so the partitions are chosen when the
statement starts, whichever join the planner picks (left to itself it may prefer to read every day's
small index of running rows: cheap, but one look per day kept). The in-flight invariant lives on
`strategy_status.running_execution_id` (foreign key `fk_executions_in_flight`, checked at the end of
each statement): a claim inserts the execution and sets the pointer in one statement, and an outcome
or lost-marking ends the execution and clears the pointer in one statement.
"""

from __future__ import annotations

from sqlalchemy import text

from reconciler.storage.statements import risk

# --- reconcile ------------------------------------------------------------------------------------

# Strategies whose status does not reflect their spec yet, oldest change first, one batch of them.
# Where a pass looks: the specs marked unreconciled (`ix_strategies_unreconciled`, migration 0010: a spec
# written since a replica last reconciled it, or being deleted) and the halted strategies whose pause
# has come to an end (the partial index of halted rows). Both partial indexes hold only those rows,
# so a pass reads a few index pages however many strategies there are, instead of joining them all
# to their status rows. The WHERE is still the whole truth; the mark only narrows the search.
_UNRECONCILED = """
    FROM (SELECT strategy_id FROM strategies
          -- Exactly the index's predicate, in the form its statistics estimate (migration 0010).
          WHERE (reconciled_generation IS DISTINCT FROM generation OR delete_requested_at IS NOT NULL) IS TRUE
          UNION
          SELECT strategy_id FROM strategy_status WHERE status = 'halted' AND resume_at <= now()) m
    JOIN strategies s ON s.strategy_id = m.strategy_id
    LEFT JOIN strategy_status st ON st.strategy_id = s.strategy_id
    WHERE st.strategy_id IS NULL
       OR st.observed_generation <> s.generation
       OR (s.delete_requested_at IS NOT NULL)
       OR (st.status = 'halted' AND st.resume_at <= now())
       OR s.reconciled_generation IS DISTINCT FROM s.generation  -- a stale mark: the pass clears it
    ORDER BY s.updated_at
    LIMIT :batch
"""

# The unreconciled strategies (_UNRECONCILED), their spec rows locked (skipping those another replica is
# reconciling) with FOR NO KEY UPDATE, not FOR UPDATE: a claim inserting an execution takes FOR KEY
# SHARE on its strategy (the foreign key) while holding the status row, and FOR UPDATE here would wait
# on the claim's status row while the claim waits on this spec row: a deadlock. The status rows are
# then locked with a wait, in strategy_id order like every statement that waits for them. It is a
# pass's first statement: a replica whose pass finds every row taken by another's stops here (and
# PASS_END). `now` is the transaction's start, what every now() in it returns: the pass decides with
# it, and needs no round trip of its own to read it while it holds the rows.
LOCK_UNRECONCILED = text(
    f"""
    SELECT s.strategy_id, s.generation, s.desired_state, s.execution_interval,
           s.delete_requested_at IS NOT NULL AS delete_requested, s.code, s.started_at, s.updated_at,
           now() AS now
    {_UNRECONCILED}
    FOR NO KEY UPDATE OF s SKIP LOCKED
    """
)

# At the end of a pass's transaction, on the specs it locked: those whose status now observes their
# generation are marked reconciled (the spec rows are already locked FOR NO KEY UPDATE by this
# transaction, which this update takes again; it changes no column the API writes). A spec left
# unreconciled (its code changed since the check, a deletion waiting for an execution) stays marked.
MARK_RECONCILED = text(
    """
    UPDATE strategies s
    SET reconciled_generation = s.generation
    FROM strategy_status st
    WHERE s.strategy_id = ANY(:strategy_ids)
      AND st.strategy_id = s.strategy_id
      AND st.observed_generation = s.generation
      AND s.delete_requested_at IS NULL
      AND s.reconciled_generation IS DISTINCT FROM s.generation
    """
)

# The last statement of a pass's locking transaction, after its writes: `held`, how many strategies are
# still unreconciled among the first :batch that this pass did not lock (:locked); `wait`, seconds
# until the earliest pause ends (risk.NEXT_RESUME; None: nothing paused); and `requests`, whether a run
# request waits that a claim would take (the front of ix_run_requests_pending; a halted strategy's
# wait for the halt to lift, as CLAIM_REQUESTED leaves them out). A run request wakes the replicas
# with the same NOTIFY as a spec write (the trigger's payload is the strategy id either way): with it
# the loop claims after a pass only when the pass scheduled something or a request waits, instead of
# after every write on every replica.
#
# Why `held`: LOCK_UNRECONCILED passes over (SKIP LOCKED) the spec rows another replica's pass holds.
# That pass normally commits them reconciled a moment later; but if its replica died or froze holding
# them, nothing else wakes anyone when its session ends (killed, or cut by lock_timeout or
# idle_in_transaction_session_timeout): the change would wait for the next resync, up to a minute. A
# pass that counts held rows looks again shortly (the loop backs off while they stay held). The count
# runs in a snapshot of its own (READ COMMITTED), so a row the other pass committed meanwhile is not
# counted; rows written since the lock are, and cost a look that finds them done. A row this pass
# locked and left unreconciled (a deletion waiting for an execution, code changed since the check)
# is not held elsewhere: it is excluded by :locked and waits for its own wake-up, as before.
PASS_END = text(
    f"""
    SELECT (SELECT count(*) FROM (SELECT s.strategy_id {_UNRECONCILED}) u
            WHERE u.strategy_id <> ALL(CAST(:locked AS text[]))) AS held,
           ({risk.NEXT_RESUME.text}) AS wait,
           EXISTS (SELECT 1 FROM run_requests r WHERE r.claimed_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM strategy_status h
                                   WHERE h.strategy_id = r.strategy_id AND h.status = 'halted')) AS requests
    """
)

LOCK_STATUS_ROWS = text(
    """
    SELECT strategy_id, status, observed_generation, schedule_anchor_at, schedule_interval,
           next_execution_at, running_execution_id, status_reason, halted_at, resume_at
    FROM strategy_status
    WHERE strategy_id = ANY(:strategy_ids)
    ORDER BY strategy_id
    FOR UPDATE
    """
)

UPSERT_STATUS = text(
    """
    INSERT INTO strategy_status (strategy_id, status, status_reason, observed_generation,
                                 schedule_anchor_at, schedule_interval, next_execution_at, halted_at)
    -- halted_at: PostgreSQL checks the row proposed for insertion against the table's CHECK
    -- constraints before it looks for a conflict, and a halted row must carry one
    -- (halted_iff_halted_at). Only an existing row is ever kept halted (a redeploy of a halted
    -- strategy), so the update below applies and keeps the halt's own time; without this, that
    -- redeploy failed every reconcile pass on every replica.
    VALUES (:strategy_id, :status, :status_reason, :observed_generation,
            :schedule_anchor_at, :schedule_interval, :next_execution_at,
            CASE WHEN CAST(:status AS text) = 'halted' THEN now() END)
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

# Sent (delivered at commit) when a reconcile pass scheduled something: the other replicas claim what
# fell due (the one that sent it claims right after its pass, and ignores its own). The payload,
# SCHEDULE_CHANGED and the sender's replica id, cannot be a strategy id (ids start with a letter or
# digit), so listeners tell it from the trigger's wake-ups.
NOTIFY_CHANNEL = "strategy_executor"
SCHEDULE_CHANGED = "!schedule"
NOTIFY_SCHEDULE_CHANGED = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '{SCHEDULE_CHANGED} ' || :replica_id)")

FINALIZE_DELETION = text(
    """
    DELETE FROM strategies
    WHERE strategy_id = :strategy_id AND delete_requested_at IS NOT NULL
    """
)

# --- claims ---------------------------------------------------------------------------------------

# What a claim reads beside the code, for the risk guard of a paper execution that makes no client
# call (`reconciler.exchange.broker`): its limits and equity memory (RiskView's columns) and its paper
# wallet, in the claim's own snapshot. Nothing else writes them while the execution runs (orders are
# the execution's own; the guard's memory is written under its fence), so they are what a read at its
# end would find; an execution that makes any call reads them again as it ends.
_PAPER_WALLET = """
           CASE WHEN {exchange} = 'paper' THEN ARRAY(SELECT b.currency FROM paper_balances b
                 WHERE b.strategy_id = c.strategy_id ORDER BY b.currency) END AS currencies,
           CASE WHEN {exchange} = 'paper' THEN ARRAY(SELECT b.balance + b.locked_balance FROM paper_balances b
                 WHERE b.strategy_id = c.strategy_id ORDER BY b.currency) END AS held"""

# Claims due scheduled ticks, oldest first, at most :slots of them, and commits before any code runs.
# A tick missed while nothing could run it is coalesced: the execution is for the latest grid point
# at or before now(), the grid points skipped are counted in missed_executions, and the next tick is
# the first grid point after now(). The execution ids are drawn in `due` so the status rows and the
# execution rows written by the same statement agree on them.
#
# A tick that already has its execution (one execution per tick: the unique key on strategy_id and
# scheduled_for) is skipped, not run again and not an error: the schedule moves on to the next grid
# point and the strategy is left with nothing in flight. A schedule lands on a tick it already ran when
# it is laid again on a grid anchored in the past: a pause shorter than the interval that ran out (its
# grid anchors at the spec's last change, whose first tick ran before the halt), or a status row an
# operator deleted (recreated on the grid of the deploy). Without ON CONFLICT that one strategy's
# duplicate failed the whole statement, every claim of every replica that reached it, until now()
# passed the next grid point.
CLAIM_SCHEDULED = text(
    """
    WITH candidates AS (
        -- The front of the claimable index: due rows in due order. Bounded and index-driven, so the
        -- cost does not grow with the number of strategies nor depend on the planner's statistics;
        -- the margin over :slots covers rows other replicas hold locked this instant.
        SELECT strategy_id, next_execution_at
        FROM strategy_status
        WHERE status = 'running' AND running_execution_id IS NULL AND next_execution_at <= now()
        ORDER BY next_execution_at
        LIMIT :slots + 32
    ),
    due AS (
        SELECT st.strategy_id, s.generation, s.code, s.config, s.exchange, st.state,
               s.risk, st.status, st.risk_day, st.day_start_equity, st.equity_peak,
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
          AND EXISTS (SELECT 1 FROM replicas r  -- a replica that lost its lease claims nothing
                      WHERE r.replica_id = :replica_id AND r.epoch = :epoch AND r.lease_expires_at > now())
        -- In the candidates' own order (the same values as st's: one snapshot), so the join streams
        -- from the index and stops once :slots rows are locked. Ordered by st's column, it had to
        -- join all :slots + 32 candidates and sort them first: with a backlog, ~7x the buffers.
        ORDER BY c.next_execution_at
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
                                lease_expires_at, fencing_token)
        SELECT execution_id, strategy_id, 'schedule', tick, generation, :replica_id,
               now() + make_interval(secs => :lease_seconds), :epoch
        FROM ticks
        ON CONFLICT DO NOTHING  -- the tick already ran: skipped (above)
        RETURNING execution_id, strategy_id, scheduled_for, claimed_at, fencing_token
    ),
    advanced AS (
        -- `claimed` holds only the rows inserted: a skipped tick's status points at no execution
        -- (the in-flight foreign key would refuse one that does not exist) and counts nothing missed.
        UPDATE strategy_status st
        SET next_execution_at = t.next_tick,
            missed_executions = st.missed_executions + CASE WHEN c.execution_id IS NULL THEN 0 ELSE t.missed END,
            running_execution_id = c.execution_id,
            updated_at = now()
        FROM ticks t LEFT JOIN claimed c ON c.execution_id = t.execution_id
        WHERE st.strategy_id = t.strategy_id
    )
    SELECT c.execution_id, c.strategy_id, c.scheduled_for, c.claimed_at, c.fencing_token, 'schedule' AS trigger,
           t.generation, t.code, t.config, t.exchange, t.state,
           t.risk, t.status, t.risk_day, t.day_start_equity, t.equity_peak, now() AS db_now,"""
    + _PAPER_WALLET.format(exchange="t.exchange")
    + """
    FROM claimed c JOIN ticks t ON t.execution_id = c.execution_id
    ORDER BY c.scheduled_for
    """
)

# A replica's sessions keep one generic plan per prepared statement (`plan_cache_mode`, set at connect:
# `reconciler.storage.db.connect_args`). CLAIM_SCHEDULED is why it started: its plan never depends on
# its parameters (it reads the front of the claimable index, :slots rows and a margin), yet PostgreSQL,
# unable to cost `LIMIT :slots + 32` without the value, found the generic plan dearer and planned the
# statement afresh at every call: more server time than running it (bench_scale.py); COMPLETE_EXECUTIONS
# the same. The prune's plan does depend on its values (how many rows are past the cutoff): its
# transaction asks for PostgreSQL's own choice back, for itself only (LOCAL).
PLANS_BY_VALUE = text("SET LOCAL plan_cache_mode = auto")

# Claims manual run requests: one execution per strategy with a pending request. Since migration 0012
# a strategy has at most one (a click while one is pending joins it: api.REQUEST_RUN); marking every
# pending row of the strategy stays correct either way. The requests are marked first and
# the executions created only for strategies whose requests this statement really marked, so a request
# claimed concurrently elsewhere never yields a second run.
CLAIM_REQUESTED = text(
    """
    WITH pending AS (
        -- Strategies with pending requests, oldest request first: driven by the partial index of
        -- pending requests, so the cost follows the requests, not the number of strategies.
        -- A halted strategy's requests wait for the halt to lift (`picked` would drop them) and are
        -- left out before the LIMIT: taken into it, 38 of them, the oldest, held every other
        -- tenant's manual runs off for as long as the halts lasted (an attack showed it).
        SELECT r.strategy_id, min(r.requested_at) AS first_requested
        FROM run_requests r
        WHERE r.claimed_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM strategy_status h WHERE h.strategy_id = r.strategy_id AND h.status = 'halted')
        GROUP BY r.strategy_id
        ORDER BY first_requested
        LIMIT :slots + 32
    ),
    picked AS (
        SELECT st.strategy_id, s.generation, s.code, s.config, s.exchange, st.state,
               s.risk, st.status, st.risk_day, st.day_start_equity, st.equity_peak,
               gen_random_uuid() AS execution_id
        FROM pending q
        JOIN strategy_status st ON st.strategy_id = q.strategy_id
        JOIN strategies s ON s.strategy_id = q.strategy_id
        WHERE st.running_execution_id IS NULL
          AND st.observed_generation = s.generation
          AND st.status IN ('running', 'stopped', 'error')
          AND s.delete_requested_at IS NULL
          AND EXISTS (SELECT 1 FROM replicas r  -- a replica that lost its lease claims nothing
                      WHERE r.replica_id = :replica_id AND r.epoch = :epoch AND r.lease_expires_at > now())
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
                                lease_expires_at, fencing_token)
        SELECT p.execution_id, p.strategy_id, 'manual', q.requested_at, p.generation, :replica_id,
               now() + make_interval(secs => :lease_seconds), :epoch
        FROM picked p JOIN requested q ON q.strategy_id = p.strategy_id
        RETURNING execution_id, strategy_id, scheduled_for, claimed_at, fencing_token
    ),
    running AS (
        UPDATE strategy_status st
        SET running_execution_id = c.execution_id, updated_at = now()
        FROM claimed c
        WHERE st.strategy_id = c.strategy_id
    )
    SELECT c.execution_id, c.strategy_id, c.scheduled_for, c.claimed_at, c.fencing_token, 'manual' AS trigger,
           p.generation, p.code, p.config, p.exchange, p.state,
           p.risk, p.status, p.risk_day, p.day_start_equity, p.equity_peak, now() AS db_now,"""
    + _PAPER_WALLET.format(exchange="p.exchange")
    + """
    FROM claimed c JOIN picked p ON p.execution_id = c.execution_id
    ORDER BY c.scheduled_for
    """
)

# When the loop claimed less than it could, it sleeps until the earliest of these (or a NOTIFY). The
# conditions mirror the claims', so nothing counts as due that a claim would not take (which would
# spin the loop), and both halves start from the front of a partial index (its first 32 rows); the
# first half takes the first of those that qualifies in index order, so it usually joins one row
# instead of 32 (a min() over the join had to join them all). A
# strategy with an execution in flight is left out: the replica running it is woken when it records the outcome,
# and then sees the strategy's next tick and any request that waited for it.
NEXT_DUE = text(
    """
    SELECT LEAST(
        (SELECT c.next_execution_at
         FROM (SELECT strategy_id, next_execution_at FROM strategy_status
               WHERE status = 'running' AND running_execution_id IS NULL AND next_execution_at IS NOT NULL
               ORDER BY next_execution_at
               LIMIT 32) c
         JOIN strategy_status st ON st.strategy_id = c.strategy_id
         JOIN strategies s ON s.strategy_id = st.strategy_id
         WHERE st.observed_generation = s.generation
           AND s.desired_state = 'running'
           AND s.delete_requested_at IS NULL
         ORDER BY c.next_execution_at
         LIMIT 1),
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

# Records a batch of outcomes and folds them into their strategies' statistics and STATE, in one
# statement, under the fencing check (FENCED): only an execution still `running`, still this
# replica's, under the token it was claimed with and within its lease is finished; for any other the
# statement changes nothing, so every claimed execution ends in exactly one recorded outcome,
# whichever replica records it first, and a replica that lost its lease never writes STATE. A batch
# holds at most one execution per strategy (a strategy never has two in flight), so each status row
# joins one outcome.
#
# The batch is one JSON document (:outcomes, an array of objects whose keys are the columns of
# `outcome` below), not an array per column: psycopg dumps an array element by element in Python,
# and fifteen arrays a batch were a tenth of the replica's own calls per execution.
#
# Lock order: the status rows first, in strategy_id order (`locked`), then the executions
# (`finished`), then the status rows again (the final UPDATE, which already holds them). Without
# `locked` the statement would lock an execution first and its status row second, against the lock
# order. `finished` reads `locked` in full before it touches an execution: the count is an
# uncorrelated subquery, so the planner evaluates it once as a gate (a one-time filter) before the
# update's scan starts, and the count needs every row of `locked`, each locked as it is read.
# (Before, the lock was a statement of its own: one round trip more per batch.) Whatever changed a
# row while this statement waited for its lock is seen by the update's recheck of that row (READ
# COMMITTED's), so the fencing check holds against the row as it is when the update takes it: an
# execution another replica marked lost meanwhile is not `running` any more, and is left alone.
COMPLETE_EXECUTIONS = text(
    """
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS o(
            execution_id uuid, strategy_id text, scheduled_for timestamptz, fencing_token bigint, status text,
            duration float8, ended_ago float8, output text, output_truncated boolean, error text, result jsonb,
            state jsonb, wallet_value numeric, wallet_currency text)
    ),
    locked AS (
        SELECT st.strategy_id
        FROM strategy_status st
        -- An array, so that the status rows are found by their key's index (a semi-join with the
        -- document read every status row instead, the planner not knowing the batch is small).
        WHERE st.strategy_id = ANY(ARRAY(SELECT strategy_id FROM outcome))
        ORDER BY st.strategy_id
        FOR UPDATE
    ),
    finished AS (
        UPDATE executions e
        SET status = o.status,
            -- By the database's clock, less what the replica's own clock measured: how long ago the
            -- process ended (the outcome may have waited for this batch) and how long it ran.
            finished_at = now() - make_interval(secs => o.ended_ago),
            started_at = now() - make_interval(secs => o.ended_ago + o.duration),
            duration = o.duration,
            output = o.output,
            output_truncated = o.output_truncated,
            error = o.error,
            result = o.result,
            -- A paper wallet's value as the run ended (the broker's closing measure), when it has one.
            wallet_value = COALESCE(o.wallet_value, e.wallet_value),
            wallet_currency = COALESCE(o.wallet_currency, e.wallet_currency),
            lease_expires_at = NULL
        FROM outcome o
        WHERE e.execution_id = o.execution_id
          AND e.scheduled_for = o.scheduled_for  -- the partition key: one partition per outcome
          AND e.scheduled_for BETWEEN :earliest AND :latest  -- pruned before the join
          -- The status rows are locked before any execution is (see above).
          AND (SELECT count(*) FROM locked) >= 0
          -- FENCED: still running, still ours, same token, lease not expired.
          AND e.status = 'running'
          AND e.replica_id = :replica_id
          AND e.fencing_token = o.fencing_token
          AND e.lease_expires_at > now()
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
                      WHERE r.strategy_id = st.strategy_id AND r.claimed_at IS NULL) AS run_requested,
              -- A deletion deferred while this execution ran can be finalized now.
              st.status = 'deleting' AS deletion_pending,
              -- When its next tick falls due (NULL: none scheduled). NEXT_DUE left the strategy out
              -- while this execution ran; the replica claims at this time rather than at once.
              CASE WHEN st.status = 'running' THEN extract(epoch FROM st.next_execution_at - now()) END AS next_due_in
    """
)

# The outcomes of a batch that this replica itself had already recorded: read only when
# COMPLETE_EXECUTIONS finished fewer executions than the batch named. The usual cause is a commit
# whose reply was lost: the server committed the batch, the connection broke before its answer came,
# and the transaction boundary ran the batch again on a fresh connection, which found the executions
# finished and changed nothing. Without this read the replica took its own write for a fencing
# (a false "fenced off" warning) and lost the wake-ups the write returned, so a waiting run request
# or a deferred deletion waited for the next resync. An execution finished under this replica and the
# token the batch holds was finished by this replica's own outcome: a lost-marking draws a new token,
# and nothing else finishes an execution. The row must also hold this outcome (its status and
# duration, which a run again sends unchanged): a second, different outcome for an execution already
# recorded is not reported recorded. Its wake-ups are read as COMPLETE_EXECUTIONS computes them,
# now. A read, no lock: the write it stands for has committed. In a batch's own transaction (and in
# autocommit, after it) it also sees the rows the batch has just finished; those are the caller's.
RECORDED_BEFORE = text(
    """
    WITH outcome AS (
        SELECT * FROM jsonb_to_recordset(CAST(:outcomes AS jsonb)) AS o(
            execution_id uuid, scheduled_for timestamptz, fencing_token bigint, status text, duration float8)
    )
    SELECT e.execution_id,
           EXISTS (SELECT 1 FROM run_requests r
                   WHERE r.strategy_id = st.strategy_id AND r.claimed_at IS NULL) AS run_requested,
           st.status = 'deleting' AS deletion_pending,
           CASE WHEN st.status = 'running' THEN extract(epoch FROM st.next_execution_at - now()) END AS next_due_in
    FROM outcome o
    JOIN executions e ON e.execution_id = o.execution_id
                     AND e.scheduled_for = o.scheduled_for  -- the partition key: one partition per outcome
    JOIN strategy_status st ON st.strategy_id = e.strategy_id
    WHERE e.scheduled_for BETWEEN :earliest AND :latest  -- pruned before the join
      AND e.replica_id = :replica_id
      AND e.fencing_token = o.fencing_token
      AND e.status NOT IN ('running', 'lost')
      AND e.status = o.status
      AND e.duration = o.duration
    """
)

# Executions whose lease ran out: their replica stopped renewing it (it died, froze, lost the database
# or gave the execution up), and a lease is never renewed once expired (RENEW_LEASES), so nothing can
# record their outcome any more. They are recorded `lost`, under a new fencing token, and their
# strategies are free to run their next tick on any replica. Status rows first, then executions (the
# lock order), and SKIP LOCKED on both: a row someone holds is looked at again by the next heartbeat.
MARK_LOST = text(
    """
    WITH expired AS (
        -- Found by the lease (every day's partial index of running rows: tiny), not by id.
        SELECT e.execution_id, e.scheduled_for
        FROM executions e
        JOIN strategy_status st ON st.strategy_id = e.strategy_id
        WHERE e.status = 'running' AND e.lease_expires_at < now()
        ORDER BY st.strategy_id
        LIMIT 500
        FOR UPDATE OF st, e SKIP LOCKED
    ),
    lost AS (
        UPDATE executions e
        SET status = 'lost',
            finished_at = now(),
            lease_expires_at = NULL,
            fencing_token = nextval('fencing_epochs'),
            error = 'replica ' || e.replica_id || ' stopped renewing its lease while this execution ran'
        FROM expired x
        WHERE e.execution_id = x.execution_id
          AND e.scheduled_for = x.scheduled_for  -- the partition key: one partition per row
          AND e.scheduled_for BETWEEN (SELECT min(scheduled_for) FROM expired)
                                  AND (SELECT max(scheduled_for) FROM expired)
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

# Registers (or re-registers) this replica under a new epoch: executions it claimed under an older
# one are fenced off, so a replica presumed dead that comes back finishes none of them.
REGISTER_REPLICA = text(
    """
    INSERT INTO replicas (replica_id, hostname, pid, slots, version, sandbox_layers, lease_expires_at, epoch)
    VALUES (:replica_id, :hostname, :pid, :slots, :version, CAST(:sandbox_layers AS jsonb),
            now() + make_interval(secs => :lease_seconds), nextval('fencing_epochs'))
    ON CONFLICT (replica_id) DO UPDATE SET
        heartbeat_at = now(),
        lease_expires_at = EXCLUDED.lease_expires_at,
        stopping = false,
        epoch = EXCLUDED.epoch
    RETURNING epoch
    """
)

# A heartbeat renews the replica's lease under its current epoch (no row: the replica was presumed
# dead and forgotten, it must register again); RENEW_LEASES then renews its executions' leases.
HEARTBEAT = text(
    """
    UPDATE replicas
    SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => :lease_seconds),
        stopping = :stopping
    WHERE replica_id = :replica_id AND epoch = :epoch
    RETURNING replica_id
    """
)

# Renews the leases of the executions the replica names (those it is still running or still trying to
# record), under the fencing check. A lease that has already expired is never renewed: from that
# instant the execution belongs to whoever marks it lost. One row per named execution that was renewed
# (renewed = true) or is fenced off (false: lost, expired, another token, gone); none for one this
# replica has just finished itself (its outcome committed while the heartbeat ran), which is neither.
# The replica kills (and forgets) every execution that comes back fenced off.
RENEW_LEASES = text(
    """
    WITH named AS (
        SELECT * FROM unnest(CAST(:execution_ids AS uuid[]), CAST(:scheduled_fors AS timestamptz[]),
                             CAST(:tokens AS bigint[]))
            AS r(execution_id, scheduled_for, fencing_token)
    ),
    renewed AS (
        UPDATE executions e
        SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
        FROM named r
        WHERE e.execution_id = r.execution_id
          AND e.scheduled_for = r.scheduled_for  -- the partition key: one partition per lease
          AND e.scheduled_for BETWEEN :earliest AND :latest  -- pruned before the join
          AND e.status = 'running'
          AND e.replica_id = :replica_id
          AND e.fencing_token = r.fencing_token
          AND e.lease_expires_at > now()
        RETURNING e.execution_id
    )
    SELECT n.execution_id, n.execution_id IN (SELECT execution_id FROM renewed) AS renewed
    FROM named n
    WHERE n.execution_id IN (SELECT execution_id FROM renewed)
       OR NOT EXISTS (SELECT 1 FROM executions e
                      WHERE e.execution_id = n.execution_id AND e.scheduled_for = n.scheduled_for
                        AND e.scheduled_for BETWEEN :earliest AND :latest
                        AND e.replica_id = :replica_id
                        AND e.fencing_token = n.fencing_token AND e.status NOT IN ('running', 'lost'))
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

# Executions go a whole day at a time (`statements.partitions`); only the default partition's rows are
# deleted one by one (`partitions.PRUNE_DEFAULT`).

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
