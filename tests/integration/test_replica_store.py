"""The replica's statements against a real PostgreSQL: reconcile, claims, outcomes, leases, retention."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest

from reconciler.outcome import ExecutionOutcome
from reconciler.reconcile import decide
from reconciler.storage.db import Database, create_engine
from reconciler.storage.replica_store import ReplicaStore

T = TypeVar("T")


async def python_check(code: str) -> str | None:
    try:
        compile(code, "<strategy>", "exec")
    except SyntaxError as exc:
        return f"line {exc.lineno}: {exc.msg}"
    return None


def run(database_url: str, work: Callable[..., Awaitable[T]], replicas: int = 1, lease: float = 30.0) -> T:
    async def main() -> T:
        engine = create_engine(database_url, pool_size=4)
        stores = [ReplicaStore(Database(engine), replica_id=f"r{i}", lease_seconds=lease) for i in range(replicas)]
        try:
            for store in stores:
                await store.register(hostname="h", pid=1, slots=5, version="t", layers={})
            return await work(*stores)
        finally:
            for store in stores:
                await store.db.close_lanes()
            await engine.dispose()

    return asyncio.run(main())


async def _claims(store: ReplicaStore, slots: int) -> list[Any]:
    return (await store.claim(slots)).claims


def deploy(conn: psycopg.Connection, strategy_id: str, interval: int = 5, code: str = "x = 1", **spec: Any) -> None:
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, desired_state) "
        "VALUES (%s, 'u1', %s, %s, %s, %s)",
        (strategy_id, strategy_id, code, interval, spec.get("desired_state", "running")),
    )


def status_of(conn: psycopg.Connection, strategy_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM strategy_status WHERE strategy_id = %s", (strategy_id,)).fetchone()
    assert row is not None
    names = [d.name for d in conn.execute("SELECT * FROM strategy_status LIMIT 0").description]
    return dict(zip(names, row, strict=True))


def ok(duration: float = 0.01, **fields: Any) -> ExecutionOutcome:
    return ExecutionOutcome(status="succeeded", duration=duration, **fields)


def test_reconcile_schedules_a_running_strategy_due_now(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")
    report = run(database_url, lambda s: s.reconcile(decide, python_check))
    assert (report.examined, report.updated, report.finalized) == (1, 1, 0)
    status = status_of(pg_conn, "s1")
    assert status["status"] == "running"
    assert status["observed_generation"] == 1
    assert status["next_execution_at"] == status["schedule_anchor_at"]
    assert status["schedule_interval"] == 5
    # A second pass finds nothing to do.
    assert run(database_url, lambda s: s.reconcile(decide, python_check)).examined == 0


def test_a_pass_counts_the_unreconciled_strategies_another_pass_holds(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """What the loop's look-again rests on: a pass that SKIP LOCKED passed over says how many it left."""
    for strategy_id in ("held", "free"):
        deploy(pg_conn, strategy_id)
    holder = psycopg.connect(pg_conn.info.dsn)  # another replica's pass, stuck holding the spec row
    try:
        holder.execute("SELECT 1 FROM strategies WHERE strategy_id = 'held' FOR NO KEY UPDATE")
        report = run(database_url, lambda s: s.reconcile(decide, python_check))
        assert (report.examined, report.updated, report.held) == (1, 1, 1)
        report = run(database_url, lambda s: s.reconcile(decide, python_check))  # it locks nothing now
        assert (report.examined, report.held) == (0, 1)
    finally:
        holder.rollback()  # its session ends: the row is free
        holder.close()
    report = run(database_url, lambda s: s.reconcile(decide, python_check))
    assert (report.examined, report.updated, report.held) == (1, 1, 0)
    assert status_of(pg_conn, "held")["status"] == "running"

    # A strategy left unreconciled by the pass that locked it (a deletion waiting for its execution) is
    # not held by anyone else: nothing to look again for.
    async def delete_while_running(store: ReplicaStore) -> list[Any]:
        assert len((await store.claim(5)).claims) == 2
        pg_conn.execute("UPDATE strategies SET delete_requested_at = now(), generation = generation + 1")
        return [await store.reconcile(decide, python_check) for _ in range(2)]

    reports = run(database_url, delete_while_running)
    assert [(r.examined, r.updated, r.finalized, r.held) for r in reports] == [(2, 2, 0, 0), (2, 0, 0, 0)]


