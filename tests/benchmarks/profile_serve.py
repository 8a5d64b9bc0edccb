"""The serve process's own Python calls per execution at its ceiling, counted by cProfile.

Not part of the test run. Run it with:

    .venv/bin/python tests/benchmarks/profile_serve.py [--seconds 10] [--tree DIR] [--top 30]

Starts `strategy-executor serve` as bench_reconciler.py's capacity phase does (its own embedded
PostgreSQL, 1000 trivial paper strategies deployed through the API, far more demand than it meets),
with a profiler that a signal switches on after the warm-up and off after `--seconds`. Prints the
calls per execution (every function call cProfile sees, Python and built-in), the round trips per
execution (psycopg's waits for the server, each one a reader, a future and a timer on the event
loop), the transactions per execution (the database's commit counter) and the functions that make
most of the calls. A count of calls does not depend on how busy the machine is, only on how the
executions batch (a batch's statements are shared by its outcomes), so two trees can be compared on a
shared machine where a wall-clock run cannot.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from tests.benchmarks import bench_reconciler as bench  # noqa: E402

# `serve` under a profiler switched on by SIGUSR1 and off (its statistics written) by SIGUSR2. The
# event loop runs on the main thread, where a signal handler runs too, so the profile is the loop's.
WRAPPER = r"""
import cProfile, os, runpy, signal, sys
profile = cProfile.Profile()
def on(*_): profile.enable()
def off(*_):
    profile.disable()
    profile.dump_stats(os.environ["PROFILE_OUT"])
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv = ["strategy-executor", "serve"]
runpy.run_module("reconciler.cli", run_name="__main__")
"""


class ProfiledServe(bench.Serve):
    def __init__(self, tree: bench.Tree, data_dir: Path, logs: Path, name: str, out: Path) -> None:
        original = bench.subprocess.Popen

        def popen(args: list[str], **kwargs: object) -> object:
            env = dict(kwargs.pop("env"))  # type: ignore[call-overload]
            env["PROFILE_OUT"] = str(out)
            return original([sys.executable, "-c", WRAPPER], env=env, **kwargs)  # type: ignore[call-overload]

        bench.subprocess.Popen = popen  # type: ignore[assignment,misc]
        try:
            super().__init__(tree, data_dir, logs, name)
        finally:
            bench.subprocess.Popen = original  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--strategies", type=int, default=1000)
    parser.add_argument("--tree", help="another checkout to profile instead of this one")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save", help="also write the profile (pstats) to this file")
    args = parser.parse_args()
    tree = bench.Tree("other", Path(args.tree).resolve()) if args.tree else bench.Tree("this", PROJECT_ROOT)
    with tempfile.TemporaryDirectory(prefix="profile-serve-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # the embedded server's own user enters it (as bench_reconciler.py's root)
        out = root / "serve.prof"
        serve = ProfiledServe(tree, root / "serve", root, "serve", out)
        try:
            serve.deploy(args.strategies, bench.TRIVIAL, interval=1)
            time.sleep(5)  # warm up: every strategy reconciled, the pipeline full
            count = "SELECT count(*) FROM executions WHERE status <> 'running'"
            commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            done = serve.conn.execute(count).fetchone()[0]  # type: ignore[index]
            committed = serve.conn.execute(commits).fetchone()[0]  # type: ignore[index]
            os.kill(serve.process.pid, signal.SIGUSR1)
            time.sleep(args.seconds)
            os.kill(serve.process.pid, signal.SIGUSR2)
            done = serve.conn.execute(count).fetchone()[0] - done  # type: ignore[index]
            time.sleep(1.5)  # the backends' statistics flushed
            committed = serve.conn.execute(commits).fetchone()[0] - committed  # type: ignore[index]
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # written in full
            failed = serve.conn.execute(
                "SELECT count(*) FROM executions WHERE status NOT IN ('succeeded', 'running')"
            ).fetchone()[0]  # type: ignore[index]
        finally:
            serve.stop()
        stats = pstats.Stats(str(out))
        if args.save:
            stats.dump_stats(args.save)
        raw = stats.stats  # type: ignore[attr-defined]
        calls = sum(entry[1] for entry in raw.values())

        # cProfile counts a coroutine or a generator once per resumption: statements, BEGINs and the
        # event loop's waits are counted by plain functions called once for each.
        def called(name: str, where: str) -> int:
            return sum(entry[1] for key, entry in raw.items() if key[2] == name and where in key[0])

        statements = called("validate_and_reorder_params", "psycopg")
        begins = called("_get_tx_start_command", "psycopg")
        waits = called("call_later", "base_events")  # psycopg's timer, one per wait (and the loop's few)
        tasks = sum(entry[1] for key, entry in raw.items() if key[2] == "create_task" and "base_events" in key[0])
        per = max(done, 1)
        print(
            f"{done} executions in {args.seconds:.0f} s under the profiler ({done / args.seconds:.0f}/s, {failed} "
            f"not succeeded): {calls / per:.0f} calls per execution; statements {statements / per:.2f} (BEGINs "
            f"{begins / per:.2f} besides, and as many COMMITs), timers {waits / per:.2f}, tasks {tasks / per:.2f}, "
            f"transactions {committed / per:.2f}"
        )
        print(f"top {args.top} functions by calls per execution:")
        for key, entry in sorted(raw.items(), key=lambda item: -item[1][1])[: args.top]:
            where = f"{Path(key[0]).name}:{key[1]}" if key[0] != "~" else ""
            print(f"  {entry[1] / per:7.1f}  {key[2]} {where}")


if __name__ == "__main__":
    main()
