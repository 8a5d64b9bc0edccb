"""Benchmark of the sandbox (not collected by pytest: run it directly).

    python tests/benchmarks/bench_sandbox.py [--runs 300] [--concurrency 5]
    python tests/benchmarks/bench_sandbox.py --before-tree DIR [--runs 300]

With `--before-tree`, the sandbox of another checkout of the project (e.g. the commit before a
change) runs beside this one, each in its own process (both import a package named `reconciler`),
alternating block by block; the same figures are printed for both, with the after/before ratios.
Without it, it measures, in one run on this host, two layer sets side by side (alternating run by run):
  before  the previous round's layers: network namespace, one shared sandbox uid, rlimits, seccomp
          (children forked plainly into the zygote's namespaces, no filesystem view, no cgroup);
  after   every layer: also the filesystem view, a PID and an IPC namespace per child, a uid per
          concurrent child, a memory cgroup per child where the host allows one.
(The seccomp filter is today's allow-list in both.) For each:
- the time per execution of an empty strategy through the real sandbox (from `Sandbox.run` to its
  outcome: the child, confinement, the strategy, the report), sequentially: median and p99;
- throughput with N executions in flight at once, and the CPU the whole replica side spends per
  execution (supervisor + zygote + children), from the kernel's accounting.
And once: a fresh `python -c "import pandas"` subprocess, the cost a per-execution interpreter would pay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[2]
if "--worker" not in sys.argv:  # a worker puts the tree it measures first instead
    sys.path.insert(0, str(ROOT))
    from reconciler.outcome import ExecutionRequest
    from reconciler.sandbox import Sandbox, SandboxLimits
elif TYPE_CHECKING:
    from reconciler.outcome import ExecutionRequest
    from reconciler.sandbox import Sandbox, SandboxLimits

EMPTY = "RESULT = None\n"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _zygote_cpu(pid: int) -> float:
    """CPU of the zygote and of every process under it so far: its own and its reaped children's
    (utime+stime+cutime+cstime), plus those of its live children (the template, pre-forked and
    running children), from /proc. Counting the live ones at both ends of a measurement keeps a
    child that lives across one end from being counted twice or not at all."""

    def ticks(stat: str) -> int:
        fields = stat.rsplit(")", 1)[1].split()
        return sum(int(value) for value in fields[11:15])

    total = ticks(Path(f"/proc/{pid}/stat").read_text())
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(OSError):  # reaped meanwhile: its time is in the zygote's cutime by now
            total += ticks(Path(f"/proc/{child}/stat").read_text())
    return total / os.sysconf("SC_CLK_TCK")


def fresh_interpreter(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pandas"], check=True)
        times.append(time.perf_counter() - start)
    return times


async def sequential(sandbox: Sandbox, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        request = ExecutionRequest(f"e{i}", "bench", EMPTY)
        start = time.perf_counter()
        outcome = await sandbox.run(request)
        times.append(time.perf_counter() - start)
        assert outcome.status == "succeeded", outcome
    return times


async def concurrent(sandbox: Sandbox, runs: int, concurrency: int) -> tuple[float, float]:
    queue = list(range(runs))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            outcome = await sandbox.run(ExecutionRequest(f"c{i}", "bench", EMPTY))
            assert outcome.status == "succeeded", outcome

    zygote_pid = sandbox._zygote.process.pid  # type: ignore[union-attr]
    cpu_before, zygote_before = _cpu_seconds(), _zygote_cpu(zygote_pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = (_cpu_seconds() - cpu_before) + (_zygote_cpu(zygote_pid) - zygote_before)
    return runs / elapsed, cpu / runs


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def previous_layers(limits: SandboxLimits) -> Sandbox:
    """The layer set before this round, rebuilt with the zygote's own switches."""

    class PreviousLayers(Sandbox):
        def _zygote_config(self) -> dict[str, Any]:
            config = super()._zygote_config()
            config.update(filesystem_view=False, namespaces_per_child=False, shared_uid=True, cgroup=None)
            return config

    return PreviousLayers(limits)


