"""Reconciler benchmark: one replica's capacity, schedule lag, memory, idle cost, and scaling.

Not part of the test run (pytest collects test_*.py only). Run it with:

    .venv/bin/python tests/benchmarks/bench_reconciler.py [--quick] [--only PHASE] [--compare DIR]

Capacity and schedule lag are measured as an operator runs the service: `strategy-executor serve`
(the API and one replica in one process) on its own embedded PostgreSQL (durable, fsync on), the
strategies deployed through the HTTP API, the executions counted from the database. The ceiling they
are held against, the sandbox alone with 5 executions in flight (as bench_sandbox.py measures it), is
measured beside them in the same run, alternating round by round, so the ratio "one replica / sandbox
alone" does not depend on how busy the machine is. Beside that throughput ratio (PostgreSQL shares the
cores) the capacity phase prints a CPU ratio: the sandbox alone's CPU per execution over the serve
process's and its sandbox's, what one replica reaches on cores of its own with the database on another
host. Both sides count every process of the sandbox (zygote, template, children, compile workers).
`--compare DIR` runs another checkout of the project
(a source tree, on this environment's packages) alternately with this one, for before/after ratios.

Memory, the idle statement rate and scaling run `strategy-executor worker` processes against one
durable embedded PostgreSQL of the benchmark's own. Every phase prints one line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.storage.db import libpq_url  # noqa: E402
from reconciler.storage.migrate import migrate  # noqa: E402
from tests.e2e.harness import Service, free_port, service_env  # noqa: E402

TRIVIAL = "RESULT = 1\n"
WAITING = "ticker = client.get_ticker()\nRESULT = len(ticker)\n"


class Bench:
    def __init__(self, server: EmbeddedPostgres, logs: Path) -> None:
        self.server = server
        self.logs = logs
        self.count = 0

    def database(self) -> str:
        self.count += 1
        name = f"bench_{self.count}"
        with psycopg.connect(libpq_url(self.server.url("postgres")), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.server.url(name)
        migrate(url)
        return url

    def workers(self, url: str, n: int, **settings: object) -> list[Service]:
        workers = [
            Service("worker", service_env(url, log_level="WARNING", **settings), self.logs, f"w{self.count}-{i}")
            for i in range(n)
        ]
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM replicas").fetchone()[0] < n:
                if time.monotonic() > deadline:
                    raise SystemExit("workers did not start: " + workers[0].log()[-2000:])
                time.sleep(0.2)
        return workers


def deploy(
    conn: psycopg.Connection, count: int, code: str, interval: int, spread: float = 0.0, exchange: str = "paper"
) -> None:
    """Deploy `count` strategies, their first ticks spread evenly over `spread` seconds."""
    # Spread deploys one by one, as independent users deploy: a batch would share one anchor and
    # fall due in one burst on every tick.
    batch = 1 if spread else count
    start = time.monotonic()
    for first in range(0, count, batch):
        rows = [(f"s{i:05d}", code, interval, exchange) for i in range(first, min(count, first + batch))]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, exchange) "
                "VALUES (%s, 'bench', 'bench', %s, %s, %s)",
                rows,
            )
        if spread:
            target = start + spread * (first + batch) / count
            time.sleep(max(0.0, target - time.monotonic()))


def finished_between(conn: psycopg.Connection, seconds: float) -> float:
    before = conn.execute("SELECT count(*) FROM executions WHERE status <> 'running'").fetchone()[0]
    time.sleep(seconds)
    after = conn.execute("SELECT count(*) FROM executions WHERE status <> 'running'").fetchone()[0]
    return (after - before) / seconds


def stop_all(conn: psycopg.Connection, workers: list[Service]) -> None:
    conn.execute("UPDATE strategies SET desired_state = 'stopped', generation = generation + 1")
    for worker in workers:
        worker.terminate(timeout=60)


def memory_mb(pid: int) -> tuple[float, float]:
    """Memory of a process and all its descendants (the replica, its zygote and template, live
    children): (proportional set size, resident set size), both summed over the processes.

    The PSS sum is the figure: a page shared by k processes counts 1/k in each, so the zygote's heap,
    which its template shares page for page, counts once, as it costs the host once. The RSS sum
    counts it once per process that maps it and overstates what the replica uses.
    """
    pss = rss = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pss / 1024, rss / 1024


# --- `serve` as an operator runs it ---------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A checkout of the project whose `serve` and sandbox are measured (PYTHONPATH and working dir)."""

    label: str
    root: Path


