"""The floor under the sandbox's CPU per execution: a bare fork and exit of the preloaded interpreter.

    python tests/benchmarks/fork_floor.py [--runs 300]

Every execution is a fresh process cloned from the zygote's preloaded interpreter (numpy, pandas, the
policy, the child's code, warmed), and every such process is torn down at its end. Whatever a child
then does in Python, the kernel's part of that cycle is paid: copying the page-table entries of every
private page and every mapping at the clone, dropping them all at the exit. This measures that part
alone, with no Python in the child at all (a raw fork system call; the child's first instruction
back in user space is a raw exit_group), in the same memory layout as the zygote (its environment:
PYTHONMALLOC=malloc with glibc's huge-page tunable, single-threaded BLAS; its preload; `gc.freeze()`
and `malloc_trim(0)` before forking), the same heap in 4 KiB pages only (as the template's heap ends
up: a write by either process to a huge page they share splits it), and a bare interpreter.

It prints, for each: mappings, resident and anonymous kB, and the CPU milliseconds per fork charged
to the parent (the copy) and to the child (its exit), from rusage and wait4. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SYS_FORK = 57  # x86_64
_SYS_EXIT_GROUP = 231


def _layout() -> dict[str, int]:
    with open("/proc/self/maps") as maps:
        mappings = sum(1 for _ in maps)
    sizes = {"mappings": mappings}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB" and parts[0] in ("Rss:", "Anonymous:", "AnonHugePages:"):
                sizes[parts[0].rstrip(":").lower() + "_kb"] = int(parts[1])
    return sizes


def _measure(runs: int) -> dict[str, float]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.malloc_trim(0)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def cpu(usage: resource.struct_rusage) -> float:
        return usage.ru_utime + usage.ru_stime

    child = 0.0
    start = cpu(resource.getrusage(resource.RUSAGE_SELF))
    for _ in range(runs):
        pid = syscall(_SYS_FORK)
        if pid == 0:
            syscall(_SYS_EXIT_GROUP, 0)  # nothing of Python runs in the child but the call's return
        if pid < 0:
            raise OSError(ctypes.get_errno(), "fork")
        _, _, usage = os.wait4(pid, 0)
        child += cpu(usage)
    parent = cpu(resource.getrusage(resource.RUSAGE_SELF)) - start
    return {"parent_ms": 1000 * parent / runs, "child_ms": 1000 * child / runs}


def _probe(kind: str, runs: int) -> None:
    """Runs in a fresh interpreter with the zygote's environment: lay out memory, then measure."""
    if kind.startswith("preloaded"):
        from reconciler.sandbox import zygote

        zygote._preload()
    gc.collect()
    gc.freeze()
    print(json.dumps({**_layout(), **_measure(runs)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--probe", choices=("bare", "preloaded", "preloaded-4k"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        _probe(args.probe, args.runs)
        return
    from reconciler.sandbox.zygote_client import _MEMORY_VARIABLES

    env = {**os.environ, **_MEMORY_VARIABLES, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)
    print(
        f"{'interpreter':<11} {'mappings':>8} {'resident kB':>11} {'anon kB':>8} {'huge kB':>8} "
        f"{'parent ms':>9} {'child ms':>8} {'fork+exit ms':>12}"
    )
    for kind in ("bare", "preloaded", "preloaded-4k"):
        # "preloaded-4k": the same heap in 4 KiB pages only, as the template's becomes once the zygote
        # and the template have written into its huge pages (a write to a shared huge page splits it).
        probe_env = {k: v for k, v in env.items() if k != "GLIBC_TUNABLES"} if kind == "preloaded-4k" else env
        out = subprocess.run(
            [sys.executable, __file__, "--probe", kind, "--runs", str(args.runs)],
            env=probe_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        total = row["parent_ms"] + row["child_ms"]
        print(
            f"{kind:<11} {row['mappings']:>8} {row['rss_kb']:>11} {row['anonymous_kb']:>8} "
            f"{row.get('anonhugepages_kb', 0):>8} {row['parent_ms']:>9.3f} {row['child_ms']:>8.3f} {total:>12.3f}"
        )


if __name__ == "__main__":
    main()