def test_a_pass_checks_no_code_of_rows_another_pass_holds_and_each_source_once(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """Every replica wakes for every write; those that find the rows taken stop at the lock, without
    checking the code. The one that gets them checks a source once, outside the locking transaction."""
    deploy(pg_conn, "s1", code="RESULT = 1")
    checked: list[str] = []

    async def counting(code: str) -> str | None:
        checked.append(code)
        return await python_check(code)

    holder = psycopg.connect(pg_conn.info.dsn)

    async def work(store: ReplicaStore) -> list[tuple[int, int, int]]:
        reports = []
        holder.execute("SELECT 1 FROM strategies WHERE strategy_id = 's1' FOR NO KEY UPDATE")
        reports.append(await store.reconcile(decide, counting))  # taken: nothing checked
        holder.rollback()
        reports.append(await store.reconcile(decide, counting))  # checked, then decided
        for state in ("stopped", "running"):  # the same code again: its verdict is known
            pg_conn.execute(
                "UPDATE strategies SET desired_state = %s, generation = generation + 1, updated_at = now()",
                (state,),
            )
            reports.append(await store.reconcile(decide, counting))
        return [(r.examined, r.updated, r.held) for r in reports]

    try:
        assert run(database_url, work) == [(0, 0, 1), (1, 1, 0), (1, 1, 0), (1, 1, 0)]
    finally:
        holder.close()
    assert checked == ["RESULT = 1"]
    assert status_of(pg_conn, "s1")["status"] == "running"


def test_reconcile_puts_code_that_no_longer_compiles_in_error(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "bad", code="def f(:\n  pass")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    status = status_of(pg_conn, "bad")
    assert status["status"] == "error"
    assert "line 1" in status["status_reason"]
    assert status["next_execution_at"] is None


def test_claim_runs_each_due_strategy_once_and_advances_the_grid(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    for i in range(3):
        deploy(pg_conn, f"s{i}")

    async def work(store: ReplicaStore) -> tuple[list[Any], list[Any]]:
        await store.reconcile(decide, python_check)
        first = (await store.claim(5)).claims
        second = (await store.claim(5)).claims  # all three are in flight: nothing more to claim
        return first, second

    first, second = run(database_url, work)
    assert sorted(c.strategy_id for c in first) == ["s0", "s1", "s2"]
    assert second == []
    for claim in first:
        status = status_of(pg_conn, claim.strategy_id)
        assert status["running_execution_id"] == claim.execution_id
        assert status["next_execution_at"] == claim.scheduled_for + timedelta(seconds=5)
    rows = pg_conn.execute("SELECT count(*) FROM executions WHERE status = 'running' AND replica_id = 'r0'")
    assert rows.fetchone() == (3,)


def test_a_paper_claim_carries_its_risk_view_and_wallet(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "paper")
    pg_conn.execute("""UPDATE strategies SET risk = '{"max_daily_loss": 5}' WHERE strategy_id = 'paper'""")
    pg_conn.execute(
        "INSERT INTO paper_balances (strategy_id, currency, balance, locked_balance) VALUES ('paper', 'USDT', 90, 10)"
    )

    async def work(store: ReplicaStore) -> list[Any]:
        await store.reconcile(decide, python_check)
        return (await store.claim(5)).claims

    [claim] = run(database_url, work)
    assert claim.claimed_view is not None
    view, held = claim.claimed_view
    assert view.risk == {"max_daily_loss": 5} and view.status == "running"
    assert held == {"USDT": Decimal(100)}  # available plus locked, as the closing read counts it


def test_claim_takes_at_most_the_free_slots_oldest_first(database_url: str, pg_conn: psycopg.Connection) -> None:
    for i in range(8):
        deploy(pg_conn, f"s{i}")

    async def work(store: ReplicaStore) -> list[Any]:
        await store.reconcile(decide, python_check)
        return (await store.claim(5)).claims

    run(database_url, lambda s: s.reconcile(decide, python_check))
    # Make s7 the most overdue: it must be among the first claimed.
    pg_conn.execute(
        "UPDATE strategy_status SET next_execution_at = next_execution_at - interval '1 hour', "
        "schedule_anchor_at = schedule_anchor_at - interval '1 hour' WHERE strategy_id = 's7'"
    )
    claims = run(database_url, lambda s: _claims(s, 5))
    assert len(claims) == 5
    # (Claims come back in the order of their ticks: s7's, coalesced to its latest grid point, is not first.)
    assert "s7" in {claim.strategy_id for claim in claims}
    waiting = pg_conn.execute(
        "SELECT count(*) FROM strategy_status WHERE running_execution_id IS NULL AND next_execution_at <= now()"
    ).fetchone()
    assert waiting == (3,)


def test_missed_ticks_are_coalesced_and_counted(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "late", interval=10)
    run(database_url, lambda s: s.reconcile(decide, python_check))
    # The replica was away for 95 s: ticks at -95, -85, ..., -5 fell due; only the latest one runs.
    pg_conn.execute(
        "UPDATE strategy_status SET schedule_anchor_at = now() - interval '95 seconds', "
        "next_execution_at = now() - interval '95 seconds'"
    )
    (claim,) = run(database_url, lambda s: _claims(s, 5))
    status = status_of(pg_conn, "late")
    anchor = status["schedule_anchor_at"]
    assert claim.scheduled_for == anchor + timedelta(seconds=90)
    assert status["next_execution_at"] == anchor + timedelta(seconds=100)
    assert status["missed_executions"] == 9


def test_a_tick_that_already_ran_is_skipped_and_the_claim_goes_on(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """A schedule laid again on a grid in the past (a short pause that ran out, a status row deleted
    by hand) lands on a tick that already has its execution. The claim skips that tick to the next
    grid point and still claims every other due strategy; before, the unique key failed the whole
    statement, for every strategy and every replica, until the next grid point."""
    deploy(pg_conn, "again", interval=60)

    async def first_run(store: ReplicaStore) -> list[Any]:
        await store.reconcile(decide, python_check)
        claims = (await store.claim(5)).claims
        for claim in claims:
            assert (await store.complete(claim.fence, ok())).recorded
        return claims

    ran = {claim.strategy_id: claim for claim in run(database_url, first_run)}
    # "again" is put back on the tick it just ran, as a resume anchored at its spec's change does;
    # "other", deployed since, falls due with it.
    pg_conn.execute("UPDATE strategy_status SET next_execution_at = schedule_anchor_at WHERE strategy_id = 'again'")
    deploy(pg_conn, "other", interval=60)

    async def second_run(store: ReplicaStore) -> list[Any]:
        await store.reconcile(decide, python_check)
        return (await store.claim(5)).claims

    claims = run(database_url, second_run)
    assert [claim.strategy_id for claim in claims] == ["other"]
    again = status_of(pg_conn, "again")
    assert again["running_execution_id"] is None
    assert again["next_execution_at"] == ran["again"].scheduled_for + timedelta(seconds=60)
    assert again["missed_executions"] == 0
    ticks = pg_conn.execute(
        "SELECT count(*), count(DISTINCT scheduled_for) FROM executions WHERE strategy_id = 'again'"
    )
    assert ticks.fetchone() == (1, 1)


def test_a_halted_strategy_redeployed_stays_halted_and_the_pass_goes_on(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """A redeploy of a halted strategy is acknowledged (observed_generation follows) and the halt
    stays. The status upsert once proposed a halted row without halted_at, which the check constraint
    refused before the conflict was seen: every pass failed, on every replica, for every strategy."""
    deploy(pg_conn, "halted")
    deploy(pg_conn, "bystander")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    pg_conn.execute(
        "UPDATE strategy_status SET status = 'halted', halted_at = now() - interval '1 minute', "
        "halt_limit = 'max_consecutive_failures', schedule_anchor_at = NULL, schedule_interval = NULL, "
        "next_execution_at = NULL WHERE strategy_id = 'halted'"
    )
    before = status_of(pg_conn, "halted")["halted_at"]
    pg_conn.execute("UPDATE strategies SET code = 'x = 2', generation = generation + 1 WHERE strategy_id = 'halted'")
    pg_conn.execute(
        "UPDATE strategies SET desired_state = 'stopped', generation = generation + 1 WHERE strategy_id = 'bystander'"
    )
    report = run(database_url, lambda s: s.reconcile(decide, python_check))
    assert report.examined == 2
    halted = status_of(pg_conn, "halted")
    assert (halted["status"], halted["observed_generation"], halted["halted_at"]) == ("halted", 2, before)
    assert halted["halt_limit"] == "max_consecutive_failures"
    assert status_of(pg_conn, "bystander")["status"] == "stopped"


def test_complete_records_outcome_stats_and_state(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")

    async def work(store: ReplicaStore) -> tuple[bool, bool]:
        await store.reconcile(decide, python_check)
        (claim,) = (await store.claim(5)).claims
        first = await store.complete(claim.fence, ok(0.5, output="hi\n", result={"a": 1}, state={"n": 1}))
        again = await store.complete(claim.fence, ok(0.7))
        return first.recorded, again.recorded

    first, again = run(database_url, work)
    assert (first, again) == (True, False)  # exactly one recorded outcome
    execution = pg_conn.execute(
        "SELECT status, output, result, duration, finished_at - started_at FROM executions"
    ).fetchone()
    assert execution[:4] == ("succeeded", "hi\n", {"a": 1}, 0.5)
    assert execution[4] == timedelta(seconds=0.5)
    status = status_of(pg_conn, "s1")
    assert (status["execution_count"], status["successful_executions"], status["failed_executions"]) == (1, 1, 0)
    assert status["state"] == {"n": 1}
    assert status["avg_execution_time"] == pytest.approx(0.5)
    assert status["running_execution_id"] is None


def test_an_outcome_sent_again_is_reported_recorded_once_with_its_wake_ups(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    """A batch run again (its commit's reply was lost) finds its own outcome recorded: reported
    recorded, with the run request that waits for it, and counted once; an execution marked lost in
    between (a new token) is still fenced off."""
    deploy(pg_conn, "s1")
    deploy(pg_conn, "s2")

    async def work(store: ReplicaStore) -> dict[str, tuple[bool, bool]]:
        await store.reconcile(decide, python_check)
        claims = {claim.strategy_id: claim for claim in (await store.claim(5)).claims}
        done, lost = claims["s1"], claims["s2"]
        assert (await store.complete(done.fence, ok(0.5, state={"n": 1}))).recorded
        pg_conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('s1')")
        pg_conn.execute(
            "UPDATE executions SET lease_expires_at = now() - interval '1 second' WHERE execution_id = %s",
            (lost.execution_id,),
        )
        assert (await store.heartbeat(mark_lost=True)).lost == [lost.execution_id]
        again = await store.complete_many([(done.fence, ok(0.5, state={"n": 1})), (lost.fence, ok(0.5))])
        return {
            claim.strategy_id: (again[claim.execution_id].recorded, again[claim.execution_id].run_requested)
            for claim in (done, lost)
        }

    assert run(database_url, work) == {"s1": (True, True), "s2": (False, False)}
    status = status_of(pg_conn, "s1")
    assert (status["execution_count"], status["state"]) == (1, {"n": 1})


def test_failed_outcome_keeps_state_and_records_error(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")
    pg_conn.execute("INSERT INTO strategy_status (strategy_id, state) VALUES ('s1', '{\"kept\": true}')")

    async def work(store: ReplicaStore) -> None:
        await store.reconcile(decide, python_check)
        (claim,) = (await store.claim(5)).claims
        await store.complete(claim.fence, ExecutionOutcome(status="failed", duration=0.1, error="boom"))

    run(database_url, work)
    status = status_of(pg_conn, "s1")
    assert status["state"] == {"kept": True}
    assert status["last_error"] == "boom"
    assert (status["execution_count"], status["failed_executions"]) == (1, 1)


def test_concurrent_claims_get_disjoint_sets(database_url: str, pg_conn: psycopg.Connection) -> None:
    for i in range(40):
        deploy(pg_conn, f"s{i:02d}")

    async def work(*stores: ReplicaStore) -> list[list[Any]]:
        await stores[0].reconcile(decide, python_check)
        return [result.claims for result in await asyncio.gather(*(store.claim(10) for store in stores))]

    results = run(database_url, work, replicas=4)
    claimed = [c.strategy_id for result in results for c in result]
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


def test_manual_run_requests_are_claimed_once_per_strategy(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1", desired_state="stopped")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    # A strategy holds one pending request (migration 0012); requests made while it waits count in it.
    pg_conn.execute("INSERT INTO run_requests (strategy_id, request_count) VALUES ('s1', 2)")
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg_conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('s1')")
    claims = run(database_url, lambda s: _claims(s, 5))
    assert [(c.strategy_id, c.trigger) for c in claims] == [("s1", "manual")]
    linked = pg_conn.execute(
        "SELECT request_count FROM run_requests WHERE execution_id = %s", (claims[0].execution_id,)
    ).fetchall()
    assert linked == [(2,)]
    assert run(database_url, lambda s: _claims(s, 5)) == []
    # Claimed, it is no longer pending: the next request is a row of its own.
    pg_conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('s1')")


def test_halted_strategies_requests_do_not_hold_off_the_others(database_url: str, pg_conn: psycopg.Connection) -> None:
    """The oldest pending requests belong to halted strategies, more of them than the claim looks
    at (:slots + 32): a later request of a runnable strategy is still claimed, and theirs wait."""
    halted = [f"h{i:02}" for i in range(40)]
    for sid in [*halted, "free"]:
        deploy(pg_conn, sid, desired_state="stopped")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    pg_conn.execute(
        "UPDATE strategy_status SET status = 'halted', halted_at = now() WHERE strategy_id = ANY(%s)", (halted,)
    )
    pg_conn.execute(
        "INSERT INTO run_requests (strategy_id, requested_at) SELECT unnest(%s::text[]), now() - interval '1 minute'",
        (halted,),
    )
    pg_conn.execute("INSERT INTO run_requests (strategy_id) VALUES ('free')")
    claims = run(database_url, lambda s: _claims(s, 5))
    assert [(c.strategy_id, c.trigger) for c in claims] == [("free", "manual")]
    waiting = pg_conn.execute("SELECT count(*) FROM run_requests WHERE claimed_at IS NULL").fetchone()
    assert waiting == (40,)


def test_expired_leases_of_dead_replicas_are_marked_lost(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")

    async def work(dead: ReplicaStore, alive: ReplicaStore) -> Any:
        await dead.reconcile(decide, python_check)
        (claim,) = (await dead.claim(5)).claims
        assert (await alive.heartbeat(mark_lost=True)).lost == []  # lease still valid
        return claim

    claim = run(database_url, work, replicas=2)
    pg_conn.execute("UPDATE replicas SET lease_expires_at = now() - interval '1 second' WHERE replica_id = 'r0'")
    pg_conn.execute("UPDATE executions SET lease_expires_at = now() - interval '1 second'")

    async def later(dead: ReplicaStore, alive: ReplicaStore) -> tuple[list[Any], bool]:
        # Both registered again by `run`; only the lease timestamps matter, so expire r0 once more.
        async with alive.db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(
                text("UPDATE replicas SET lease_expires_at = now() - interval '1 s' WHERE replica_id='r0'")
            )
        lost = (await alive.heartbeat(mark_lost=True)).lost
        late = await dead.complete(claim.fence, ok())
        return lost, late.recorded

    lost, late = run(database_url, later, replicas=2)
    assert lost == [claim.execution_id]
    assert late is False  # the dead replica's late answer does not overwrite the recorded outcome
    row = pg_conn.execute("SELECT status, error FROM executions").fetchone()
    assert row[0] == "lost" and "r0" in row[1]
    status = status_of(pg_conn, "s1")
    assert status["running_execution_id"] is None and status["failed_executions"] == 1


def test_stop_then_delete_finalizes_once_nothing_is_in_flight(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")

    async def work(store: ReplicaStore) -> Any:
        await store.reconcile(decide, python_check)
        return ((await store.claim(5)).claims)[0]

    claim = run(database_url, work)
    pg_conn.execute("UPDATE strategies SET delete_requested_at = now(), generation = generation + 1")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    assert status_of(pg_conn, "s1")["status"] == "deleting"

    async def finish(store: ReplicaStore) -> Any:
        await store.complete(claim.fence, ok())
        return await store.reconcile(decide, python_check)

    report = run(database_url, finish)
    assert report.finalized == 1
    assert pg_conn.execute("SELECT count(*) FROM strategies").fetchone() == (0,)
    assert pg_conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


def test_interval_change_applies_from_the_next_tick(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1", interval=60)
    run(database_url, lambda s: s.reconcile(decide, python_check))
    before = status_of(pg_conn, "s1")
    pg_conn.execute("UPDATE strategies SET execution_interval = 10, generation = 2")
    run(database_url, lambda s: s.reconcile(decide, python_check))
    after = status_of(pg_conn, "s1")
    # The next tick was one old interval (60 s) after the last; one new interval (10 s) after it is
    # already past, so the new grid is anchored at its latest point before now: here the first tick,
    # due since the deploy and not yet run, which stays due as it was.
    assert after["next_execution_at"] == before["next_execution_at"] == after["schedule_anchor_at"]
    assert after["schedule_interval"] == 10 and after["observed_generation"] == 2


def test_prune_deletes_old_finished_executions_in_batches(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")
    pg_conn.execute(
        "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, finished_at) "
        "SELECT 's1', 'schedule', now() - make_interval(days => 10, secs => g), 1, 'succeeded', 'r', "
        "now() - make_interval(days => 10) FROM generate_series(1, 25) g"
    )
    pg_conn.execute(
        "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, finished_at) "
        "VALUES ('s1', 'schedule', now(), 1, 'succeeded', 'r', now())"
    )
    deleted = run(database_url, lambda s: s.prune(retention_seconds=7 * 86400, batch=10))
    assert deleted == 10
    assert pg_conn.execute("SELECT count(*) FROM executions").fetchone() == (16,)


def test_completion_says_when_a_run_request_waited_for_it(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1")

    async def work(store: ReplicaStore) -> tuple[bool, list[str], bool]:
        await store.reconcile(decide, python_check)
        (tick,) = (await store.claim(5)).claims
        async with store.db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text("INSERT INTO run_requests (strategy_id) VALUES ('s1')"))
        # The strategy is busy: the request waits, even with slots free.
        busy = (await store.claim(5)).claims
        completion = await store.complete(tick.fence, ok())
        manual = (await store.claim(5, requests=completion.run_requested)).claims
        return completion.run_requested, [c.trigger for c in busy + manual], completion.recorded

    run_requested, triggers, recorded = run(database_url, work)
    assert recorded and run_requested
    assert triggers == ["manual"]


async def _claim_three_the_last_lost(store: ReplicaStore) -> list[Any]:
    """Claims s0-s2's executions, then marks s2's lost, as another replica would before this one answers."""
    await store.reconcile(decide, python_check)
    claims = sorted((await store.claim(5)).claims, key=lambda c: c.strategy_id)
    async with store.db.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(
            text("UPDATE executions SET status = 'lost', finished_at = now() WHERE execution_id = :e"),
            {"e": claims[2].execution_id},
        )
    return claims


def test_a_batch_of_outcomes_is_recorded_in_one_statement(database_url: str, pg_conn: psycopg.Connection) -> None:
    for i in range(3):
        deploy(pg_conn, f"s{i}")

    async def work(store: ReplicaStore) -> tuple[list[Any], dict[Any, Any]]:
        claims = await _claim_three_the_last_lost(store)
        outcomes = [
            (claims[0].fence, ok(0.2, output="a\x00b", state={"k": [1, 2]})),
            (claims[1].fence, ExecutionOutcome(status="timed_out", duration=2.0, error="wall clock")),
            (claims[2].fence, ok(0.1)),
        ]
        return claims, await store.complete_many(outcomes)

    claims, done = run(database_url, work)
    assert [done[c.execution_id].recorded for c in claims] == [True, True, False]
    rows = dict(pg_conn.execute("SELECT strategy_id, status FROM executions").fetchall())
    assert rows == {"s0": "succeeded", "s1": "timed_out", "s2": "lost"}
    assert pg_conn.execute("SELECT output FROM executions WHERE strategy_id = 's0'").fetchone() == ("a\\x00b",)
    s0, s1 = status_of(pg_conn, "s0"), status_of(pg_conn, "s1")
    assert s0["state"] == {"k": [1, 2]} and s0["successful_executions"] == 1
    assert (s1["failed_executions"], s1["last_error"], s1["running_execution_id"]) == (1, "wall clock", None)
    # The lost one was not counted twice by the late answer.
    assert status_of(pg_conn, "s2")["execution_count"] == 0


def test_outcomes_carry_their_times_and_wallet_values_under_the_fence(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    for i in range(3):
        deploy(pg_conn, f"s{i}")

    async def work(store: ReplicaStore) -> list[Any]:
        claims = await _claim_three_the_last_lost(store)
        outcomes = [(claim.fence, ok(0.5)) for claim in claims]
        wallets = [(Decimal("1000.5"), "USDT"), None, (Decimal(7), "USDT")]
        # s0's process ended 2 s before this batch: its times are the run's, not the statement's.
        await store.complete_many(outcomes, ended_ago=[2.0, 0.0, 0.0], wallets=wallets)
        return claims

    run(database_url, work)
    rows = {
        row[0]: row[1:]
        for row in pg_conn.execute(
            "SELECT strategy_id, wallet_value, wallet_currency, extract(epoch FROM now() - finished_at), "
            "extract(epoch FROM finished_at - started_at) FROM executions"
        ).fetchall()
    }
    assert rows["s0"][:2] == (Decimal("1000.5"), "USDT")
    assert rows["s1"][:2] == (None, None)
    # The one fenced off (marked lost meanwhile) got nothing of the late answer.
    assert rows["s2"][:2] == (None, None)
    assert 2.0 <= rows["s0"][2] < 60 and rows["s1"][2] < rows["s0"][2]
    assert abs(rows["s0"][3] - Decimal("0.5")) < Decimal("0.001")


def test_claim_reads_when_the_next_execution_falls_due(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1", interval=60)

    async def work(store: ReplicaStore) -> tuple[Any, Any, Any, Any, Any]:
        nothing = await store.claim(5)  # not reconciled yet: nothing scheduled
        await store.reconcile(decide, python_check)
        first = await store.claim(5)
        after = await store.claim(5)  # in flight now: the next tick is not claimable either
        completion = await store.complete(first.claims[0].fence, ok())
        done = await store.claim(5)
        return nothing, first, after, completion, done

    nothing, first, after, completion, done = run(database_url, work)
    assert (nothing.claims, nothing.seconds_until_due) == ([], None)
    assert len(first.claims) == 1 and first.seconds_until_due is None
    # The only strategy is busy: the replica running it looks again when it records the outcome.
    assert after.claims == [] and after.seconds_until_due is None
    # Recording it says when its next tick falls due, so the replica claims then rather than at once...
    assert completion.recorded and 58 < completion.next_due_in <= 60
    # ...and a claim reads the same: its next tick, one interval after the first.
    assert done.claims == [] and 58 < done.seconds_until_due <= 60


def test_completion_of_a_stopped_strategy_says_no_tick_is_due(database_url: str, pg_conn: psycopg.Connection) -> None:
    deploy(pg_conn, "s1", interval=60)

    async def work(store: ReplicaStore) -> Any:
        await store.reconcile(decide, python_check)
        (claim,) = (await store.claim(5)).claims
        async with store.db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text("UPDATE strategies SET desired_state = 'stopped', generation = generation + 1"))
        await store.reconcile(decide, python_check)  # stopped while its execution runs
        return await store.complete(claim.fence, ok())

    completion = run(database_url, work)
    assert completion.recorded and completion.next_due_in is None


def test_a_pass_that_schedules_tells_the_other_replicas(database_url: str, pg_conn: psycopg.Connection) -> None:
    from reconciler.storage.db import libpq_url
    from reconciler.storage.statements import replica as queries

    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {queries.NOTIFY_CHANNEL}")
        deploy(pg_conn, "s1")
        deploy(pg_conn, "stopped", desired_state="stopped")
        run(database_url, lambda s: s.reconcile(decide, python_check))
        payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=3)]
        # Two from the trigger (desired state), one from the pass: it scheduled s1. It names the replica
        # that sent it, which ignores its own (it claims right after its pass anyway).
        assert sorted(payloads) == sorted(["s1", "stopped", f"{queries.SCHEDULE_CHANGED} r0"])
        # A pass that schedules nothing new says nothing.
        pg_conn.execute("UPDATE strategies SET name = 'renamed', generation = 2 WHERE strategy_id = 'stopped'")
        run(database_url, lambda s: s.reconcile(decide, python_check))
        assert [n.payload for n in listener.notifies(timeout=1, stop_after=2)] == ["stopped"]