def compared_trees(compare: list[str]) -> list[Tree]:
    """`--compare [LABEL=]DIR` arguments as trees, then this one last."""
    trees = []
    for spec in compare:
        label, _, path = spec.rpartition("=")
        trees.append(Tree(label or Path(path).name, Path(path).resolve()))
    trees.append(Tree("this", PROJECT_ROOT))
    return trees


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each, a minute to drain, then SIGKILL to its process group."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def tree_env(tree: Tree, **settings: object) -> dict[str, str]:
    # Nothing of the caller's configuration leaks in: the service runs on its defaults, as installed.
    own = ("DATABASE_URL", "TEST_DATABASE_URL", "EXECUTOR_API_TOKEN", "ENCRYPTION_KEY", "JWT_SECRET", "DATA_DIR")
    env = {k: v for k, v in os.environ.items() if k not in own and k not in ("PORT", "LOG_LEVEL", "LOG_FORMAT")}
    env["PYTHONPATH"] = str(tree.root)
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


# The sandbox alone, as bench_sandbox.py measures it: 5 executions in flight on one zygote, for a fixed
# time, in a process of its own on the tree's code. Prints one JSON line.
CEILING_SCRIPT = r"""
import asyncio, json, os, resource, sys, time
from pathlib import Path
from reconciler.outcome import ExecutionRequest
from reconciler.sandbox import Sandbox, SandboxLimits

def cpu():
    # This process (the supervisor) and every live descendant with the children it reaped: the
    # zygote with its children, the template that forks them, the compile workers. As `serve` is
    # measured: the template's own CPU (each child's clone) counts, though no process reaps it.
    own = resource.getrusage(resource.RUSAGE_SELF)
    total, ticks, pending = own.ru_utime + own.ru_stime, 0, [os.getpid()]
    while pending:
        pid = pending.pop()
        try:
            if pid != os.getpid():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(value) for value in fields[11:15])
            pending.extend(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total + ticks / os.sysconf("SC_CLK_TCK")

async def main(seconds, concurrency, code):
    sandbox = Sandbox(SandboxLimits())
    await sandbox.start()
    try:
        for i in range(20):
            await sandbox.run(ExecutionRequest(f"w{i}", "bench", code))
        done, ids = 0, iter(range(1 << 60))
        async def worker():
            nonlocal done
            while time.perf_counter() < deadline:
                outcome = await sandbox.run(ExecutionRequest(f"c{next(ids)}", "bench", code))
                assert outcome.status == "succeeded", outcome
                done += 1
        cpu_before, start = cpu(), time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, used = time.perf_counter() - start, cpu() - cpu_before
    finally:
        await sandbox.close()
    print(json.dumps({"rate": done / elapsed, "executions": done, "cpu_ms": 1000 * used / max(done, 1)}))

asyncio.run(main(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
"""


