"""The lock order (`reconciler.storage.statements`) under concurrency: claims, completions, reconcile
passes, lost-marking and spec writes racing on the same strategies never deadlock.

The server counts every deadlock it breaks (`pg_stat_database.deadlocks`), including those the
transaction boundary would retry and hide, so the test asserts on the server's count, not on errors.
Before the lock order was written down, a reconcile pass (FOR UPDATE on strategies) and a claim (a
foreign-key share lock on strategies while holding the status row) deadlocked within seconds here.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import psycopg
import pytest
from sqlalchemy import text

from reconciler.outcome import ExecutionOutcome
from reconciler.reconcile import decide
from reconciler.storage.db import Database, create_engine
from reconciler.storage.replica_store import ReplicaStore

# The issue asks for a minute; LOCK_RACE_SECONDS shortens it for a quick local run.
RACE_SECONDS = float(os.environ.get("LOCK_RACE_SECONDS", "60"))
STRATEGIES = 40


async def no_check(code: str) -> str | None:
    return None


def deadlocks(conn: psycopg.Connection) -> int:
    (count,) = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(count)


@pytest.mark.slow
def test_claims_completions_and_reconcile_passes_race_without_deadlock(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    for i in range(STRATEGIES):
        pg_conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
            " VALUES (%s, 'u', %s, 'x=1', 1)",
            (f"s{i:02d}", f"s{i:02d}"),
        )
    before = deadlocks(pg_conn)
    counts = {"claimed": 0, "recorded": 0, "reconciled": 0, "spec_writes": 0}

    async def main() -> None:
        engine = create_engine(database_url, pool_size=12, pre_ping=False)
        db = Database(engine, conflict_retries=0)  # a deadlock would surface, not be retried away
        stores = [ReplicaStore(db, replica_id=f"r{i}", lease_seconds=30) for i in range(3)]
        for store in stores:
            await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
        deadline = time.monotonic() + RACE_SECONDS

        async def claimer(store: ReplicaStore) -> None:
            while time.monotonic() < deadline:
                claimed = await store.claim(5)
                counts["claimed"] += len(claimed.claims)
                if claimed.claims:
                    done = await store.complete_many(
                        [(c.fence, ExecutionOutcome(status="succeeded", duration=0.01)) for c in claimed.claims]
                    )
                    counts["recorded"] += sum(1 for c in done.values() if c.recorded)
                await asyncio.sleep(0)

        async def reconciler(store: ReplicaStore) -> None:
            while time.monotonic() < deadline:
                report = await store.reconcile(decide, no_check, batch=STRATEGIES)
                counts["reconciled"] += report.updated
                await store.heartbeat(mark_lost=True)

        async def api_writer() -> None:
            # Spec writes, as the API does them: a generation bump on some strategies, each its own
            # transaction, so the passes always find something to reconcile.
            rng = random.Random(7)
            while time.monotonic() < deadline:
                picked = sorted(rng.sample(range(STRATEGIES), 8))

                async def work(conn, picked: list[int] = picked) -> None:  # type: ignore[no-untyped-def]
                    for i in picked:
                        await conn.execute(
                            text(
                                "UPDATE strategies SET generation = generation + 1, execution_interval = :n,"
                                " updated_at = now() WHERE strategy_id = :s"
                            ),
                            {"s": f"s{i:02d}", "n": rng.choice((1, 2))},
                        )

                await db.run(work)
                counts["spec_writes"] += len(picked)
                await asyncio.sleep(0.01)

        tasks = [claimer(s) for s in stores] + [reconciler(s) for s in stores] + [api_writer(), api_writer()]
        try:
            await asyncio.gather(*tasks)
        finally:
            await db.close_lanes()
            await engine.dispose()

    asyncio.run(main())
    assert deadlocks(pg_conn) - before == 0, counts
    # The race really raced: every kind of statement ran many times on the same 40 strategies.
    assert counts["claimed"] > STRATEGIES and counts["recorded"] > STRATEGIES, counts
    assert counts["reconciled"] > STRATEGIES and counts["spec_writes"] > STRATEGIES, counts
    # Nothing was left half-done: no strategy points at an execution that is not running.
    (dangling,) = pg_conn.execute(
        "SELECT count(*) FROM strategy_status st LEFT JOIN executions e ON e.execution_id = st.running_execution_id"
        " WHERE st.running_execution_id IS NOT NULL AND e.status IS DISTINCT FROM 'running'"
    ).fetchone()
    assert dangling == 0


def test_a_claim_holding_a_status_row_and_a_reconcile_pass_do_not_deadlock(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """The exact interleaving of the deadlock, made deterministic with two sessions.

    A claim has locked a status row (its first step) when a spec write makes the strategy unreconciled
    and a reconcile pass locks the spec row and then waits for that status row. The claim's INSERT of
    the execution then needs FOR KEY SHARE on the spec row: with the pass holding FOR UPDATE that was a
    cycle; with FOR NO KEY UPDATE the claim goes through and the pass follows.
    """
    pg_conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval)"
        " VALUES ('s1', 'u', 's1', 'x=1', 5)"
    )
    pg_conn.execute(
        "INSERT INTO strategy_status (strategy_id, status, observed_generation) VALUES ('s1', 'running', 1)"
    )
    before = deadlocks(pg_conn)

    async def main() -> None:
        engine = create_engine(database_url, pool_size=4, pre_ping=False)
        db = Database(engine, conflict_retries=0)
        store = ReplicaStore(db, replica_id="r1", lease_seconds=30)
        claim_holds_row = asyncio.Event()
        pass_is_waiting = asyncio.Event()

        async def claim_like(conn) -> None:  # type: ignore[no-untyped-def]
            await conn.execute(text("SELECT 1 FROM strategy_status WHERE strategy_id = 's1' FOR UPDATE SKIP LOCKED"))
            claim_holds_row.set()
            await pass_is_waiting.wait()
            await conn.execute(
                text(
                    # As a claim does: the execution and its strategy's in-flight pointer in one statement.
                    "WITH e AS (INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, replica_id,"
                    " lease_expires_at) VALUES ('s1', 'schedule', now(), 1, 'r1', now() + interval '30 s')"
                    " RETURNING execution_id)"
                    " UPDATE strategy_status SET running_execution_id = (SELECT execution_id FROM e)"
                    " WHERE strategy_id = 's1'"
                )
            )

        async def spec_write_then_pass() -> None:
            await claim_holds_row.wait()
            await db.run(
                lambda conn: conn.execute(text("UPDATE strategies SET generation = 2 WHERE strategy_id = 's1'"))
            )
            reconcile = asyncio.create_task(store.reconcile(decide, no_check))
            # The pass now holds the spec row and waits for the status row.
            for _ in range(200):
                (waiting,) = pg_conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()
                if waiting:
                    break
                await asyncio.sleep(0.01)
            pass_is_waiting.set()
            await reconcile

        try:
            await asyncio.wait_for(asyncio.gather(db.run(claim_like), spec_write_then_pass()), timeout=30)
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert deadlocks(pg_conn) - before == 0
    assert pg_conn.execute("SELECT observed_generation FROM strategy_status").fetchone() == (2,)
    assert pg_conn.execute("SELECT count(*) FROM executions").fetchone() == (1,)
