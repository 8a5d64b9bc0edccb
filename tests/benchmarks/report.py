"""The side-by-side benchmark report: this project against the design it replaces, in one run.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python tests/benchmarks/report.py [--quick] [--out tests/benchmarks/results]

Runs, on this machine and in this one run:
- the sandbox scenario (bench_sandbox): an empty strategy through the real sandbox, sequential and 5
  concurrent, against a fresh `python -c "import pandas"`;
- the reconciler scenarios (bench_reconciler's building blocks: a durable embedded PostgreSQL and real
  `strategy-executor worker` processes): capacity, schedule lag, memory (PSS) at 100 / 1,000 /
  10,000 strategies;
- the same workload on the replaced design (baseline_apscheduler.py: APScheduler 3 +
  ThreadPoolExecutor(5) that `exec`s the code in threads), each scenario in a process of its own.

Writes report.md, three PNG charts and figures.json to the results folder. The machine may be shared
and busy: the report states its load, and the ratios measured side by side in one run are what count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.sandbox import Sandbox, SandboxLimits  # noqa: E402
from reconciler.storage.db import libpq_url  # noqa: E402
from tests.benchmarks import bench_reconciler, bench_sandbox  # noqa: E402

LAG_INTERVAL = 5


def log(text: str) -> None:
    print(text, flush=True)


# --- the sandbox -----------------------------------------------------------------------------------


async def sandbox_figures(runs: int, fresh_runs: int) -> dict[str, float]:
    sandbox = Sandbox(SandboxLimits(memory_mb=100, cpu_seconds=5, wall_seconds=10.0))
    started = time.perf_counter()
    await sandbox.start()
    start_ms = (time.perf_counter() - started) * 1000
    try:
        await bench_sandbox.sequential(sandbox, 20)  # warm-up
        times = sorted(await bench_sandbox.sequential(sandbox, runs))
        throughput, cpu = await bench_sandbox.concurrent(sandbox, runs * 2, 5)
    finally:
        await sandbox.close()
    fresh = bench_sandbox.fresh_interpreter(fresh_runs)
    return {
        "zygote_start_ms": start_ms,
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": times[int(len(times) * 0.95) - 1] * 1000,
        "fresh_interpreter_ms": statistics.median(fresh) * 1000,
        "concurrent_per_second": throughput,
        "cpu_per_execution_ms": cpu * 1000,
    }


# --- the replica -------------------------------------------------------------------------------------


def our_lag(bench: bench_reconciler.Bench, count: int, window: float) -> dict[str, float]:
    """Schedule lag (start - scheduled tick) of `count` strategies every LAG_INTERVAL s, ticks spread evenly."""
    url = bench.database()
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    workers = bench.workers(url, 1)
    bench_reconciler.deploy(conn, count, bench_reconciler.TRIVIAL, interval=LAG_INTERVAL, spread=LAG_INTERVAL)
    time.sleep(LAG_INTERVAL)  # the first ticks ran as deployed; steady state from here
    window_start = conn.execute("SELECT now()").fetchone()[0]
    time.sleep(window)
    lags = sorted(
        row[0]
        for row in conn.execute(
            "SELECT extract(epoch FROM started_at - scheduled_for) * 1000 FROM executions "
            "WHERE scheduled_for >= %s AND status = 'succeeded' AND trigger = 'schedule'",
            (window_start,),
        ).fetchall()
    )
    missed = conn.execute("SELECT coalesce(sum(missed_executions), 0) FROM strategy_status").fetchone()[0]
    bench_reconciler.stop_all(conn, workers)
    if not lags:
        return {"executions": 0}
    return {
        "executions": len(lags),
        "p50_ms": float(statistics.median(lags)),
        "p99_ms": float(lags[min(len(lags) - 1, int(len(lags) * 0.99))]),
        "missed": int(missed),
    }


def our_memory(bench: bench_reconciler.Bench, count: int) -> dict[str, float]:
    """Memory (PSS) of one replica, its zygote and template once `count` strategies have each run once."""
    url = bench.database()
    conn = psycopg.connect(libpq_url(url), autocommit=True)
    workers = bench.workers(url, 1)
    bench_reconciler.deploy(conn, count, bench_reconciler.TRIVIAL, interval=3600)
    deadline = time.monotonic() + 600
    ran = 0
    while time.monotonic() < deadline:
        ran = conn.execute("SELECT count(*) FROM executions WHERE status <> 'running'").fetchone()[0]
        if ran >= count:
            break
        time.sleep(0.5)
    time.sleep(2)
    mb, _ = bench_reconciler.memory_mb(workers[0].pid)
    bench_reconciler.stop_all(conn, workers)
    return {"memory_mb": mb, "ran": ran}


def postgres_memory_mb(server: EmbeddedPostgres) -> float:
    pid = int(server.pgdata.joinpath("postmaster.pid").read_text().split()[0])
    return bench_reconciler.memory_mb(pid)[0]


# --- the replaced design ----------------------------------------------------------------------------


def baseline(scenario: str, **options: object) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "baseline_apscheduler.py"), scenario]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise SystemExit(f"baseline {scenario} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


# --- the report ----------------------------------------------------------------------------------------


def ratio(ours: float, theirs: float) -> str:
    """strategy-executor's figure over the replaced design's, readable either way round."""
    if not ours or not theirs:
        return "-"
    value = ours / theirs
    return f"{value:.1f}x" if value >= 1 else f"1/{1 / value:.0f}"


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ours, theirs = figures["ours"], figures["baseline"]
    count = figures["lag_strategies"]
    rows = [
        (
            "executions/s, trivial strategy (capacity)",
            f"{ours['capacity']:.0f}",
            f"{theirs['capacity']:.0f}",
            ratio(ours["capacity"], theirs["capacity"]),
        )
    ]
    for quantile in ("p50", "p99"):
        a, b = ours["lag"].get(f"{quantile}_ms"), theirs["lag"].get(f"{quantile}_ms")
        rows.append(
            (
                f"schedule lag {quantile}, {count} strategies every {LAG_INTERVAL} s",
                "-" if a is None else f"{a:.1f} ms",
                "-" if b is None else f"{b:.1f} ms",
                ratio(a or 0, b or 0),
            )
        )
    for count_key, mb in ours["memory"].items():
        other = theirs["memory"][count_key]
        rows.append(
            (
                f"memory (PSS), {int(count_key):,} strategies",
                f"{mb['memory_mb']:.0f} MB",
                f"{other['memory_mb']:.0f} MB",
                ratio(mb["memory_mb"], other["memory_mb"]),
            )
        )
    rows.append(("a strategy can read another tenant's secret / break the process", "no", "yes", ""))
    rows.append(("outcomes survive a crash (recorded in PostgreSQL)", "yes", "no", ""))
    return rows


def markdown_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [
        "| figure | strategy-executor (1 replica) | APScheduler 3 + threads (replaced) | ratio (ours / replaced) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def charts(figures: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, theirs = figures["ours"], figures["baseline"]
    colours = ("#2b6cb0", "#c05621")
    names = ("strategy-executor", "APScheduler + threads")
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    values = [ours["capacity"], theirs["capacity"]]
    ax.bar(names, values, color=colours)
    ax.set_yscale("log")
    ax.set_ylabel("executions/s (log scale)")
    ax.set_title("Capacity, trivial strategy")
    for i, value in enumerate(values):
        ax.annotate(f"{value:.0f}", (i, value), ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    written.append("throughput.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.38
    for i, (name, source, colour) in enumerate(zip(names, (ours, theirs), colours, strict=True)):
        lag = source["lag"]
        ax.bar(
            [q + (i - 0.5) * width for q in range(2)],
            [lag.get("p50_ms", 0), lag.get("p99_ms", 0)],
            width,
            label=name,
            color=colour,
        )
    ax.set_xticks(range(2), ["p50", "p99"])
    ax.set_ylabel("start - scheduled tick (ms)")
    ax.set_title(f"Schedule lag, {figures['lag_strategies']} strategies every {LAG_INTERVAL} s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lag.png", dpi=110)
    plt.close(fig)
    written.append("lag.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    counts = [int(c) for c in ours["memory"]]
    for name, source, colour in zip(names, (ours, theirs), colours, strict=True):
        ax.plot(counts, [source["memory"][str(c)]["memory_mb"] for c in counts], marker="o", label=name, color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("deployed strategies (log scale)")
    ax.set_ylabel("memory, PSS (MB)")
    ax.set_title("Memory, PSS (replica + zygote + template vs the scheduler process)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    written.append("memory.png")
    return written


def write_report(figures: dict[str, Any], out: Path, command: str) -> Path:
    charts(figures, out)
    sandbox = figures["sandbox"]
    slower = sandbox["fresh_interpreter_ms"] / sandbox["median_ms"]
    cpu = sandbox["cpu_per_execution_ms"]
    load = figures["machine"]
    memory_text = _memory_text(figures)
    text = f"""# strategy-executor against the design it replaces