def sandbox_ceiling(tree: Tree, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CEILING_SCRIPT, str(seconds), "5", TRIVIAL],
        cwd=tree.root,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"[{tree.label}] sandbox ceiling failed:\n{out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _ticks(pid: int) -> int:
    """CPU ticks of a process and the children it reaped (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            pending.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def cpu_seconds(pid: int, *, tree: bool) -> float:
    """CPU of one process (own time only), or of it and every descendant (reaped ones included)."""
    clock = os.sysconf("SC_CLK_TCK")
    if not tree:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clock
    total = 0
    for current in _descendants(pid):
        try:
            total += _ticks(current)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / clock


class Serve:
    """`strategy-executor serve` with DATABASE_URL unset: its own embedded PostgreSQL in a fresh DATA_DIR,
    its generated API token, production defaults for everything else. The benchmark reads the database
    through the server's socket, as `psql` would."""

    def __init__(self, tree: Tree, data_dir: Path, logs: Path, name: str, **settings: object) -> None:
        self.tree = tree
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        env = tree_env(tree, data_dir=data_dir, port=self.port, **settings)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "serve"],
                env=env,
                cwd=tree.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                health = httpx.get(f"{self.base}/health", timeout=5)
                if health.status_code == 200 and health.json().get("scheduler_running"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("serve did not become healthy in 300 s")
            time.sleep(0.2)
        self.token = (data_dir / "api-token").read_text().strip()
        self.conn = psycopg.connect(
            f"host={data_dir / 'run'} port=5432 user=postgres dbname=strategy_executor", autocommit=True
        )

    @property
    def postmaster_pid(self) -> int:
        return int((self.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])

    def deploy(self, count: int, code: str, interval: int, *, spread: float = 0.0, concurrency: int = 8) -> float:
        """Deploy `count` strategies through the API; the seconds it took.

        Without `spread`, in a burst (`concurrency` clients as fast as the API answers), as users deploy
        around one moment: the strategies' ticks are anchored when they are deployed, so many share a
        phase. With `spread`, one by one, evenly over that many seconds.
        """
        headers = {"Authorization": f"Bearer {self.token}"}
        start = time.monotonic()

        def one(client: httpx.Client, i: int) -> None:
            body = {"strategy_id": f"s{i:05d}", "user_id": "bench", "code": code, "execution_interval": interval}
            answer = client.post("/strategies/deploy", json=body)
            if answer.status_code != 201:
                raise SystemExit(f"deploy answered {answer.status_code}: {answer.text[:500]}")

        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as client:
            if spread:
                for i in range(count):
                    one(client, i)
                    time.sleep(max(0.0, start + spread * (i + 1) / count - time.monotonic()))
            else:
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(lambda i: one(client, i), range(count)))
        return time.monotonic() - start

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if hasattr(self, "conn"):
            self.conn.close()
        # serve stops the server it started; one left running (a failed start) is stopped here.
        if (self.data_dir / "pgdata" / "postmaster.pid").exists():
            EmbeddedPostgres(data_dir=self.data_dir).stop()


@contextmanager
def serving(tree: Tree, root: Path, name: str, **settings: object) -> Iterator[Serve]:
    data_dir = root / name
    serve = Serve(tree, data_dir, root, name, **settings)
    try:
        yield serve
    finally:
        serve.stop()


def replica_rate(tree: Tree, root: Path, name: str, seconds: float, strategies: int = 1000) -> dict[str, float]:
    """Executions/s one `serve` sustains under far more demand than it can meet, counted from the
    executions table, and the CPU it and its database spent per execution meanwhile."""
    with serving(tree, root, name) as serve:
        serve.deploy(strategies, TRIVIAL, interval=1)  # 1000/s of demand: far beyond one replica
        time.sleep(5)  # warm up: every strategy reconciled, the pipeline full
        count = "SELECT count(*) FROM executions WHERE status <> 'running'"
        commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        postmaster = serve.postmaster_pid
        done_before = serve.conn.execute(count).fetchone()[0]
        commits_before = serve.conn.execute(commits).fetchone()[0]
        own, whole, database = (
            cpu_seconds(serve.process.pid, tree=False),
            cpu_seconds(serve.process.pid, tree=True),
            cpu_seconds(postmaster, tree=True),
        )
        start = time.monotonic()
        time.sleep(seconds)
        done = serve.conn.execute(count).fetchone()[0] - done_before
        elapsed = time.monotonic() - start
        # Each backend flushes its statistics within a second or so: as late at the start as at the end.
        transactions = serve.conn.execute(commits).fetchone()[0] - commits_before
        own = cpu_seconds(serve.process.pid, tree=False) - own
        whole = cpu_seconds(serve.process.pid, tree=True) - whole
        database = cpu_seconds(postmaster, tree=True) - database
        failed = serve.conn.execute(
            "SELECT count(*) FROM executions WHERE status NOT IN ('succeeded', 'running')"
        ).fetchone()[0]
    per = 1000 / max(done, 1)
    return {
        "rate": done / elapsed,
        "failed": failed,
        "replica_cpu_ms": own * per,  # the serve process itself: event loop, API, drivers
        "sandbox_cpu_ms": (whole - own) * per,  # zygote, children, compile workers
        "database_cpu_ms": database * per,
        "transactions": transactions / max(done, 1),
    }


