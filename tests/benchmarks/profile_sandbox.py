"""Where the CPU of one sandbox execution goes, per process and per phase (not collected by pytest).

    python tests/benchmarks/profile_sandbox.py [--runs 1000] [--concurrency 5] [--perf] [--tree DIR]

Runs an empty strategy N times, C at once, through a real `Sandbox` (supervisor, zygote, one fresh
child each), as `bench_sandbox.py` does, and prints a table of CPU milliseconds and minor page faults
per execution:
- supervisor: this process's own rusage (its event loop, the conversation with each child);
- zygote: its rusage from /proc; the clone calls alone, from the zygote's own count (profile mode);
- template (where the zygote has one): its rusage from /proc, i.e. the clone of each child;
- child: the kernel's accounting of each reaped child (wait4), split into phases by stamps the child
  takes itself (getrusage at each phase boundary, profile mode); "exit" is what the kernel charged
  after the last stamp: sending the report and tearing the process down.
With `--perf` (needs `perf` and permission to sample the kernel), the same load is also sampled with
`perf record -g`, and the samples of each process are sorted by what the kernel was doing (fork,
page faults by kind, seccomp, exit...) or "user" for the interpreter's own work.
`--tree DIR` profiles another checkout of the project (e.g. an older commit); a tree without the
profile stamps gets the process rows only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EMPTY = "RESULT = None\n"

# perf: the first rule whose frames appear in a kernel stack names the sample (outermost wins ties
# by order here: fork before page fault, since a fork's own faults are part of the fork).
PERF_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("clone: page-table copy", ("copy_page_range", "dup_mmap", "dup_mm")),
    ("clone: namespaces", ("copy_namespaces", "create_new_namespaces")),
    ("clone: other", ("copy_process", "kernel_clone")),
    ("exit: address space", ("exit_mmap", "mmput")),
    ("exit: other", ("do_exit", "do_group_exit", "release_task")),
    ("page fault: copy-on-write", ("do_wp_page", "wp_page_copy")),
    ("page fault: huge page split", ("__split_huge_pmd", "do_huge_pmd_wp_page")),
    ("page fault: file", ("do_fault", "filemap_map_pages", "do_read_fault")),
    ("page fault: other", ("asm_exc_page_fault",)),
    ("seccomp: load", ("do_seccomp", "seccomp_set_mode_filter", "bpf_prog_create_from_user", "do_jit")),
    ("seccomp: filtering", ("__seccomp_filter",)),
    ("cgroup write", ("cgroup_procs_write", "__cgroup_procs_write", "cgroup_attach_task")),
    (
        "socket I/O",
        ("__sys_sendmsg", "__sys_recvmsg", "__sys_sendto", "__sys_recvfrom", "sock_read_iter", "sock_write_iter"),
    ),
    ("wait/reap", ("kernel_wait4", "do_wait")),
    ("epoll/select", ("do_epoll_wait", "do_select", "core_sys_select")),
    ("other system calls", ("do_syscall_64",)),
]


def _proc_stat(pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "minflt": int(fields[7]),
        "cminflt": int(fields[8]),
        "user": int(fields[11]) / tick,
        "system": int(fields[12]) / tick,
        "cuser": int(fields[13]) / tick,
        "csystem": int(fields[14]) / tick,
    }


async def _load(args: argparse.Namespace, window: Path | None) -> dict[str, Any]:
    from reconciler.outcome import ExecutionRequest
    from reconciler.sandbox import Sandbox, SandboxLimits, supervisor

    class Profiled(Sandbox):
        def _zygote_config(self) -> dict[str, Any]:
            return {**super()._zygote_config(), "profile": True}

    children: list[tuple[Any, Any]] = []
    real_classify = supervisor.classify

    def classify(observed: Any, exit_info: Any, *rest: Any) -> Any:
        children.append(((observed.report or {}).get("phases"), exit_info))
        return real_classify(observed, exit_info, *rest)

    box = Profiled(SandboxLimits(memory_mb=100, cpu_seconds=5, wall_seconds=10.0))
    await box.start()
    zygote = box._zygote.process.pid  # type: ignore[union-attr]
    for i in range(20):
        await box.run(ExecutionRequest(f"w{i}", "bench", EMPTY))
    supervisor.classify = classify  # type: ignore[assignment]
    queue = list(range(args.runs))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            outcome = await box.run(ExecutionRequest(f"p{i}", "bench", EMPTY))
            assert outcome.status == "succeeded", outcome

    status = await box.zygote_status()
    forks_before, template = status.get("forks", [0.0, 0.0, 0, 0]), status.get("template")
    template_before = _proc_stat(template) if template else None
    own_before, zygote_before = resource.getrusage(resource.RUSAGE_SELF), _proc_stat(zygote)
    started, clock_before = time.perf_counter(), time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed, clock_after = time.perf_counter() - started, time.monotonic()
    own_after, zygote_after = resource.getrusage(resource.RUSAGE_SELF), _proc_stat(zygote)
    template_after = _proc_stat(template) if template else None
    forks_after = (await box.zygote_status()).get("forks", [0.0, 0.0, 0, 0])
    supervisor.classify = real_classify  # type: ignore[assignment]
    await box.close()
    if window is not None:
        window.write_text(
            json.dumps(
                {
                    "supervisor": os.getpid(),
                    "zygote": zygote,
                    "template": template,
                    "from": clock_before,
                    "to": clock_after,
                }
            )
        )
    return {
        "elapsed": elapsed,
        "supervisor": (
            own_after.ru_utime - own_before.ru_utime,
            own_after.ru_stime - own_before.ru_stime,
            own_after.ru_minflt - own_before.ru_minflt,
        ),
        "zygote": tuple(zygote_after[k] - zygote_before[k] for k in ("user", "system", "minflt")),
        "reaped": tuple(zygote_after[k] - zygote_before[k] for k in ("cuser", "csystem", "cminflt")),
        "forks": [after - before for after, before in zip(forks_after, forks_before, strict=True)],
        "template": None
        if template_before is None or template_after is None
        else tuple(template_after[k] - template_before[k] for k in ("user", "system", "minflt")),
        "children": children,
    }


def _rows(figures: dict[str, Any], runs: int) -> list[tuple[str, str, float, float, float]]:
    """(process, phase, user ms, system ms, minor faults) per execution."""
    per = 1000.0 / runs
    rows: list[tuple[str, str, float, float, float]] = []
    user, system, faults = figures["supervisor"]
    rows.append(("supervisor", "event loop, conversation, outcome", user * per, system * per, faults / runs))
    user, system, faults = figures["zygote"]
    fork_user, fork_system, fork_faults, forks = figures["forks"]
    if figures.get("template"):
        rows.append(("zygote", "control loop, fork requests, reaping", user * per, system * per, faults / runs))
        user, system, faults = figures["template"]
        rows.append(("template", "clone of the child (all of its CPU)", user * per, system * per, faults / runs))
    elif forks:
        rows.append(("zygote", "clone of the child", fork_user * per, fork_system * per, fork_faults / runs))
        rows.append(
            (
                "zygote",
                "control loop, reaping, its copy-on-write",
                (user - fork_user) * per,
                (system - fork_system) * per,
                (faults - fork_faults) / runs,
            )
        )
    else:
        rows.append(("zygote", "all (clone, loop, reaping)", user * per, system * per, faults / runs))
    phases: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    order: list[str] = []
    for stamps, exit_info in figures["children"]:
        if not stamps or not hasattr(exit_info, "minor_faults"):  # a tree without the profile stamps
            continue
        previous = ("", 0.0, 0.0, 0)
        for stamp in [
            *stamps,
            ("exit: send the report, tear down", exit_info.user, exit_info.system, exit_info.minor_faults),
        ]:
            name = stamp[0]
            if name not in phases:
                order.append(name)
            for index in range(3):
                phases[name][index] += stamp[index + 1] - previous[index + 1]
            previous = stamp
    count = len(figures["children"]) or 1
    labels = {
        "forked": "fork return (after-fork hooks)",
        "confined": "confinement (cgroup, fds, rlimits, uid, seccomp)",
        "request loaded": "request received, code unmarshalled",
        "namespace built": "reseed, namespace (CONFIG, STATE, pd, np, client)",
        "strategy ran": "the strategy itself",
        "report built": "RESULT/STATE to JSON, report",
    }
    for name in order:
        user, system, faults = phases[name]
        rows.append(("child", labels.get(name, name), user * 1000 / count, system * 1000 / count, faults / count))
    if not order:  # the children the zygote reaped meanwhile, from its /proc (cutime, cstime, cminflt)
        user, system, faults = figures["reaped"]
        rows.append(("child", "all (no phase stamps in this tree)", user * per, system * per, faults / runs))
    return rows


def _print_table(rows: list[tuple[str, str, float, float, float]], figures: dict[str, Any], runs: int) -> None:
    print("| process | phase | user ms | system ms | CPU ms | minor faults |")
    print("|---|---|---|---|---|---|")
    total = [0.0, 0.0, 0.0]
    for process, phase, user, system, faults in rows:
        print(f"| {process} | {phase} | {user:.2f} | {system:.2f} | {user + system:.2f} | {faults:.0f} |")
        total = [total[0] + user, total[1] + system, total[2] + faults]
    print(
        f"| **all** | per execution | {total[0]:.2f} | {total[1]:.2f} | **{total[0] + total[1]:.2f}** "
        f"| {total[2]:.0f} |"
    )
    print(f"({runs / figures['elapsed']:.0f} executions/s during the profile)")


def _perf_split(data: Path, window: dict[str, Any]) -> None:
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,time,ip,sym"], capture_output=True, text=True, check=True
    ).stdout
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for block in script.split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines()]
        if not lines:
            continue
        head = lines[0].split()
        try:
            pid, when = int(head[0]), float(head[1].rstrip(":"))
        except (ValueError, IndexError):
            continue
        if not window["from"] <= when <= window["to"]:
            continue
        roles = {window["supervisor"]: "supervisor", window["zygote"]: "zygote", window.get("template"): "template"}
        role = roles.get(pid, "child")
        frames = [line.split(None, 1) for line in lines[1:]]
        kernel = {parts[1] for parts in frames if len(parts) == 2 and parts[0].startswith("ffffffff")}
        if not kernel:
            counts[(role, "user (interpreter, libraries)")] += 1
            continue
        for name, symbols in PERF_RULES:
            if kernel.intersection(symbols):
                counts[(role, name)] += 1
                break
        else:
            counts[(role, "kernel, other")] += 1
    total = sum(counts.values()) or 1
    print()
    print("| process | what (perf samples, kernel stacks) | share of all CPU |")
    print("|---|---|---|")
    for (role, name), count in sorted(counts.items(), key=lambda item: -item[1]):
        if count / total >= 0.005:
            print(f"| {role} | {name} | {100 * count / total:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--perf", action="store_true", help="also sample the kernel side with perf record")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to profile")
    parser.add_argument("--window", type=Path, help=argparse.SUPPRESS)  # set by --perf for the inner run
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    print(f"host load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; tree {args.tree}")
    figures = asyncio.run(_load(args, args.window))
    _print_table(_rows(figures, args.runs), figures, args.runs)
    if not args.perf or args.window is not None:
        return
    if shutil.which("perf") is None:
        print("perf is not installed: no kernel split")
        return
    with tempfile.TemporaryDirectory() as scratch:
        data, window = Path(scratch) / "perf.data", Path(scratch) / "window.json"
        command = [
            sys.executable,
            __file__,
            "--runs",
            str(args.runs),
            "--concurrency",
            str(args.concurrency),
            "--tree",
            str(args.tree),
            "--window",
            str(window),
        ]
        subprocess.run(
            ["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-F", "999", "-g", "-o", str(data), "--", *command],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _perf_split(data, json.loads(window.read_text()))
    print(f"host load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
