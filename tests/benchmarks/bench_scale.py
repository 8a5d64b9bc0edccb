"""Scale benchmark: the database side of the north star (issue 14), one PostgreSQL, N replicas.

Not part of the test run. Run it with (the full run loads both cores for a quarter of an hour):

    .venv/bin/python tests/benchmarks/bench_scale.py                      # 1M strategies, 1,2,4,8 replicas
    .venv/bin/python tests/benchmarks/bench_scale.py --quick              # 10k strategies, 20 s, 1,2 replicas

What it does, in one run against one durable PostgreSQL it starts on this machine (the embedded
one, fsync on, tuned: `TUNED` below):

1. Loads the strategies set-based (INSERT ... SELECT generate_series): the spec rows the API writes
   for a deploy, and the status rows the reconcile pass writes for them (running, observed, anchored
   at their first tick), ticks spread evenly over the interval (300 s), so that the demand is
   strategies / interval executions a second (3,333/s at 1M).
2. Claim cost against the number of strategies: a second database with `--small` strategies and an
   interval scaled down in proportion (the same demand a second), one replica against each,
   alternating small, large, small, large: the claim statement's latency, its server-side mean, and
   the shared buffers it touches (EXPLAIN ANALYZE in a rolled-back transaction).
3. For each N in `--replicas`: the schedule set afresh (first ticks from a few seconds ahead), N
   replica processes with the null sandbox (tests/benchmarks/null_replica.py: real claims, outcome
   records, leases, NOTIFY, broker sessions; executions that return at once), a warm-up, then a
   window of `--seconds` in which it measures executions a second, statement and transaction
   latency (timed in the replicas around each statement; server-side means from
   pg_stat_statements), schedule lag (started_at - scheduled_for, from the executions table), CPU of
   PostgreSQL and of the replicas (from /proc, against the whole machine), WAL bytes per execution
   (pg_current_wal_lsn delta), and the backlog of due ticks left unclaimed at the end.

Prints a table and writes tests/benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from reconciler.crypto import generate_key  # noqa: E402
from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.storage.db import libpq_url  # noqa: E402
from reconciler.storage.migrate import migrate  # noqa: E402
from reconciler.storage.statements import replica as replica_statements  # noqa: E402
from tests.benchmarks import statements_before  # noqa: E402
from tests.benchmarks.bench_reconciler import stop_processes  # noqa: E402

RESULTS = PROJECT_ROOT / "tests" / "benchmarks" / "results"

# Durable (fsync, synchronous_commit and full_page_writes stay on) and sized for a write-heavy queue
# on a small machine: memory for the whole working set, checkpoints far apart (fewer full-page
# images in the WAL), compressed full-page images, WAL written in large buffers, autovacuum that
# keeps up with the status table's churn, pg_stat_statements for the server's side of each statement.
TUNED = (
    "shared_buffers=2GB",
    "effective_cache_size=8GB",
    "work_mem=16MB",
    "maintenance_work_mem=512MB",
    "wal_buffers=64MB",
    "max_wal_size=16GB",
    "min_wal_size=2GB",
    "checkpoint_timeout=30min",
    "checkpoint_completion_target=0.9",
    "random_page_cost=1.1",
    "autovacuum_naptime=10s",
    "autovacuum_vacuum_cost_limit=2000",
    "autovacuum_vacuum_scale_factor=0.05",
    "autovacuum_analyze_scale_factor=0.05",
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.max=1000",
    "pg_stat_statements.track_planning=on",
    "track_io_timing=on",
    "log_min_messages=warning",
)

TRIVIAL = "RESULT = 1\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- loading ---------------------------------------------------------------------------------------


def load(conn: psycopg.Connection, count: int, interval: int) -> float:
    """Write `count` strategies as the API and the reconcile pass write them; seconds it took."""
    started = time.monotonic()
    with conn.transaction():
        # The bulk is not a burst of user deploys: no NOTIFY per row, no foreign-key trigger per row
        # (the keys hold by construction). The rows themselves are exactly the product's.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, exchange, "
            "                        reconciled_generation) "
            "SELECT 's' || lpad(i::text, 7, '0'), 'u' || (i %% 10000), 'bench ' || i, %s, %s, 'paper', 1 "
            "FROM generate_series(0, %s - 1) AS i",
            (TRIVIAL, interval, count),
        )
        conn.execute(
            "INSERT INTO strategy_status (strategy_id, status, observed_generation, schedule_anchor_at, "
            "                             schedule_interval, next_execution_at) "
            "SELECT strategy_id, 'running', generation, now(), execution_interval, now() FROM strategies"
        )
    conn.execute("VACUUM (ANALYZE) strategies")
    schedule(conn, count, interval, lead=0.0)
    return time.monotonic() - started


def schedule(conn: psycopg.Connection, count: int, interval: int, lead: float) -> None:
    """First ticks spread evenly over one interval from `lead` seconds ahead, as if each strategy had
    just been deployed at its own moment; nothing in flight, no history (a fresh window)."""
    conn.execute("TRUNCATE executions CASCADE")
    conn.execute(
        "UPDATE strategy_status SET running_execution_id = NULL, "
        "  schedule_anchor_at = now() + make_interval(secs => %(lead)s "
        "       + substr(strategy_id, 2)::int * %(interval)s::float8 / %(count)s), "
        "  next_execution_at = now() + make_interval(secs => %(lead)s "
        "       + substr(strategy_id, 2)::int * %(interval)s::float8 / %(count)s)",
        {"lead": lead, "interval": interval, "count": count},
    )
    conn.execute("VACUUM (ANALYZE) strategy_status")
    conn.execute("CHECKPOINT")


# --- processes and CPU -----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(own CPU, CPU of reaped children) of a process, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def tree_cpu(root: int) -> float:
    """CPU seconds of a process tree: the root's own and reaped children's, plus every live descendant's."""
    total = 0
    first = _stat(root)
    if first is None:
        return 0.0
    total += first[0] + first[1]
    pending = _children(root)
    while pending:
        pid = pending.pop()
        stat = _stat(pid)
        if stat is not None:
            total += stat[0] + stat[1]
            pending.extend(_children(pid))
    return total / CLK_TCK


