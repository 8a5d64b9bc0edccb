"""What a strategy could do if it escaped the language policy entirely (run by test_layers.py).

    python -m tests.sandbox.raw_probe < config.json    (on stdin: the secret must not be on a command line)

Builds the zygote's state the way the zygote does (network namespace, compiled seccomp program, the
sandbox user), forks, applies the real `confine_child`, then runs plain, unrestricted Python probes in
the confined child and prints their results as JSON. Started with a scrubbed environment, like the
zygote, so that anything secret it finds can only have come from another process.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any

from reconciler.sandbox import confine, seccomp


def _attempt(action: Callable[[], Any]) -> str:
    try:
        value = action()
    except Exception as exc:
        return f"{type(exc).__name__}:{getattr(exc, 'errno', '')}"
    return f"ok:{str(value)[:200]}"


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1 << 20)


def _scan_proc(secret: bytes) -> dict[str, Any]:
    readable, leaks = 0, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for leaf in ("environ", "cmdline", "maps", "mem"):
            try:
                data = _read(f"/proc/{entry}/{leaf}")
            except OSError:
                continue
            readable += 1
            if secret in data:
                leaks.append(f"/proc/{entry}/{leaf}")
    return {"readable": readable, "leaks": leaks}


def probes(config: dict[str, Any]) -> dict[str, Any]:
    target = int(config["target_pid"])
    port = int(config["port"])
    secret = config["secret_prefix"].encode()
    libc = ctypes.CDLL(None, use_errno=True)

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass

    def ptrace_attach() -> int:
        result = libc.ptrace(16, target, 0, 0)  # PTRACE_ATTACH
        if result != 0:
            raise OSError(ctypes.get_errno(), "ptrace")
        return result

    with open("/proc/self/status") as fh:
        status = dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)
    with open("/proc/self/net/dev") as fh:
        interfaces = sorted(line.split(":")[0].strip() for line in fh.read().splitlines()[2:])
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {
        "uid": [os.getuid(), os.geteuid()],
        "gid": [os.getgid(), os.getegid()],
        "groups": os.getgroups(),
        "no_new_privs": status.get("NoNewPrivs", "").strip(),
        "seccomp_mode": status.get("Seccomp", "").strip(),
        "cap_eff": status.get("CapEff", "").strip(),
        "cap_prm": status.get("CapPrm", "").strip(),
        "interfaces": interfaces,
        "fds": fds,
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE)[0],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "target_environ": _attempt(lambda: _read(f"/proc/{target}/environ")),
        "target_mem": _attempt(lambda: _read(f"/proc/{target}/mem")),
        "target_maps": _attempt(lambda: _read(f"/proc/{target}/maps")),
        "proc_scan": _scan_proc(secret),
        "socket": _attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
        "connect_db": _attempt(connect),
        "fork": _attempt(os.fork),
        "exec": _attempt(lambda: os.execv("/bin/true", ["true"])),
        "write_tmp": _attempt(lambda: open("/tmp/sandbox-raw-probe-write", "w")),
        "kill_target": _attempt(lambda: os.kill(target, 0)),
        "ptrace_target": _attempt(ptrace_attach),
        "setuid_root": _attempt(lambda: os.setuid(0)),
        "unshare": _attempt(lambda: confine._unshare(confine.CLONE_NEWNET)),
        "read_world_file": _attempt(lambda: len(_read("/etc/hostname")) >= 0),
    }


def main() -> None:
    config = json.loads(sys.stdin.read())
    network = confine.isolate_zygote_network()
    plan = confine.ChildPlan(
        memory_mb=100,
        cpu_seconds=5,
        uid=config.get("uid"),
        gid=config.get("gid"),
        seccomp_program=seccomp.Program(seccomp.compile_filter()) if seccomp.available() else None,
    )
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            mine.close()
            layers = confine.confine_child(plan, theirs.fileno())
            report = {"layers": layers, **probes(config)}
            with socket.socket(fileno=confine.CHILD_FD) as sock:
                sock.sendall(json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    chunks = []
    while chunk := mine.recv(1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks))
    report["network"] = network
    print(json.dumps(report))


if __name__ == "__main__":
    main()