Measured in one run of `{command}` started {figures["when"]}, on {load["cores"]} cores
({load["platform"]}).

**This machine is shared with other work, which ran on the same cores during the measurement**
(load average {load["load_before"]:.2f} before and {load["load_after"]:.2f} after, on {load["cores"]} cores;
above {load["cores"]}, processes were waiting for a core). Absolute figures are lower than on a quiet
machine and vary from run to run; the two designs were measured one after the other in this same
run, so their ratios are what this report is for. The README's Performance section gives the
replica's figures measured on the same machine when it was quiet.

## Summary

{markdown_table(summary_rows(figures))}

![capacity](throughput.png) ![lag](lag.png) ![memory](memory.png)

## What was measured

**strategy-executor**: one `strategy-executor worker` process (5 slots) against a durable embedded
PostgreSQL (fsync on), every execution a fork of the sandbox zygote with every layer the host allows,
every claim and outcome committed. Memory is the replica and its zygote (and any live child);
PostgreSQL, shared by every replica, used {figures["postgres_memory_mb"]:.0f} MB at the end of the run.

**The replaced design**: APScheduler 3 `BackgroundScheduler` with `ThreadPoolExecutor(5)`, one interval
job per strategy, coalescing and one instance per strategy (the replica's rules), each run an `exec`
of the strategy's compiled code with a trimmed `__builtins__` and pandas/numpy in its namespace, in
one process. Where the old design's details are unknown the choice favours it: code compiled once per
strategy, nothing persisted, no isolation of any kind.

The workload is the same for both: the trivial strategy `RESULT = 1`; capacity with every strategy
due every second (3,000 strategies for the replica, {figures["baseline_capacity_strategies"]:,} for the
scheduler, each far beyond what it can run); lag with {figures["lag_strategies"]} strategies every
{LAG_INTERVAL} s, ticks spread evenly (half of the lower of the two capacities), after one interval of warm-up,
over {figures["window"]:.0f} s; memory after each of N strategies has run once.

## Reading it

The replaced design runs a trivial strategy faster: an `exec` in a thread costs microseconds, a fork
into a confined process a few milliseconds, and each outcome here is a committed row. That speed is
what the old design bought by giving up the two properties this project exists for: any strategy
could read every tenant's decrypted exchange secret in the shared process (`exec` with trimmed
builtins is not a boundary), and a CPU, memory or wall-clock limit in a thread limits the whole
service. It is also one process on one machine: it cannot add a second machine, and a crash loses
what was running without a record. The replica's capacity is per replica; more replicas (on more
machines, against one PostgreSQL) add to it.