def _role(pid: int) -> str:
    """What a PostgreSQL process is, from the title it sets: backends by their database, the rest by role."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    title = title.removeprefix("postgres: ").strip()
    for role in ("autovacuum", "walwriter", "checkpointer", "background writer", "logical replication"):
        if title.startswith(role):
            return role
    return "backend" if " " in title and not title.startswith(("startup", "archiver", "io ")) else title


class RoleSampler:
    """PostgreSQL's CPU in a window split by process role (backends, autovacuum, WAL writer, ...).

    Sampled every 0.2 s from /proc: a process that starts and ends between two samples (a short
    autovacuum worker) is missed here but counted in the tree's total, so `unattributed` is reported."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = False
        self._thread: Any = None

    def _sample(self, initial: bool) -> None:
        pending = _children(self.root)
        while pending:
            pid = pending.pop()
            stat = _stat(pid)
            if stat is None:
                continue
            cpu = (stat[0] + stat[1]) / CLK_TCK
            if initial:
                self.first[pid] = cpu
            role = self.last[pid][0] if pid in self.last else _role(pid)
            self.last[pid] = (role, cpu)
            pending.extend(_children(pid))

    def start(self) -> None:
        import threading

        self._sample(initial=True)

        def run() -> None:
            while not self._stop:
                time.sleep(0.2)
                self._sample(initial=False)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop = True
        self._thread.join()
        self._sample(initial=False)
        by_role: dict[str, float] = {}
        for pid, (role, cpu) in self.last.items():
            by_role[role] = by_role.get(role, 0.0) + cpu - self.first.get(pid, 0.0)
        return by_role


def machine_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK, sum(values[:8]) / CLK_TCK


@dataclass
class Replicas:
    url: str
    count: int
    logs: Path
    tag: str
    slots: int
    before: bool = False  # the claim statements as they were (statements_before.py)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")}
        env.update(
            PYTHONPATH=str(PROJECT_ROOT),
            DATABASE_URL=self.url,
            ENCRYPTION_KEY=generate_key("bench"),
            LOG_LEVEL="WARNING",
            MAX_CONCURRENT_STRATEGIES=str(self.slots),
            SHUTDOWN_GRACE_SECONDS="10",
        )
        for i in range(self.count):
            samples = self.logs / f"{self.tag}-{i}.samples.json"
            samples.unlink(missing_ok=True)
            log = (self.logs / f"{self.tag}-{i}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.benchmarks.null_replica",
                        str(samples),
                        *(["--before"] if self.before else []),
                    ],
                    env=env,
                    cwd=PROJECT_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            self.samples.append(samples)

    def cpu(self) -> float:
        return sum(tree_cpu(p.pid) for p in self.processes)

    def stop(self) -> None:
        stop_processes(self.processes)

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def timings(self, start: float, end: float) -> dict[str, list[float]]:
        """Every sample (seconds, or a count) that ended inside [start, end] (wall clock), by name."""
        merged: dict[str, list[float]] = {}
        for path in self.samples:
            if not path.exists():
                continue
            for name, data in json.loads(path.read_text()).items():
                merged.setdefault(name, []).extend(
                    s for t, s in zip(data["ended"], data["seconds"], strict=True) if start <= t <= end
                )
        return merged


