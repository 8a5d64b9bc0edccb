"""API writes beside reconciling replicas: how long a burst of spec writes takes through the API.

Not part of the test run. Run it with:

    .venv/bin/python tests/benchmarks/bench_writes.py [--writes 1500] [--replicas 1 3] [--compare DIR]

For each replica count, `strategy-executor serve` (the API and one replica) plus `worker`s up to that
count run against one durable embedded PostgreSQL of the benchmark's own, a fresh database per run.
`--strategies` strategies are deployed through the API first; then `--writes` writes (redeploys with
new code, stops, starts, new deploys, in a fixed random order) go through the API from `--concurrency`
clients at once, as fast as it answers. Each run prints the burst's length, the writes' latency, how
many transactions the database committed meanwhile, and where the API's backends waited (sampled
from pg_stat_activity every few milliseconds: a row lock, the NOTIFY queue's lock, the WAL flush,
the client), the CPU each process used (the replicas' own, their sandboxes', their compile workers',
PostgreSQL's) and how many executions ran meanwhile. `--kinds redeploy` makes a burst in which no
tick falls due (same interval, new code), so what the replicas spend is the wake-ups alone.
`--compare DIR` runs another checkout alternately with this one, run by run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from reconciler.crypto import generate_key  # noqa: E402
from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.storage.db import libpq_url  # noqa: E402
from tests.benchmarks.bench_reconciler import (  # noqa: E402
    Tree,
    _descendants,
    compared_trees,
    cpu_seconds,
    scratch_root,
    stop_processes,
    tree_env,
)
from tests.benchmarks.bench_scale import create_database  # noqa: E402
from tests.e2e.harness import free_port  # noqa: E402

TOKEN = "bench-writes-token"
KEY = generate_key("bench")


class Run:
    """`serve` plus `replicas - 1` workers of one tree against one database."""

    def __init__(self, tree: Tree, url: str, logs: Path, name: str, replicas: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen[bytes]] = []
        common = {
            "database_url": url,
            "executor_api_token": TOKEN,
            "encryption_key": KEY,
            "log_level": "WARNING",
        }
        for i in range(replicas):
            command = "serve" if i == 0 else "worker"
            env = tree_env(tree, port=self.port, **common)
            with (logs / f"{name}-{command}{i}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "reconciler.cli", command],
                        env=env,
                        cwd=tree.root,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        self.conn = psycopg.connect(libpq_url(url), autocommit=True)
        deadline = time.monotonic() + 300
        while True:
            if any(p.poll() is not None for p in self.processes):
                raise SystemExit(f"a process of {name} exited; see its log in {logs}")
            try:
                up = httpx.get(f"{self.base}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                up = False
            if up and self.scalar("SELECT count(*) FROM replicas") >= replicas:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not start in 300 s")
            time.sleep(0.2)

    def scalar(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        assert row is not None
        return row[0]

    def stop(self) -> None:
        stop_processes(self.processes)
        self.conn.close()


def plan(writes: int, strategies: int, seed: int, kinds: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The burst: (kind, strategy number, serial), the same for every run of one seed."""
    rng = random.Random(seed)
    ops: list[tuple[str, int, int]] = []
    fresh = strategies
    for serial in range(writes):
        kind = rng.choice(kinds)
        if kind == "deploy":
            ops.append((kind, fresh, serial))
            fresh += 1
        else:
            ops.append((kind, rng.randrange(strategies), serial))
    return ops


def write(client: httpx.Client, kind: str, number: int, serial: int, interval: int, same_code: bool = False) -> float:
    strategy_id = f"s{number:05d}"
    started = time.monotonic()
    if kind in ("deploy", "redeploy"):
        body = {
            "strategy_id": strategy_id,
            "user_id": "bench",
            "code": "RESULT = 0\n" if same_code else f"RESULT = {serial}\n",
            "execution_interval": interval,
        }
        answer = client.post("/strategies/deploy", json=body)
    else:
        answer = client.post(f"/strategies/{strategy_id}/{kind}")
    if answer.status_code not in (200, 201):
        raise SystemExit(f"{kind} {strategy_id} answered {answer.status_code}: {answer.text[:300]}")
    return time.monotonic() - started