Memory: {memory_text}

## The sandbox scenario

| figure | value |
| --- | --- |
| zygote start (once per replica) | {sandbox["zygote_start_ms"]:.0f} ms |
| empty strategy through the sandbox, median / p95 | {sandbox["median_ms"]:.2f} / {sandbox["p95_ms"]:.2f} ms |
| a fresh `python -c "import pandas"` instead | {sandbox["fresh_interpreter_ms"]:.0f} ms ({slower:.0f}x slower) |
| 5 concurrent executions | {sandbox["concurrent_per_second"]:.0f} executions/s, {cpu:.2f} ms CPU each |

## Details

Schedule lag of the replica: {_lag_text(figures["ours"]["lag"])}.
Schedule lag of the scheduler: {_lag_text(figures["baseline"]["lag"])}.

The raw figures are in `figures.json`.
"""
    path = out / "report.md"
    path.write_text(text)
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return path


def _memory_text(figures: dict[str, Any]) -> str:
    counts = sorted(figures["ours"]["memory"], key=int)
    first, last = counts[0], counts[-1]
    parts = []
    for name, source in (("the replica (with its zygote)", figures["ours"]), ("the scheduler", figures["baseline"])):
        low, high = source["memory"][first]["memory_mb"], source["memory"][last]["memory_mb"]
        per = (high - low) / (int(last) - int(first)) * 1024
        parts.append(
            f"{name} used {low:.0f} MB at {int(first):,} strategies and {high:.0f} MB at {int(last):,} "
            f"({per:+.1f} KB per strategy)"
        )
    return (
        "; ".join(parts)
        + ". A replica holds no strategy between its runs (they live in PostgreSQL), so its memory is the "
        "fixed cost of a Python process with pandas and numpy plus the zygote's; the scheduler holds every "
        "job and every strategy's STATE in its own heap (here an empty one: real strategies' state adds to it)."
    )


def _lag_text(lag: dict[str, Any]) -> str:
    if not lag.get("executions"):
        return "no executions measured"
    missed = f", {lag['missed']} ticks missed" if "missed" in lag else ""
    return f"{lag['executions']} executions, p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms{missed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter windows; memory at 100 and 1,000 only")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="the results folder")
    args = parser.parse_args()
    window = 5.0 if args.quick else 15.0
    counts = [100, 1000] if args.quick else [100, 1000, 10000]
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "window": window,
        "machine": {
            "cores": os.cpu_count(),
            "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "load_before": os.getloadavg()[0],
        },
    }

    log("sandbox scenario ...")
    figures["sandbox"] = asyncio.run(sandbox_figures(50 if args.quick else 200, 3 if args.quick else 10))
    log(f"  {figures['sandbox']}")

    root = Path(tempfile.mkdtemp(prefix="se-report-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(data_dir=root / "cluster")
    server.start()
    bench = bench_reconciler.Bench(server, root)
    ours: dict[str, Any] = {"memory": {}}
    theirs: dict[str, Any] = {"memory": {}}
    try:
        log("capacity ...")
        ours["capacity"] = bench_reconciler.capacity(bench, window)
        figures["baseline_capacity_strategies"] = 10000 if args.quick else 20000
        theirs["capacity"] = baseline(
            "capacity", count=figures["baseline_capacity_strategies"], interval=1, window=window
        )["executions_per_second"]
        log(f"  replica {ours['capacity']:.0f}/s, scheduler {theirs['capacity']:.0f}/s")

        # The same workload for both: half of the lower capacity, so neither is saturated.
        count = max(1, int(0.5 * min(ours["capacity"], theirs["capacity"]) * LAG_INTERVAL))
        figures["lag_strategies"] = count
        log(f"lag, {count} strategies every {LAG_INTERVAL}s ...")
        ours["lag"] = our_lag(bench, count, window)
        theirs["lag"] = baseline("lag", count=count, interval=LAG_INTERVAL, window=window)
        log(f"  replica {ours['lag']}, scheduler {theirs['lag']}")

        for strategies in counts:
            log(f"memory, {strategies} strategies ...")
            ours["memory"][str(strategies)] = our_memory(bench, strategies)
            theirs["memory"][str(strategies)] = baseline("memory", count=strategies)
            log(f"  replica {ours['memory'][str(strategies)]}, scheduler {theirs['memory'][str(strategies)]}")
        figures["postgres_memory_mb"] = postgres_memory_mb(server)
    finally:
        server.stop()
    figures["ours"], figures["baseline"] = ours, theirs
    figures["machine"]["load_after"] = os.getloadavg()[0]
    command = "python tests/benchmarks/report.py" + (" --quick" if args.quick else "")
    path = write_report(figures, args.out, command)
    log(markdown_table(summary_rows(figures)))
    log(f"report: {path}")


if __name__ == "__main__":
    main()