LIMITS = {"memory_mb": 100, "cpu_seconds": 5, "wall_seconds": 10.0}


def worker(tree: str) -> None:
    """One side of a `--before-tree` comparison: a Sandbox of `tree`, driven by JSON lines on stdin."""
    sys.path.insert(0, tree)
    global ExecutionRequest, Sandbox, SandboxLimits
    from reconciler.outcome import ExecutionRequest
    from reconciler.sandbox import Sandbox, SandboxLimits

    loop = asyncio.new_event_loop()
    sandbox = Sandbox(SandboxLimits(**LIMITS))  # type: ignore[arg-type]
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        reply: dict[str, Any] = {}
        if op == "start":
            start = time.perf_counter()
            loop.run_until_complete(sandbox.start())
            reply["startup"] = time.perf_counter() - start
            reply["layers"] = sorted(name for name, on in sandbox.layers.items() if on)
            loop.run_until_complete(sequential(sandbox, 20))  # warm-up
        elif op == "sequential":
            reply["times"] = loop.run_until_complete(sequential(sandbox, int(command["runs"])))
        elif op == "concurrent":
            throughput, cpu = loop.run_until_complete(
                concurrent(sandbox, int(command["runs"]), int(command["concurrency"]))
            )
            reply.update(throughput=throughput, cpu=cpu)
        elif op == "close":
            loop.run_until_complete(sandbox.close())
        print(json.dumps(reply), flush=True)
        if op == "close":
            break
    loop.close()


class Worker:
    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(tree)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker for {self.tree} ended")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        self.ask(op="close")
        self.process.wait(30)