def capacity_vs_ceiling(trees: list[Tree], root: Path, rounds: int, seconds: float) -> dict[str, float]:
    """One replica's rate against the sandbox-alone ceiling, per tree, alternating tree by tree and
    round by round. Returns each tree's median sandbox-alone rate."""
    ratios: dict[str, list[float]] = {tree.label: [] for tree in trees}
    cpu_ratios: dict[str, list[float]] = {tree.label: [] for tree in trees}
    ceilings: dict[str, list[float]] = {tree.label: [] for tree in trees}
    for round_ in range(rounds):
        for tree in trees:
            ceiling = sandbox_ceiling(tree, min(seconds, 10.0))
            replica = replica_rate(tree, root, f"capacity-{tree.label}-{round_}", seconds)
            ratio = replica["rate"] / ceiling["rate"]
            # The replica on cores of its own, PostgreSQL on another host (the target deployment): the
            # sandbox alone's CPU per execution over the serve process's and its sandbox's.
            cpu_ratio = ceiling["cpu_ms"] / max(replica["replica_cpu_ms"] + replica["sandbox_cpu_ms"], 1e-9)
            ratios[tree.label].append(ratio)
            cpu_ratios[tree.label].append(cpu_ratio)
            ceilings[tree.label].append(ceiling["rate"])
            print(
                f"[{tree.label}] round {round_ + 1}: sandbox alone {ceiling['rate']:.0f}/s "
                f"({ceiling['cpu_ms']:.2f} ms CPU each); serve {replica['rate']:.0f}/s = {ratio:.1%} of it "
                f"(CPU per execution: serve process {replica['replica_cpu_ms']:.2f} ms, sandbox "
                f"{replica['sandbox_cpu_ms']:.2f} ms, PostgreSQL {replica['database_cpu_ms']:.2f} ms, "
                f"{replica['transactions']:.1f} transactions; "
                f"{replica['failed']} not succeeded); CPU ratio without PostgreSQL {cpu_ratio:.1%}; "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    for tree in trees:
        print(
            f"[{tree.label}] one replica / sandbox-alone ceiling: median {statistics.median(ratios[tree.label]):.1%} "
            f"over {rounds} rounds ({', '.join(f'{r:.1%}' for r in ratios[tree.label])}), executions/s "
            f"with PostgreSQL on the same cores"
        )
        print(
            f"[{tree.label}] CPU ratio without PostgreSQL (sandbox alone's CPU per execution / serve process + "
            f"its sandbox's; one replica on cores of its own, the database elsewhere): median "
            f"{statistics.median(cpu_ratios[tree.label]):.1%} ({', '.join(f'{r:.1%}' for r in cpu_ratios[tree.label])})"
        )
    if len(trees) > 1:
        base = statistics.median(ratios[trees[0].label])
        for tree in trees[1:]:
            cpu_base = statistics.median(cpu_ratios[trees[0].label])
            print(
                f"[{tree.label}] / [{trees[0].label}]: {statistics.median(ratios[tree.label]) / base:.3f}x "
                f"(CPU ratio {statistics.median(cpu_ratios[tree.label]) / cpu_base:.3f}x)"
            )
    return {label: statistics.median(values) for label, values in ceilings.items()}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))]


