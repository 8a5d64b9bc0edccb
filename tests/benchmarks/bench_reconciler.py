"""Reconciler benchmark: one replica's capacity, schedule lag, memory, idle cost, and scaling.

Not part of the test run (pytest collects test_*.py only). Run it with:

    .venv/bin/python tests/benchmarks/bench_reconciler.py [--quick]

It starts its own durable embedded PostgreSQL (fsync on, as in production) and real
`strategy-executor worker` processes, and prints one line per figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.storage.db import libpq_url  # noqa: E402
from reconciler.storage.migrate import migrate  # noqa: E402
from tests.e2e.harness import Service, service_env  # noqa: E402

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


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the replica, its zygote, live children)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


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


def lag(bench: Bench, rate: float, load: float, seconds: float) -> None:
    interval = 5
    count = max(1, int(rate * load * interval))
    url = bench.database()
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    workers = bench.workers(url, 1)
    deploy(conn, count, TRIVIAL, interval=interval, spread=interval)
    time.sleep(interval)  # the first ticks ran as deployed; measure steady state from here
    window_start = conn.execute("SELECT now()").fetchone()[0]
    time.sleep(seconds)
    rows = conn.execute(
        "SELECT extract(epoch FROM started_at - scheduled_for) * 1000, "
        "extract(epoch FROM claimed_at - scheduled_for) * 1000 FROM executions "
        "WHERE scheduled_for >= %s AND status = 'succeeded' AND trigger = 'schedule'",
        (window_start,),
    ).fetchall()
    lags = [row[0] for row in rows]
    claim_lags = sorted(row[1] for row in rows)
    missed = conn.execute("SELECT sum(missed_executions) FROM strategy_status").fetchone()[0]
    stop_all(conn, workers)
    if not lags:
        print(f"lag at {load:.0%}: no executions measured")
        return
    lags.sort()
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"schedule lag at {load:.0%} of capacity ({count} strategies every {interval}s, {len(lags)} executions): "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, missed ticks {missed} "
        f"(claimed after p50 {statistics.median(claim_lags):.1f} ms, "
        f"p99 {claim_lags[min(len(claim_lags) - 1, int(len(claim_lags) * 0.99))]:.1f} ms)"
    )


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
        mb = rss_mb(workers[0].pid)
        stop_all(conn, workers)
        print(f"memory: replica + zygote resident {mb:.0f} MB with {count} deployed strategies")


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
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer strategies")
    parser.add_argument("--only", choices=["capacity", "lag", "memory", "idle", "scaling"])
    parser.add_argument("--rate", type=float, help="with --only lag: the capacity to load against")
    args = parser.parse_args()
    window = 5.0 if args.quick else 15.0
    root = Path(tempfile.mkdtemp(prefix="se-bench-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(data_dir=root / "cluster")
    server.start()
    print(f"machine: {os.cpu_count()} cores; PostgreSQL durable (fsync on); logs in {root}")
    bench = Bench(server, root)
    try:
        if args.only in (None, "capacity", "lag"):
            rate = args.rate if args.only == "lag" and args.rate else capacity(bench, window)
            if args.only != "capacity":
                lag(bench, rate, 0.5, window)
                lag(bench, rate, 0.9, window)
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
