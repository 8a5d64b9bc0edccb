"""The claim statements and the engine's pool as they were before the scale benchmark's changes.

bench_scale.py runs replicas with these (null_replica.py --before) and with the current ones,
alternating, in one run. Not used by the product.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from reconciler.storage import jsonb
from reconciler.storage.db import SessionLimits, connect_args, sync_url
from reconciler.storage.replica_store import Claimed, ReplicaStore
from reconciler.storage.statements import replica as queries


async def claim(self: ReplicaStore, slots: int, *, requests: bool = True) -> Claimed:
    """`ReplicaStore.claim` as it was: the claim planned afresh at each call (no generic plan)."""
    params = {"slots": slots, "replica_id": self.replica_id, "epoch": self.epoch, "lease_seconds": self.lease_seconds}

    async def work(conn: AsyncConnection) -> Claimed:
        claims = []
        if requests:
            rows = (await conn.execute(queries.CLAIM_REQUESTED, params)).mappings().all()
            claims = [self._claim(row) for row in rows]
        left = slots - len(claims)
        if left > 0:
            rows = (await conn.execute(queries.CLAIM_SCHEDULED, {**params, "slots": left})).mappings().all()
            claims.extend(self._claim(row) for row in rows)
        if len(claims) == slots:
            return Claimed(claims, None)
        wait = (await conn.execute(queries.NEXT_DUE)).scalar_one()
        return Claimed(claims, None if wait is None else wait.total_seconds())

    if slots <= 0:
        return Claimed([], None)
    return await self.db.run(work)


def create_engine_with_overflow(
    url: str,
    *,
    pool_size: int = 5,
    application_name: str = "strategy-executor",
    pre_ping: bool = True,
    limits: SessionLimits | None = None,
    generic_plans: bool = False,
) -> AsyncEngine:
    """`reconciler.storage.db.create_engine` as it was: half the connections in overflow, closed as they
    come back to a full pool, and PostgreSQL's own choice of plans (`generic_plans` ignored)."""
    return create_async_engine(
        sync_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args(application_name, limits),
        json_serializer=jsonb.dumps,
    )


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
          AND EXISTS (SELECT 1 FROM replicas r  -- a replica that lost its lease claims nothing
                      WHERE r.replica_id = :replica_id AND r.epoch = :epoch AND r.lease_expires_at > now())
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
                                lease_expires_at, fencing_token)
        SELECT execution_id, strategy_id, 'schedule', tick, generation, :replica_id,
               now() + make_interval(secs => :lease_seconds), :epoch
        FROM ticks
        RETURNING execution_id, strategy_id, scheduled_for, claimed_at, fencing_token
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
    SELECT c.execution_id, c.strategy_id, c.scheduled_for, c.claimed_at, c.fencing_token, 'schedule' AS trigger,
           t.generation, t.code, t.config, t.exchange, t.state
    FROM claimed c JOIN ticks t ON t.execution_id = c.execution_id
    ORDER BY c.scheduled_for
    """
)

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