class Waits:
    """Samples what the API's and the replicas' active backends wait for, every `every` seconds."""

    def __init__(self, url: str, every: float = 0.005) -> None:
        self.conn = psycopg.connect(libpq_url(url), autocommit=True)
        self.every = every
        self.api: collections.Counter[str] = collections.Counter()
        self.replicas: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Waits:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rows = self.conn.execute(
                "SELECT application_name, coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
                " WHERE state = 'active' AND pid <> pg_backend_pid() AND application_name LIKE 'strategy-executor%'"
            ).fetchall()
            self.samples += 1
            for application, wait in rows:
                (self.api if application == "strategy-executor api" else self.replicas)[wait] += 1
            time.sleep(self.every)

    def top(self, counter: collections.Counter[str], n: int = 5) -> dict[str, float]:
        """Backends waiting that way, on average per sample (so 2.0: two backends all the time)."""
        return {wait: round(count / max(1, self.samples), 2) for wait, count in counter.most_common(n)}


def _kind(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    if b"sandbox.zygote" in command:
        return "sandbox"
    if b"policy.worker" in command:
        return "compile"
    return "main"


def _split(pid: int) -> dict[str, float]:
    """CPU seconds of a replica process and its descendants (reaped ones included), by kind: the process
    itself, its sandbox (zygote, template, children), its compile workers."""
    clock = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = collections.defaultdict(float)
    for current in _descendants(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        kind = _kind(current)
        own = (int(fields[11]) + int(fields[12])) / clock
        reaped = (int(fields[13]) + int(fields[14])) / clock
        found[kind] += own
        # What a process reaped is its children's: the zygote's are sandboxed executions.
        found["sandbox" if kind == "sandbox" else "reaped"] += reaped
    return found


def cpu(run: Run, server: EmbeddedPostgres) -> dict[str, float]:
    """CPU seconds so far: the serve process (API and its replica) and the worker processes, each split
    into the process itself, its sandbox and its compile workers; and PostgreSQL."""
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    serve, *workers = (p.pid for p in run.processes)
    figures = {f"serve_{kind}": seconds for kind, seconds in _split(serve).items()}
    for pid in workers:
        for kind, seconds in _split(pid).items():
            figures[f"workers_{kind}"] = figures.get(f"workers_{kind}", 0.0) + seconds
    figures["postgres"] = cpu_seconds(postmaster, tree=True)
    return figures


def statement_calls(run: Run) -> list[tuple[str, int]]:
    """Statements run in this database since the reset, BEGIN and COMMIT included, the most called first."""
    rows = run.conn.execute(
        "SELECT regexp_replace(left(query, 200), '\\s+', ' ', 'g'), sum(calls)::bigint FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query NOT LIKE '%pg_stat_%' GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    return [(text, int(calls)) for text, calls in rows]


def commits(run: Run) -> int:
    return int(run.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def burst(tree: Tree, server: EmbeddedPostgres, logs: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    url = create_database(server, name)
    run = Run(tree, url, logs, name, args.replicas_now)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        with httpx.Client(base_url=run.base, headers=headers, timeout=120, limits=limits) as client:
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(lambda n: write(client, "deploy", n, n, args.interval), range(args.strategies)))
            # Settled: every strategy reconciled, so the burst starts from the same state each run.
            deadline = time.monotonic() + 60
            while run.scalar("SELECT count(*) FROM strategies WHERE reconciled_generation IS DISTINCT FROM generation"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: the deployed strategies were not reconciled in 60 s")
                time.sleep(0.2)
            time.sleep(1.0)
            ops = plan(args.writes, args.strategies, args.seed, tuple(args.kinds))
            run.conn.execute("SELECT pg_stat_statements_reset()")
            before = commits(run)
            cpu_before = cpu(run, server)
            load = os.getloadavg()[0]
            spy = None
            if args.profile:
                # py-spy (not a dependency of the project) on the last replica: a worker when there are some.
                target = run.processes[-1].pid
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(target),
                        "--subprocesses",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(Path(args.profile) / f"{name}-{tree.label}-{args.replicas_now}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            with Waits(url) as waits, ThreadPoolExecutor(args.concurrency) as pool:
                started = time.monotonic()
                latencies = list(pool.map(lambda op: write(client, *op, args.interval, args.same_code), ops))
                took = time.monotonic() - started
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            transactions = commits(run) - before
            ran = dict(
                run.conn.execute(
                    "SELECT substring(replica_id FROM '-([0-9]+)-[0-9a-f]+$'), count(*) FROM executions"
                    " WHERE claimed_at > now() - make_interval(secs => %s) GROUP BY 1",
                    (time.monotonic() - started,),
                ).fetchall()
            )
            executions = {"serve": ran.get(str(run.processes[0].pid), 0), "workers": sum(ran.values())}
            executions["workers"] -= executions["serve"]
            used = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu(run, server).items()}
            statements = statement_calls(run)
        # How long until the replicas caught up with the burst's last write.
        caught_up = time.monotonic()
        while run.scalar("SELECT count(*) FROM strategies WHERE reconciled_generation IS DISTINCT FROM generation"):
            if time.monotonic() - caught_up > 120:
                break
            time.sleep(0.05)
        lag = time.monotonic() - caught_up
    finally:
        run.stop()
    latencies.sort()
    result = {
        "tree": tree.label,
        "replicas": args.replicas_now,
        "writes": args.writes,
        "seconds": round(took, 2),
        "writes_per_s": round(args.writes / took, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "max_ms": round(1000 * latencies[-1], 1),
        "transactions": transactions,
        "statements_per_write": round(sum(calls for _, calls in statements) / args.writes, 2),
        "top_statements": {text[:70]: calls for text, calls in statements[:12]},
        # Beside the API's own one per write: the replicas' reconcile passes, claims, outcomes, heartbeats.
        "replica_transactions_per_write": round((transactions - args.writes) / args.writes, 2),
        "reconciled_after_s": round(lag, 2),
        "cpu_s": used,
        "executions": executions,
        "load_at_start": round(load, 1),
        "api_waits": waits.top(waits.api),
        "replica_waits": waits.top(waits.replicas),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=1500)
    parser.add_argument("--strategies", type=int, default=200, help="deployed before the burst")
    parser.add_argument("--interval", type=int, default=10, help="the strategies' execution_interval")
    parser.add_argument("--concurrency", type=int, default=16, help="API clients writing at once")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=["deploy", "redeploy", "stop", "start"],
        default=["deploy", "redeploy", "stop", "start"],
        help="the writes drawn from (redeploy alone: no tick falls due, so no execution runs in the burst)",
    )
    parser.add_argument("--same-code", action="store_true", help="redeploys keep the code (no compile)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the last replica during each burst (raw stacks)")
    parser.add_argument(
        "--compare",
        metavar="[LABEL=]DIR",
        action="append",
        default=[],
        help="another checkout to run alternately with this one (first in each round)",
    )
    args = parser.parse_args()
    trees = compared_trees(args.compare)
    root = scratch_root("se-bench-writes-")
    server = EmbeddedPostgres(
        data_dir=root / "cluster", server_options=("shared_preload_libraries=pg_stat_statements",)
    )
    server.start()
    results = []
    try:
        count = 0
        for _ in range(args.rounds):
            for replicas in args.replicas:
                for tree in trees:
                    count += 1
                    args.replicas_now = replicas
                    results.append(burst(tree, server, root, f"writes_{count}", args))
    finally:
        server.stop()
    print("summary (median seconds per burst over the rounds):")
    for replicas in args.replicas:
        for tree in trees:
            runs = [r["seconds"] for r in results if r["tree"] == tree.label and r["replicas"] == replicas]
            print(
                f"  {tree.label}: {replicas} replica(s) {statistics.median(runs):.2f} s ({', '.join(map(str, runs))})"
            )


if __name__ == "__main__":
    main()