def compare_trees(before_tree: Path, runs: int, concurrency: int) -> dict[str, dict[str, float]]:
    """This tree against another, each in its own worker process, alternating in small blocks."""
    workers = {"before": Worker(before_tree), "after": Worker(ROOT)}
    try:
        for label, worker_ in workers.items():
            reply = worker_.ask(op="start")
            print(f"[{label}] {worker_.tree}: zygote start-up {ms(reply['startup'])}")
            print(f"[{label}] active layers: {', '.join(reply['layers'])}")
        times: dict[str, list[float]] = {label: [] for label in workers}
        block = 10
        for _ in range(max(1, runs // block)):
            for label, worker_ in workers.items():
                times[label] += worker_.ask(op="sequential", runs=block)["times"]
        elapsed = dict.fromkeys(workers, 0.0)
        cpu = dict.fromkeys(workers, 0.0)
        blocks = 8
        per_block = max(concurrency, runs * 2 // blocks)
        for index in range(blocks):
            order = list(workers.items()) if index % 2 == 0 else list(reversed(workers.items()))
            for label, worker_ in order:
                reply = worker_.ask(op="concurrent", runs=per_block, concurrency=concurrency)
                elapsed[label] += per_block / reply["throughput"]
                cpu[label] += reply["cpu"] / blocks
    finally:
        for worker_ in workers.values():
            worker_.close()
    figures = {}
    for label in workers:
        ordered = sorted(times[label])
        median, p99 = statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]
        throughput = per_block * blocks / elapsed[label]
        figures[label] = {"median": median, "p99": p99, "throughput": throughput, "cpu": cpu[label]}
    return figures


async def measure(sandboxes: dict[str, Sandbox], runs: int, concurrency: int) -> dict[str, dict[str, float]]:
    """Both layer sets side by side, alternating (run by run, then block by block), so that a change
    in the host's load during the benchmark weighs on both alike."""
    for label, sandbox in sandboxes.items():
        start = time.perf_counter()
        await sandbox.start()
        print(f"[{label}] zygote start-up (once per replica): {ms(time.perf_counter() - start)}")
        active = sorted(name for name, on in sandbox.layers.items() if on)
        print(f"[{label}] active layers: {', '.join(active)}")
        await sequential(sandbox, 20)  # warm-up
    times: dict[str, list[float]] = {label: [] for label in sandboxes}
    for _ in range(runs):
        for label, sandbox in sandboxes.items():
            times[label] += await sequential(sandbox, 1)
    elapsed = dict.fromkeys(sandboxes, 0.0)
    cpu = dict.fromkeys(sandboxes, 0.0)
    blocks = 4
    for _ in range(blocks):
        for label, sandbox in sandboxes.items():
            throughput, cpu_per_run = await concurrent(sandbox, runs * 2 // blocks, concurrency)
            elapsed[label] += (runs * 2 // blocks) / throughput
            cpu[label] += cpu_per_run / blocks
    figures = {}
    for label, sandbox in sandboxes.items():
        await sandbox.close()
        ordered = sorted(times[label])
        median, p99 = statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]
        throughput = (runs * 2 // blocks) * blocks / elapsed[label]
        print(
            f"[{label}] {runs} sequential runs of an empty strategy: median {ms(median)}, p99 {ms(p99)}; "
            f"{concurrency} concurrent: {throughput:.0f} executions/s, CPU per execution {ms(cpu[label])}"
        )
        figures[label] = {"median": median, "p99": p99, "throughput": throughput, "cpu": cpu[label]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--fresh-runs", type=int, default=10)
    parser.add_argument("--before-tree", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    # Other processes on the host compete for the same two cores: say how busy it was.
    print(f"host load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.before_tree is not None:
        figures = compare_trees(args.before_tree.resolve(), args.runs, args.concurrency)
        print(f"host load average after: {os.getloadavg()[0]:.2f}")
        print()
        print("| tree | median | p99 | CPU per execution | executions/s |")
        print("|---|---|---|---|---|")
        for label, tree in (("before", args.before_tree), ("after", ROOT)):
            row = figures[label]
            print(
                f"| {label} ({tree.name}) | {ms(row['median'])} | {ms(row['p99'])} | {ms(row['cpu'])} "
                f"| {row['throughput']:.0f} |"
            )
        ratio = {key: figures["after"][key] / figures["before"][key] for key in figures["after"]}
        print(
            f"| after / before | {ratio['median']:.2f} | {ratio['p99']:.2f} | {ratio['cpu']:.2f} "
            f"| {ratio['throughput']:.2f} |"
        )
        after = figures["after"]
        ok = after["median"] <= 0.010 and after["p99"] <= 0.025
        print(f"targets (median <= 10 ms, p99 <= 25 ms): {'met' if ok else 'NOT met'}")
        print(f"CPU per execution after / before: {ratio['cpu']:.2f} (target <= 0.5)")
        return
    asyncio.run(compare_layers(args))


async def compare_layers(args: argparse.Namespace) -> None:
    limits = SandboxLimits(**LIMITS)  # type: ignore[arg-type]
    figures = await measure({"before": previous_layers(limits), "after": Sandbox(limits)}, args.runs, args.concurrency)
    before, after = figures["before"], figures["after"]
    fresh_median = statistics.median(fresh_interpreter(args.fresh_runs))
    print(f"fresh `python -c 'import pandas'`, {args.fresh_runs} runs: median {ms(fresh_median)}")
    print(f"host load average after: {os.getloadavg()[0]:.2f}")

    print()
    print("| layer set | median | p99 | CPU per execution | executions/s |")
    print("|---|---|---|---|---|")
    for label, figures in (("before", before), ("after", after)):
        print(
            f"| {label} | {ms(figures['median'])} | {ms(figures['p99'])} | {ms(figures['cpu'])} "
            f"| {figures['throughput']:.0f} |"
        )
    ok = after["median"] <= 0.010 and after["p99"] <= 0.025
    print(f"targets with every layer (median <= 10 ms, p99 <= 25 ms): {'met' if ok else 'NOT met'}")
    print(f"speed-up over a fresh interpreter: {fresh_median / after['median']:.1f}x")


if __name__ == "__main__":
    main()
