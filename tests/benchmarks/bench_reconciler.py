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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def scratch_root(prefix: str) -> Path:
    """A scratch directory for a benchmark's servers and logs, announced with the machine's load."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; PostgreSQL durable (fsync on); "
        f"logs in {root}",
        flush=True,
    )
    return root


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

async def main(seconds, concurrency, code, windows):
    sandbox = Sandbox(SandboxLimits())
    await sandbox.start()
    measured = []
    try:
        for i in range(20):
            await sandbox.run(ExecutionRequest(f"w{i}", "bench", code))
        ids = iter(range(1 << 60))
        for _ in range(windows):
            done = 0
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
            measured.append({"rate": done / elapsed, "executions": done, "cpu_ms": 1000 * used / max(done, 1)})
    finally:
        await sandbox.close()
    print(json.dumps(measured))

asyncio.run(main(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
"""


def sandbox_ceiling(tree: Tree, seconds: float, windows: int = 1) -> dict[str, float]:
    """The sandbox alone over `windows` consecutive windows of `seconds` (one sandbox, warmed up once):
    the median window's rate and CPU per execution, with the lowest and highest rates beside them.

    One window swings by a third from the next on a shared 2-core machine; a load set from one window
    may land anywhere from 40% to 70% of what the sandbox really sustains."""
    out = subprocess.run(
        [sys.executable, "-c", CEILING_SCRIPT, str(seconds), "5", TRIVIAL, str(windows)],
        cwd=tree.root,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        timeout=seconds * windows + 300,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"[{tree.label}] sandbox ceiling failed:\n{out.stderr[-3000:]}")
    measured: list[dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
    rates = sorted(window["rate"] for window in measured)
    return {
        "rate": statistics.median(rates),
        "cpu_ms": statistics.median(window["cpu_ms"] for window in measured),
        "low": rates[0],
        "high": rates[-1],
        "windows": len(rates),
        "seconds": seconds,
    }


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


def _gc_collections(serve: Serve) -> dict[str, float]:
    """The serve process's garbage collections so far, by generation (its /metrics)."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{serve.base}/metrics", timeout=10).text.splitlines():
        if line.startswith("python_gc_collections_total{"):
            generation = line.split('generation="', 1)[1].split('"', 1)[0]
            found[generation] = float(line.rsplit(" ", 1)[1])
    return found


# Every execution of the run: when its tick fell due, was claimed, started and finished (seconds since
# the first deploy, by the database's clock), and its lag in ms.
LAG_ROWS = """
    SELECT extract(epoch FROM scheduled_for - %(origin)s), extract(epoch FROM claimed_at - %(origin)s),
           extract(epoch FROM started_at - %(origin)s), extract(epoch FROM finished_at - %(origin)s),
           1000 * extract(epoch FROM started_at - scheduled_for)
    FROM executions WHERE status = 'succeeded' AND trigger = 'schedule' ORDER BY scheduled_for
"""


@dataclass(frozen=True)
class Tick:
    due: float  # seconds since the first deploy, by the database's clock
    claimed: float
    started: float
    finished: float
    lag: float  # ms, started - due


def _settle(serve: Serve, interval: int) -> float:
    """Wait until the deploy's backlog is drained: no tick overdue by more than 250 ms at two polls in a
    row (at most 8 intervals). Returns the seconds waited.

    The burst's first ticks run while the API still answers deploys in the same process; on a busy
    machine that backlog takes intervals to drain, and a window opened before it has drained measures
    the deploy, not the steady state."""
    start = time.monotonic()
    clear = 0
    overdue = (
        "SELECT count(*) FROM strategy_status WHERE status = 'running' AND running_execution_id IS NULL "
        "AND next_execution_at < now() - interval '250 milliseconds'"
    )
    while time.monotonic() - start < 8 * interval:
        clear = clear + 1 if serve.conn.execute(overdue).fetchone()[0] == 0 else 0
        if clear >= 2:
            break
        time.sleep(0.5)
    return time.monotonic() - start


def _server_events(log: Path, start: datetime, end: datetime) -> list[str]:
    """PostgreSQL's checkpoint and autovacuum log lines between two instants (log_checkpoints is on)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not any(what in line for what in ("checkpoint starting", "automatic vacuum", "automatic analyze")):
            continue
        try:
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        except ValueError:
            continue
        if start <= at <= end:
            found.append(line[11:23] + " " + line.split("LOG:", 1)[-1].strip()[:60])
    return found


@dataclass(frozen=True)
class SlowStatement:
    start: float  # seconds since the first deploy (the log stamps its end; less its duration)
    ms: float
    what: str


# PostgreSQL logs every statement of the serve process's database that took this long, for the lag
# report: a tick that waited for a claim while a claim, an outcome's commit or a pass took this long
# waited on the database.
SLOW_STATEMENT_MS = 50


def _kind(statement: str) -> str:
    """A short name for a logged statement (its first words, or what the replica's statements are)."""
    names = {
        "WITH candidates": "claim",
        "WITH pending": "run-request claim",
        "SELECT LEAST": "next due",
        "WITH outcome": "outcomes",
        "SELECT strategy_id FROM strategy_status": "outcomes' lock",
    }
    for prefix, name in names.items():
        if statement.startswith(prefix):
            return name
    return " ".join(statement.split()[:3])


def _slow_statements(log: Path, origin: datetime) -> list[SlowStatement]:
    lines = log.read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        if "LOG:  duration: " not in line:
            continue
        try:
            end = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
            ms = float(line.split("duration: ", 1)[1].split(" ms", 1)[0])
        except ValueError:
            continue
        statement = line.split(": ", 3)[-1].strip() if line.count(": ") >= 3 else ""
        following = iter(lines[i + 1 :])
        while not statement:  # a statement that starts on the next line (the replica's SQL texts do)
            statement = next(following, "-").strip()
        found.append(SlowStatement((end - origin).total_seconds() - ms / 1000, ms, _kind(statement)))
    return found


def serve_lag(
    tree: Tree, root: Path, name: str, rate: float, load: float, seconds: float, *, burst: bool, interval: int = 5
) -> dict[str, Any]:
    """Schedule lag (start - scheduled tick, from the executions table) at `load` of `rate`.

    burst: the strategies deployed through the API as fast as it answers, their ticks anchored when
    they were deployed (many share a phase); else deployed one by one, evenly over one interval.
    The window opens once the deploy's backlog has drained (`_settle`); every execution of the run is
    returned too, so the report can say where the late ones lost their time and when they fell due.
    """
    count = max(1, int(rate * load * interval))
    with serving(tree, root, name) as serve:
        serve.conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = {SLOW_STATEMENT_MS}")
        serve.conn.execute("SELECT pg_reload_conf()")
        took = serve.deploy(count, TRIVIAL, interval, spread=0.0 if burst else float(interval))
        time.sleep(interval + 1)  # the first ticks ran as deployed; measure steady state from here
        settled = _settle(serve, interval)
        gc_before = _gc_collections(serve)
        commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        commits_before = serve.conn.execute(commits).fetchone()[0]
        own_before = cpu_seconds(serve.process.pid, tree=False)
        database_before = cpu_seconds(serve.postmaster_pid, tree=True)
        window_start = serve.conn.execute("SELECT now()").fetchone()[0]
        time.sleep(seconds)
        window_end = serve.conn.execute("SELECT now()").fetchone()[0]
        # What the replica spends per execution at this load (a claim that finds nothing due costs
        # the same statements as one that does): its own CPU, PostgreSQL's, and transactions.
        own = cpu_seconds(serve.process.pid, tree=False) - own_before
        database = cpu_seconds(serve.postmaster_pid, tree=True) - database_before
        gc_after = _gc_collections(serve)
        time.sleep(2)  # the last ticks of the window finish and are recorded; statistics flushed
        transactions = serve.conn.execute(commits).fetchone()[0] - commits_before
        origin = serve.conn.execute("SELECT min(schedule_anchor_at) FROM strategy_status").fetchone()[0]
        deployed_until = serve.conn.execute(
            "SELECT extract(epoch FROM max(schedule_anchor_at) - min(schedule_anchor_at)) FROM strategy_status"
        ).fetchone()[0]
        ticks = [
            Tick(*(float(value) for value in row))
            for row in serve.conn.execute(LAG_ROWS, {"origin": origin}).fetchall()
        ]
        missed = serve.conn.execute("SELECT coalesce(sum(missed_executions), 0) FROM strategy_status").fetchone()[0]
        # How the ticks fell: strategies sharing one tick phase (to the millisecond) fall due together.
        phases = [
            row[0]
            for row in serve.conn.execute(
                "SELECT count(*) FROM strategy_status WHERE next_execution_at IS NOT NULL "
                "GROUP BY date_trunc('milliseconds', schedule_anchor_at)"
            ).fetchall()
        ]
        events = _server_events(serve.data_dir / "postgresql.log", window_start, window_end)
        slow = _slow_statements(serve.data_dir / "postgresql.log", origin)
    opened = (window_start - origin).total_seconds()
    closed = (window_end - origin).total_seconds()
    window = [tick for tick in ticks if opened <= tick.due < closed]
    if not window:
        return {"executions": 0}
    return {
        "executions": len(window),
        "strategies": count,
        "deploy_seconds": took,
        "deployed_until": float(deployed_until),
        "settled": settled,
        "opened": opened,
        "closed": closed,
        "ticks": ticks,
        "window": window,
        "missed": missed,
        "largest_phase": max(phases, default=0),
        "phases": len(phases),
        "gc": {gen: gc_after.get(gen, 0) - gc_before.get(gen, 0) for gen in gc_after},
        "events": events,
        "slow": [statement for statement in slow if opened - 1 <= statement.start < closed],
        "interval": interval,
        "transactions": transactions / len(window),
        "serve_cpu_ms": 1000 * own / len(window),
        "database_cpu_ms": 1000 * database / len(window),
    }


def _in_flight_at(ticks: list[Tick], instant: float) -> int:
    """How many executions were claimed and not finished at `instant` (a slot is taken before the fork
    that `started_at` dates, so this, not started..finished, says whether the slots were full)."""
    return sum(1 for tick in ticks if tick.claimed < instant < tick.finished)


def lag_report(label: str, figures: dict[str, Any], rate: float, load: float, how: str) -> dict[str, float]:
    """Print one round: percentiles, the due rate the burst made, where the late ones lost their time
    and whether they cluster. Returns the round's percentiles."""
    window: list[Tick] = figures["window"]
    ticks: list[Tick] = figures["ticks"]
    interval = figures["interval"]
    opened, closed = figures["opened"], figures["closed"]
    lags = sorted(tick.lag for tick in window)
    p50, p95, p99 = statistics.median(lags), _pct(lags, 0.95), _pct(lags, 0.99)
    # The burst's phases are uneven: the ticks falling due in the busiest whole second of the window,
    # against the rate the load was set from (what "half load" is second by second).
    per_second: dict[int, int] = {}
    for tick in window:
        per_second[int(tick.due)] = per_second.get(int(tick.due), 0) + 1
    peak = max((n for second, n in per_second.items() if opened <= second and second + 1 <= closed), default=0)
    print(
        f"[{label}] schedule lag at {load:.0%} of {rate:.0f}/s ({figures['strategies']} strategies every "
        f"{interval} s, {how} in {figures['deploy_seconds']:.1f} s; {figures['phases']} tick phases, the largest "
        f"shared by {figures['largest_phase']}; due per second in the window: mean "
        f"{len(window) / (closed - opened):.0f}, busiest second {peak} = {peak / rate:.0%} of {rate:.0f}/s); "
        f"window opened {figures['settled']:.1f} s after the first interval (backlog drained); "
        f"{len(window)} executions in {closed - opened:.1f} s: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"p99 {p99:.1f} ms, max {lags[-1]:.1f} ms, missed ticks {figures['missed']}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    # The run from the first deploy, interval by interval: the deploy's backlog and its drain, then the window.
    by_interval: dict[int, list[float]] = {}
    for tick in ticks:
        by_interval.setdefault(int(tick.due // interval), []).append(tick.lag)
    print(
        f"[{label}]   p99 by interval since the first deploy (the deploy took {figures['deployed_until']:.1f} s; "
        f"window {opened:.1f}-{closed:.1f} s): "
        + ", ".join(f"{k * interval}s {_pct(sorted(v), 0.99):.0f}" for k, v in sorted(by_interval.items()))
    )
    # The late ones (the top 1%, at least 3): due to claimed vs claimed to started, and the executions
    # in flight when each was claimed (5 or more: it may have waited for a slot; fewer: the claim itself
    # came late).
    late = sorted(window, key=lambda tick: tick.lag)[-max(3, len(window) // 100) :]
    claim_wait = [1000 * (tick.claimed - tick.due) for tick in late]
    to_start = [1000 * (tick.started - tick.claimed) for tick in late]
    busy = [_in_flight_at(ticks, tick.claimed) for tick in late]
    all_claim = sorted(1000 * (tick.claimed - tick.due) for tick in window)
    all_start = sorted(1000 * (tick.started - tick.claimed) for tick in window)
    print(
        f"[{label}]   late {len(late)} (lag >= {late[0].lag:.0f} ms): due to claimed median "
        f"{statistics.median(claim_wait):.0f} ms (max {max(claim_wait):.0f}), claimed to started median "
        f"{statistics.median(to_start):.0f} ms (max {max(to_start):.0f}); in flight when each was claimed "
        f"(5 slots): {', '.join(f'{b} x{busy.count(b)}' for b in sorted(set(busy)))}. All: due to claimed p50 "
        f"{statistics.median(all_claim):.1f} / p99 {_pct(all_claim, 0.99):.1f} ms, claimed to started p50 "
        f"{statistics.median(all_start):.1f} / p99 {_pct(all_start, 0.99):.1f} ms. Per execution in the window: "
        f"{figures['transactions']:.1f} transactions, serve process {figures['serve_cpu_ms']:.2f} ms CPU, "
        f"PostgreSQL {figures['database_cpu_ms']:.2f} ms"
    )
    # Clusters: late ticks less than half a second apart, each with its phase in the interval (seconds
    # after the first deploy, modulo the interval) and the ticks due in the second before its worst: a
    # cluster on the busiest phases is the burst's density; one anywhere else, a pause.
    clusters: list[list[Tick]] = []
    for tick in sorted(late, key=lambda tick: tick.due):
        if clusters and tick.due - clusters[-1][-1].due < 0.5:
            clusters[-1].append(tick)
        else:
            clusters.append([tick])
    parts = []
    for cluster in clusters:
        worst = max(cluster, key=lambda tick: tick.lag)
        due_before = sum(1 for tick in ticks if worst.due - 1.0 < tick.due <= worst.due)
        # Statements of 50 ms or more running between its first tick falling due and its worst's claim.
        during = [
            statement
            for statement in figures["slow"]
            if statement.start < worst.claimed and statement.start + statement.ms / 1000 > cluster[0].due
        ]
        slowest = ", ".join(f"{st.what} {st.ms:.0f} ms" for st in sorted(during, key=lambda st: -st.ms)[:4])
        parts.append(
            f"+{cluster[0].due - opened:.2f}s x{len(cluster)} (max {worst.lag:.0f} ms, phase "
            f"{worst.due % interval:.2f}s, {due_before} due in the second before; statements >= "
            f"{SLOW_STATEMENT_MS} ms meanwhile: {len(during)}{': ' + slowest if slowest else ''})"
        )
    gc = figures["gc"]
    kinds: dict[str, list[float]] = {}
    for statement in figures["slow"]:
        kinds.setdefault(statement.what, []).append(statement.ms)
    print(
        f"[{label}]   statements >= {SLOW_STATEMENT_MS} ms in the window: {len(figures['slow'])}"
        + "".join(
            f"; {what} x{len(ms)} (max {max(ms):.0f} ms)"
            for what, ms in sorted(kinds.items(), key=lambda kind: -len(kind[1]))
        )
    )
    print(
        f"[{label}]   late clusters in the window: {'; '.join(parts)}. In the window: garbage collections "
        f"gen0/1/2 {gc.get('0', 0):.0f}/{gc.get('1', 0):.0f}/{gc.get('2', 0):.0f}; PostgreSQL checkpoints and "
        f"autovacuum: {'; '.join(figures['events']) or 'none'}",
        flush=True,
    )
    return {"p50": p50, "p95": p95, "p99": p99, "max": lags[-1]}


def lag_ceiling(tree: Tree, windows: int) -> float:
    """The rate the lag phase is loaded against: the sandbox alone's median over `windows` 5 s windows."""
    ceiling = sandbox_ceiling(tree, 5.0, windows)
    print(
        f"[{tree.label}] sandbox alone over {ceiling['windows']:.0f} windows of {ceiling['seconds']:.0f} s: "
        f"median {ceiling['rate']:.0f}/s (lowest {ceiling['low']:.0f}/s, highest {ceiling['high']:.0f}/s; "
        f"{ceiling['cpu_ms']:.2f} ms CPU each); lag loaded against the median; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return ceiling["rate"]


def lag_comparison(
    trees: list[Tree], root: Path, rate: float, load: float, seconds: float, rounds: int, *, burst: bool
) -> None:
    how = "deployed in a burst through the API" if burst else "deployed one by one over the interval"
    rounds_of: dict[str, list[dict[str, float]]] = {tree.label: [] for tree in trees}
    for round_ in range(rounds):
        for tree in trees:
            name = f"lag{int(load * 100)}-{'burst' if burst else 'spread'}-{tree.label}-{round_}"
            figures = serve_lag(tree, root, name, rate, load, seconds, burst=burst)
            if not figures["executions"]:
                print(f"[{tree.label}] lag at {load:.0%}: no executions measured")
                continue
            rounds_of[tree.label].append(lag_report(tree.label, figures, rate, load, how))
    for tree in trees:
        measured = rounds_of[tree.label]
        if measured:
            listed = {key: " / ".join(f"{m[key]:.1f}" for m in measured) for key in ("p50", "p99", "max")}
            print(
                f"[{tree.label}] lag at {load:.0%} over {len(measured)} rounds: p50 {listed['p50']} ms, "
                f"p99 {listed['p99']} ms, max {listed['max']} ms"
            )
    if len(trees) > 1 and all(rounds_of.values()):
        base = statistics.median(m["p99"] for m in rounds_of[trees[0].label])
        for tree in trees[1:]:
            mine = statistics.median(m["p99"] for m in rounds_of[tree.label])
            print(f"[{tree.label}] / [{trees[0].label}] median lag p99: {mine / base:.3f}x")


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
    root = scratch_root("se-bench-")
    if args.only in (None, "capacity", "lag"):
        ceilings = capacity_vs_ceiling(trees, root, rounds, window) if args.only != "lag" else {}
        if args.only != "capacity":
            # Loaded against one rate for every tree, so their lags compare: given, or the sandbox alone
            # measured first (a replica at >= 95% of it, half of either is within 5%).
            rate = args.rate or ceilings.get(trees[0].label) or lag_ceiling(trees[0], 4 if args.quick else 8)
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