def wait_registered(conn: psycopg.Connection, replicas: Replicas, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT count(*) FROM replicas").fetchone()[0] < replicas.count:  # type: ignore[index]
        if time.monotonic() > deadline or any(p.poll() is not None for p in replicas.processes):
            log = (replicas.logs / f"{replicas.tag}-0.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"replicas did not start: {log}")
        time.sleep(0.2)


# --- measuring -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(values: list[float], q: float) -> float | None:
    value = pct(values, q)
    return None if value is None else round(value * 1000, 2)


# Statements by a distinctive piece of their text, for pg_stat_statements (which shows $n for values).
SERVER_NAMES = {
    "claim": "WITH candidates AS",
    "claim_requested": "WITH pending AS",
    "next_due": "SELECT LEAST(",
    "record": "WITH outcome AS",
    "lock_for_outcomes": "SELECT strategy_id FROM strategy_status WHERE strategy_id = ANY",
    "renew_leases": "WITH named AS",
    "mark_lost": "WITH expired AS",
    "unreconciled": "SELECT CASE WHEN s.desired_state",
    "wallet_value": "UPDATE executions SET wallet_value",
    "risk_load": "SELECT s.risk, st.status",
    "paper_balances": "FROM paper_balances",
}


def server_statements(conn: psycopg.Connection, database: str) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT query, calls, total_exec_time, mean_exec_time, shared_blks_hit + shared_blks_read, wal_bytes, "
        "       total_plan_time, plans "
        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = %s ORDER BY total_exec_time DESC",
        (database,),
    ).fetchall()
    named: dict[str, Any] = {}
    top: list[dict[str, Any]] = []
    for query, calls, total, mean, blocks, wal, plan_total, plans in rows:
        flat = " ".join(query.split())
        name = next((n for n, piece in SERVER_NAMES.items() if piece in flat), None)
        entry = {
            "calls": calls,
            "total_ms": round(total, 1),
            "mean_ms": round(mean, 3),
            "blocks_per_call": round(blocks / calls, 1) if calls else None,
            "wal_bytes": int(wal),
            "plans": plans,
            "plan_total_ms": round(plan_total, 1),
        }
        if name is not None and name not in named:
            named[name] = entry
        if len(top) < 10:
            top.append({"query": flat[:90], **entry})
    commits = sum(row[1] for row in rows if row[0].strip().upper() == "COMMIT")
    return {
        "named": named,
        "top": top,
        "exec_ms_total": round(sum(row[2] for row in rows), 1),
        "plan_ms_total": round(sum(row[6] for row in rows), 1),
        "commits": commits,
    }


def explain(conn: psycopg.Connection, statement: str, slots: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of a replica's statement as it sends it, rolled back: its time and the shared
    buffers it touched (which, unlike time, does not depend on the machine), and the rows it returned."""
    sql = re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", statement)
    with conn.transaction(force_rollback=True):
        epoch = conn.execute(
            "INSERT INTO replicas (replica_id, hostname, pid, slots, version, lease_expires_at, epoch) "
            "VALUES ('explain', 'bench', 0, %s, 'bench', now() + interval '1 minute', 1) RETURNING epoch",
            (slots,),
        ).fetchone()[0]  # type: ignore[index]
        params = {"slots": slots, "replica_id": "explain", "epoch": epoch, "lease_seconds": 30.0}
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]  # type: ignore[index]
    top = plan["Plan"]
    return {
        "ms": round(plan["Execution Time"], 3),
        "shared_buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "rows": top.get("Actual Rows"),
    }


def explain_claims(conn: psycopg.Connection, slots: int) -> dict[str, Any]:
    """The claim and next-due statements, current and as they were, on the same rows, twice each
    (the second of each pair is reported: the first may read pages the other has not)."""
    found: dict[str, Any] = {}
    for name, statement in (
        ("claim", replica_statements.CLAIM_SCHEDULED.text),
        ("claim_before", statements_before.CLAIM_SCHEDULED.text),
        ("next_due", replica_statements.NEXT_DUE.text),
        ("next_due_before", statements_before.NEXT_DUE.text),
    ):
        explain(conn, statement, slots)
        found[name] = explain(conn, statement, slots)
    return found


# The WAL position, the database's clock, how many sessions the database has had (each new one is a
# backend process forked and warmed up: a pool that opens and closes connections shows here), and
# how many transactions ended. Counted by the server, not from pg_stat_statements' COMMITs: the hot
# path's claims and outcome records are autocommit statements, each a transaction with no COMMIT.
SNAPSHOT = (
    "SELECT pg_current_wal_lsn(), now(), sessions, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
)


def run_window(
    server: EmbeddedPostgres,
    admin: psycopg.Connection,
    database: str,
    count: int,
    interval: int,
    replicas_n: int,
    seconds: float,
    *,
    logs: Path,
    tag: str,
    slots: int,
    lead: float = 8.0,
    warmup: float = 10.0,
    before: bool = False,
) -> dict[str, Any]:
    url = server.url(database)
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    try:
        schedule(conn, count, interval, lead=lead)
        ticks_from = conn.execute("SELECT now() + make_interval(secs => %s)", (lead,)).fetchone()[0]  # type: ignore[index]
        replicas = Replicas(url, replicas_n, logs, tag, slots, before)
        replicas.start()
        try:
            wait_registered(conn, replicas)
            remaining = (ticks_from - conn.execute("SELECT now()").fetchone()[0]).total_seconds()  # type: ignore[index]
            time.sleep(max(0.0, remaining) + warmup)
            admin.execute("SELECT pg_stat_statements_reset()")
            pg_before, rep_before, machine_before = tree_cpu(server_pid(server)), replicas.cpu(), machine_cpu()
            roles = RoleSampler(server_pid(server))
            roles.start()
            lsn_before, db_start, sessions_before, xacts_before = conn.execute(SNAPSHOT, (database,)).fetchone()  # type: ignore[misc]
            wall_start = time.time()
            time.sleep(seconds)
            wall_end = time.time()
            lsn_after, db_end, sessions_after, xacts_after = conn.execute(SNAPSHOT, (database,)).fetchone()  # type: ignore[misc]
            pg_after, rep_after, machine_after = tree_cpu(server_pid(server)), replicas.cpu(), machine_cpu()
            pg_roles = roles.stop()
            server_side = server_statements(admin, database)
            backlog = conn.execute(
                "SELECT count(*) FROM strategy_status WHERE status = 'running' AND running_execution_id IS NULL "
                "AND next_execution_at < now() - interval '1 second'"
            ).fetchone()[0]  # type: ignore[index]
        finally:
            replicas.stop()
        # With the replicas gone, ticks fall due again: a claim that takes a full batch is explained.
        time.sleep(max(0.2, 2 * slots * interval / count))
        explained = explain_claims(conn, slots)
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - scheduled_for), extract(epoch FROM claimed_at - scheduled_for), "
            "       status, extract(epoch FROM finished_at - %s::timestamptz) "
            "FROM executions WHERE finished_at >= %s AND finished_at < %s AND trigger = 'schedule'",
            (db_start, db_start, db_end),
        ).fetchall()
        # Lag by 10 s of the window (when the execution ended): a start-up catch-up, a periodic stall
        # (a checkpoint, a vacuum) and a steady backlog look alike in one p99 and unlike here.
        buckets: dict[int, list[float]] = {}
        for r in rows:
            buckets.setdefault(int(float(r[3]) // 10), []).append(float(r[0]))
        wal = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (lsn_after, lsn_before)).fetchone()[0]  # type: ignore[index]
        window = (db_end - db_start).total_seconds()
        executed = len(rows)
        lags = [float(r[0]) for r in rows]
        claim_lags = [float(r[1]) for r in rows]
        failed = sum(1 for r in rows if r[2] != "succeeded")
        timings = replicas.timings(wall_start, wall_end)
        pg_cpu = pg_after - pg_before
        rep_cpu = rep_after - rep_before
        busy = machine_after[0] - machine_before[0]
        all_cpu = machine_after[1] - machine_before[1]
        statements = sum(len(v) for k, v in timings.items() if not k.startswith(("transaction", "claimed", "recorded")))
        per_execution = 1000 / executed if executed else None
        result = {
            "database": database,
            "statements": "before" if before else "current",
            "strategies": count,
            "interval_s": interval,
            "demand_per_s": round(count / interval, 1),
            "replicas": replicas_n,
            "slots_per_replica": slots,
            "window_s": round(window, 1),
            "executions": executed,
            "not_succeeded": failed,
            "executions_per_s": round(executed / window, 1),
            "backlog_due_unclaimed_at_end": backlog,
            "lag_ms": {"p50": ms(lags, 0.5), "p99": ms(lags, 0.99), "max": ms(lags, 1.0)},
            "lag_ms_p99_by_10s": [ms(buckets[k], 0.99) for k in sorted(buckets)],
            "claim_lag_ms": {"p50": ms(claim_lags, 0.5), "p99": ms(claim_lags, 0.99)},
            "replica_side_ms": {
                name: {"n": len(values), "p50": ms(values, 0.5), "p99": ms(values, 0.99)}
                for name, values in sorted(timings.items())
                if not name.endswith("per transaction")
            },
            "claimed_per_transaction": _mean(timings.get("claimed per transaction", [])),
            "recorded_per_transaction": _mean(timings.get("recorded per transaction", [])),
            "statements_per_execution": round(statements / executed, 2) if executed else None,
            "server_side": server_side,
            "cpu": {
                "machine_busy_share": round(busy / all_cpu, 3) if all_cpu else None,
                "postgres_share_of_machine": round(pg_cpu / all_cpu, 3) if all_cpu else None,
                "replicas_share_of_machine": round(rep_cpu / all_cpu, 3) if all_cpu else None,
                "postgres_ms_per_execution": round(pg_cpu * per_execution, 3) if per_execution else None,
                "replicas_ms_per_execution": round(rep_cpu * per_execution, 3) if per_execution else None,
                # PostgreSQL's ms per execution by process role; `unattributed`: processes that came
                # and went between two samples (short autovacuum workers, mostly).
                "postgres_ms_per_execution_by_role": (
                    {
                        **{role: round(cpu * per_execution, 3) for role, cpu in sorted(pg_roles.items())},
                        "unattributed": round((pg_cpu - sum(pg_roles.values())) * per_execution, 3),
                    }
                    if per_execution
                    else None
                ),
            },
            "wal_bytes_per_execution": round(float(wal) / executed) if executed else None,
            # How much of PostgreSQL's CPU per execution its statements account for (executing and
            # planning, as pg_stat_statements counts them), and transactions per execution.
            "server_statement_ms_per_execution": round(
                (server_side["exec_ms_total"] + server_side["plan_ms_total"]) / executed, 3
            )
            if executed
            else None,
            "new_sessions_per_s": round((sessions_after - sessions_before) / window, 1),
            "transactions_per_execution": round((xacts_after - xacts_before) / executed, 2) if executed else None,
            "explicit_commits_per_execution": round(server_side["commits"] / executed, 2) if executed else None,
            "explain": explained,
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }
        return result
    finally:
        conn.close()


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def server_pid(server: EmbeddedPostgres) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split()[0])


def create_database(server: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(libpq_url(server.url("postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    migrate(url)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return url


# --- reporting -------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value}"


def _claim_figures(r: dict[str, Any]) -> str:
    claim = r["replica_side_ms"].get("replica.CLAIM_SCHEDULED", {})
    server = r["server_side"]["named"].get("claim", {})
    return (
        f"{r['executions_per_s']:>7} {_fmt(claim.get('p50')):>10} {_fmt(claim.get('p99')):>10} "
        f"{_fmt(server.get('mean_ms')):>12} {_fmt(server.get('blocks_per_call')):>11} "
        f"{_fmt(r['cpu']['postgres_ms_per_execution']):>9}"
    )


_CLAIM_HEADER = (
    f"{'exec/s':>7} {'claim p50':>10} {'claim p99':>10} {'server mean':>12} {'blocks/call':>11} {'PG ms/ex':>9}"
)


def print_table(flat: list[dict[str, Any]], compare: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> None:
    if flat:
        print("\nclaim cost against the number of strategies (1 replica, same demand a second; ms):")
        print(f"{'strategies':>11} {_CLAIM_HEADER} {'EXPLAIN claim: ms':>18} {'buffers':>8}")
        for r in flat:
            e = r["explain"]["claim"]
            print(f"{r['strategies']:>11} {_claim_figures(r)} {e['ms']:>18} {e['shared_buffers']:>8}")
    if compare:
        print("\nclaim statements before / after the change, alternating (ms):")
        print(f"{'statements':>11} {'N':>2} {_CLAIM_HEADER} {'next-due p50':>12} {'next-due blocks':>15}")
        for r in compare:
            next_due = r["replica_side_ms"].get("replica.NEXT_DUE", {})
            server = r["server_side"]["named"].get("next_due", {})
            print(
                f"{r['statements']:>11} {r['replicas']:>2} {_claim_figures(r)} {_fmt(next_due.get('p50')):>12} "
                f"{_fmt(server.get('blocks_per_call')):>15}"
            )
        e = compare[-1]["explain"]
        print(
            "  EXPLAIN on the same rows (buffers): claim "
            f"{e['claim_before']['shared_buffers']} -> {e['claim']['shared_buffers']}, next due "
            f"{e['next_due_before']['shared_buffers']} -> {e['next_due']['shared_buffers']}"
        )
    if scaling:
        print("\nscaling (null sandbox; latencies in ms, timed in the replicas; CPU from /proc):")
        header = (
            f"{'N':>2} {'demand/s':>8} {'exec/s':>7} {'backlog':>8} {'lag p50':>8} {'lag p99':>9} "
            f"{'claim p50/p99':>14} {'record p50/p99':>15} {'claim tx p99':>12} {'record tx p99':>13} "
            f"{'PG cpu':>6} {'repl cpu':>8} {'PG ms/ex':>8} {'stmt ms/ex':>10} {'rep ms/ex':>9} {'tx/ex':>5} "
            f"{'WAL B/ex':>8}"
        )
        print(header)
        for r in scaling:
            side = r["replica_side_ms"]
            claim = side.get("replica.CLAIM_SCHEDULED", {})
            record = side.get("replica.COMPLETE_EXECUTIONS", {})
            claim_tx = side.get("transaction: claim", {})
            record_tx = side.get("transaction: record outcomes", {})
            cpu = r["cpu"]
            print(
                f"{r['replicas']:>2} {r['demand_per_s']:>8} {r['executions_per_s']:>7} "
                f"{r['backlog_due_unclaimed_at_end']:>8} {_fmt(r['lag_ms']['p50']):>8} {_fmt(r['lag_ms']['p99']):>9} "
                f"{_fmt(claim.get('p50')) + '/' + _fmt(claim.get('p99')):>14} "
                f"{_fmt(record.get('p50')) + '/' + _fmt(record.get('p99')):>15} "
                f"{_fmt(claim_tx.get('p99')):>12} {_fmt(record_tx.get('p99')):>13} "
                f"{_fmt(cpu['postgres_share_of_machine']):>6} {_fmt(cpu['replicas_share_of_machine']):>8} "
                f"{_fmt(cpu['postgres_ms_per_execution']):>8} {_fmt(r['server_statement_ms_per_execution']):>10} "
                f"{_fmt(cpu['replicas_ms_per_execution']):>9} {_fmt(r['transactions_per_execution']):>5} "
                f"{_fmt(r['wal_bytes_per_execution']):>8}"
            )
        for r in scaling:
            roles = r["cpu"].get("postgres_ms_per_execution_by_role") or {}
            by_10s = " ".join(_fmt(v) for v in r["lag_ms_p99_by_10s"])
            print(f"{r['replicas']:>2} lag p99 by 10 s of the window: {by_10s}")
            print(f"{r['replicas']:>2} PostgreSQL ms/ex by process: " + ", ".join(f"{k} {v}" for k, v in roles.items()))


def save(path: Path, figures: dict[str, Any]) -> None:
    """Written after every phase, so a run cut short keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000, help="strategies of the claim-cost comparison")
    parser.add_argument("--replicas", default="1,2,4,8", help="replica counts to measure, comma-separated")
    parser.add_argument("--seconds", type=float, default=300.0, help="measured window per replica count")
    parser.add_argument("--flat-seconds", type=float, default=30.0, help="window per claim-cost phase")
    parser.add_argument("--interval", type=int, default=300, help="execution interval of the strategies")
    parser.add_argument("--slots", type=int, default=5, help="MAX_CONCURRENT_STRATEGIES of each replica")
    parser.add_argument("--skip-flat", action="store_true", help="skip the claim-cost comparison")
    parser.add_argument(
        "--compare-replicas",
        type=int,
        default=2,
        help="replicas of the before/after phases of the claim statements (0: skip them)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="30k strategies every 9 s (10k every 3 s), 20 s windows, 1 and 2 replicas"
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    if args.quick:
        # The north star's demand (3,333/s) from fewer strategies on a shorter interval; what the
        # command line sets explicitly stays.
        quick = {"strategies": 30_000, "interval": 9, "small": 10_000, "replicas": "1,2", "seconds": 20.0}
        for name, value in {**quick, "flat_seconds": 10.0}.items():
            if "--" + name.replace("_", "-") not in sys.argv:
                setattr(args, name, value)
    counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    small_interval = max(1, round(args.interval * args.small / args.strategies))

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        data = Path(tmp)
        logs = data / "logs"
        logs.mkdir()
        os.chmod(tmp, 0o755)  # the server's own user (as root) must reach its data directory
        server = EmbeddedPostgres(data_dir=data / "pg", server_options=TUNED)
        server.start()
        admin = psycopg.connect(libpq_url(server.url("postgres")), autocommit=True)
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        figures: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "server_settings": [*TUNED, "fsync=on", "synchronous_commit=on", "full_page_writes=on"],
            "postgres": admin.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
            "cpus": os.cpu_count(),
            "measured": (
                "replica_side_ms: timed in each replica around the driver's execute of each named statement "
                "(a round trip included) and around the claim and record transactions (BEGIN to COMMIT); "
                "server_side: pg_stat_statements (execution time in the server only)"
            ),
            "flat": [],
            "compare": [],
            "scaling": [],
        }
        try:
            print(f"loading {args.strategies} strategies (interval {args.interval} s) ...", flush=True)
            create_database(server, "scale_large")
            with psycopg.connect(libpq_url(server.url("scale_large")), autocommit=True) as conn:
                figures["load_seconds_large"] = round(load(conn, args.strategies, args.interval), 1)
                figures["size_large"] = conn.execute(
                    "SELECT pg_size_pretty(pg_total_relation_size('strategies')), "
                    "pg_size_pretty(pg_total_relation_size('strategy_status'))"
                ).fetchone()
            print(f"  {figures['load_seconds_large']} s; tables {figures['size_large']}", flush=True)
            if not args.skip_flat:
                create_database(server, "scale_small")
                with psycopg.connect(libpq_url(server.url("scale_small")), autocommit=True) as conn:
                    load(conn, args.small, small_interval)
                order = [("scale_small", args.small, small_interval), ("scale_large", args.strategies, args.interval)]
                for round_ in range(2):
                    for database, count, interval in order:
                        print(f"claim cost: {count} strategies, round {round_ + 1} ...", flush=True)
                        figures["flat"].append(
                            run_window(
                                server,
                                admin,
                                database,
                                count,
                                interval,
                                1,
                                args.flat_seconds,
                                logs=logs,
                                tag=f"flat-{database}-{round_}",
                                slots=args.slots,
                            )
                        )
                        save(args.output, figures)
            for round_ in range(2 if args.compare_replicas else 0):
                for before in (True, False):
                    label = "before" if before else "current"
                    print(
                        f"claim statements {label}, {args.compare_replicas} replicas, round {round_ + 1} ...",
                        flush=True,
                    )
                    figures["compare"].append(
                        run_window(
                            server,
                            admin,
                            "scale_large",
                            args.strategies,
                            args.interval,
                            args.compare_replicas,
                            args.flat_seconds,
                            logs=logs,
                            tag=f"compare-{label}-{round_}",
                            slots=args.slots,
                            before=before,
                        )
                    )
                    save(args.output, figures)
            for n in counts:
                print(f"{n} replica(s), {args.seconds:.0f} s ...", flush=True)
                figures["scaling"].append(
                    run_window(
                        server,
                        admin,
                        "scale_large",
                        args.strategies,
                        args.interval,
                        n,
                        args.seconds,
                        logs=logs,
                        tag=f"scale-{n}",
                        slots=args.slots,
                    )
                )
                save(args.output, figures)
                print_table([], [], figures["scaling"][-1:])
        finally:
            admin.close()
            server.stop()
        figures["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save(args.output, figures)
        print_table(figures["flat"], figures["compare"], figures["scaling"])
        print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