def serve_lag(
    tree: Tree, root: Path, name: str, rate: float, load: float, seconds: float, *, burst: bool, interval: int = 5
) -> dict[str, float]:
    """Schedule lag (start - scheduled tick, from the executions table) at `load` of `rate`.

    burst: the strategies deployed through the API as fast as it answers, their ticks anchored when
    they were deployed (many share a phase); else deployed one by one, evenly over one interval.
    """
    count = max(1, int(rate * load * interval))
    with serving(tree, root, name) as serve:
        took = serve.deploy(count, TRIVIAL, interval, spread=0.0 if burst else float(interval))
        time.sleep(interval + 1)  # the first ticks ran as deployed; measure steady state from here
        window_start = serve.conn.execute("SELECT now()").fetchone()[0]
        time.sleep(seconds)
        window_end = serve.conn.execute("SELECT now()").fetchone()[0]
        time.sleep(2)  # the last ticks of the window finish and are recorded
        rows = serve.conn.execute(
            "SELECT extract(epoch FROM started_at - scheduled_for) * 1000, "
            "extract(epoch FROM claimed_at - scheduled_for) * 1000 FROM executions "
            "WHERE scheduled_for >= %s AND scheduled_for < %s AND status = 'succeeded' AND trigger = 'schedule'",
            (window_start, window_end),
        ).fetchall()
        missed = serve.conn.execute("SELECT coalesce(sum(missed_executions), 0) FROM strategy_status").fetchone()[0]
        # How the ticks fell: strategies sharing one tick phase (to the millisecond) fall due together.
        phases = [
            row[0]
            for row in serve.conn.execute(
                "SELECT count(*) FROM strategy_status WHERE next_execution_at IS NOT NULL "
                "GROUP BY date_trunc('milliseconds', schedule_anchor_at)"
            ).fetchall()
        ]
    lags = sorted(row[0] for row in rows)
    claims = sorted(row[1] for row in rows)
    if not lags:
        return {"executions": 0}
    return {
        "strategies": count,
        "deploy_seconds": took,
        "executions": len(lags),
        "p50": statistics.median(lags),
        "p99": _pct(lags, 0.99),
        "max": lags[-1],
        "claim_p50": statistics.median(claims),
        "claim_p99": _pct(claims, 0.99),
        "missed": missed,
        "largest_phase": max(phases, default=0),
        "phases": len(phases),
    }


def lag_comparison(
    trees: list[Tree], root: Path, rate: float, load: float, seconds: float, rounds: int, *, burst: bool
) -> None:
    how = "deployed in a burst through the API" if burst else "deployed one by one over the interval"
    p99s: dict[str, list[float]] = {tree.label: [] for tree in trees}
    for round_ in range(rounds):
        for tree in trees:
            name = f"lag{int(load * 100)}-{'burst' if burst else 'spread'}-{tree.label}-{round_}"
            figures = serve_lag(tree, root, name, rate, load, seconds, burst=burst)
            if not figures["executions"]:
                print(f"[{tree.label}] lag at {load:.0%}: no executions measured")
                continue
            p99s[tree.label].append(figures["p99"])
            print(
                f"[{tree.label}] schedule lag at {load:.0%} of {rate:.0f}/s ({figures['strategies']:.0f} strategies "
                f"every 5 s, {how} in {figures['deploy_seconds']:.1f} s; {figures['phases']:.0f} tick phases, "
                f"the largest shared by {figures['largest_phase']:.0f}): {figures['executions']:.0f} executions, "
                f"p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms, "
                f"missed ticks {figures['missed']:.0f} (claimed after p50 {figures['claim_p50']:.1f} ms, "
                f"p99 {figures['claim_p99']:.1f} ms); load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    if len(trees) > 1 and all(p99s.values()):
        base = statistics.median(p99s[trees[0].label])
        for tree in trees[1:]:
            print(f"[{tree.label}] / [{trees[0].label}] lag p99: {statistics.median(p99s[tree.label]) / base:.3f}x")


def capacity(bench: Bench, seconds: float) -> float:
    url = bench.database()
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    workers = bench.workers(url, 1)
    deploy(conn, 3000, TRIVIAL, interval=1)  # demand 3000/s: far beyond one replica
    time.sleep(5)  # warm up: reconcile everything, fill the pipeline
    rate = finished_between(conn, seconds)
    failed = conn.execute("SELECT count(*) FROM executions WHERE status NOT IN ('succeeded', 'running')").fetchone()[0]
    stop_all(conn, workers)
    print(
        f"capacity: {rate:.0f} executions/s sustained by one replica "
        f"(5 slots, trivial strategies; {failed} not succeeded)"
    )
    return rate


def memory(bench: Bench, counts: list[int]) -> None:
    for count in counts:
        url = bench.database()
        conn = psycopg.connect(libpq_url(url), autocommit=True)
        workers = bench.workers(url, 1)
        deploy(conn, count, TRIVIAL, interval=3600)
        # Every strategy runs its first tick at once; wait until all ran, then measure at rest.
        deadline = time.monotonic() + 300
        while conn.execute("SELECT count(*) FROM executions WHERE status <> 'running'").fetchone()[0] < count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(2)
        pss, rss = memory_mb(workers[0].pid)
        stop_all(conn, workers)
        print(
            f"memory: replica + zygote + template {pss:.0f} MB (PSS; resident sizes summed: {rss:.0f} MB)"
            f" with {count} deployed strategies"
        )


def idle_queries(bench: Bench, seconds: float) -> None:
    url = bench.database()
    name = make_url(url).database
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
    # Production defaults, not the short lease and poll the end-to-end tests use.
    workers = bench.workers(url, 1, lease_seconds=30, poll_interval_seconds=5)
    time.sleep(5)  # past start-up
    log = bench.server.logfile
    before = log.read_text(errors="replace").count("statement:")
    time.sleep(seconds)
    after = log.read_text(errors="replace").count("statement:")
    for worker in workers:
        worker.terminate()
    rate = (after - before) / seconds
    print(f"idle replica: {rate:.2f} statements/s (BEGIN and COMMIT included) over {seconds:.0f} s")


def scaling(bench: Bench, seconds: float) -> None:
    from tests.exchange.fake_coindcx import FakeCoinDCX  # a slow exchange on loopback

    exchange = FakeCoinDCX().start()
    exchange.state.latency_seconds = 0.25
    exchange_url = exchange.url
    try:
        rates = []
        for n in (1, 2, 3):
            url = bench.database()
            conn = psycopg.connect(libpq_url(url), autocommit=True)
            workers = bench.workers(url, n, coindcx_api_url=exchange_url, coindcx_public_url=exchange_url)
            # Live-exchange strategies without credentials: public market data still answers.
            deploy(conn, 300, WAITING, interval=1, exchange="coindcx")
            time.sleep(4)
            rate = finished_between(conn, seconds)
            stop_all(conn, workers)
            rates.append(rate)
            print(f"waiting strategies (exchange answers in 250 ms): {n} replica(s) {rate:.1f} executions/s")
        print(f"scaling: 2 replicas {rates[1] / rates[0]:.2f}x, 3 replicas {rates[2] / rates[0]:.2f}x one replica")
    finally:
        exchange.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer strategies, one round")
    parser.add_argument("--only", choices=["capacity", "lag", "memory", "idle", "scaling"])
    parser.add_argument("--rate", type=float, help="the capacity lag is loaded against (default: the sandbox alone)")
    parser.add_argument("--rounds", type=int, help="capacity and lag rounds, alternating the trees (default 3)")
    parser.add_argument(
        "--compare",
        metavar="[LABEL=]DIR",
        action="append",
        default=[],
        help="another checkout of the project (a source tree) to measure alternately with this one; first "
        "in the output, so ratios read as this tree / it",
    )
    args = parser.parse_args()
    window = 5.0 if args.quick else 15.0
    rounds = args.rounds or (1 if args.quick else 3)
    trees = compared_trees(args.compare)
    root = Path(tempfile.mkdtemp(prefix="se-bench-"))
    root.chmod(0o711)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; PostgreSQL durable (fsync on); "
        f"logs in {root}",
        flush=True,
    )
    if args.only in (None, "capacity", "lag"):
        ceilings = capacity_vs_ceiling(trees, root, rounds, window) if args.only != "lag" else {}
        if args.only != "capacity":
            # Loaded against one rate for every tree, so their lags compare: given, or the sandbox alone
            # measured first (a replica at >= 95% of it, half of either is within 5%).
            rate = args.rate or ceilings.get(trees[0].label) or sandbox_ceiling(trees[0], 10.0)["rate"]
            lag_comparison(trees, root, rate, 0.5, window, rounds, burst=True)
            if args.only is None:
                lag_comparison(trees, root, rate, 0.9, window, 1, burst=False)
    if args.only in ("capacity", "lag"):
        return
    server = EmbeddedPostgres(data_dir=root / "cluster")
    server.start()
    bench = Bench(server, root)
    try:
        if args.only in (None, "memory"):
            memory(bench, [100, 1000] if args.quick else [100, 1000, 10000])
        if args.only in (None, "idle"):
            idle_queries(bench, 20.0 if args.quick else 60.0)
        if args.only in (None, "scaling"):
            scaling(bench, window)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
