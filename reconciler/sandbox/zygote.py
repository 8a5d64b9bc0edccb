"""The zygote: one per replica, started with a scrubbed environment, one forked child per execution.

    python -P -m reconciler.sandbox.zygote '<json config>'   (config names the control socket's descriptor)

It pays once what each execution would otherwise pay: importing pandas and numpy (hundreds of
milliseconds), warming their lazy imports, and moving into an empty network namespace. It never
receives tenant data: the request travels straight from the supervisor to the child over the child's
own socketpair, whose end arrives here only as a descriptor (SCM_RIGHTS) to hand to the child.

Each child serves exactly one execution and exits. To keep the fork and the confinement off a run's
path, one child is forked ahead ("warm"): already confined, it waits for an execution's descriptor.

Control messages are SOCK_SEQPACKET datagrams of JSON (boundaries kept, each spawn with its descriptor):
  supervisor -> zygote  {"op": "spawn", "id": n} + fd       {"op": "kill", "id": n}    {"op": "status"}
  zygote -> supervisor  {"t": "ready", "layers": {...}, "pid": n}
                        {"t": "exited", "id": n, "pid": n, "status": wait status, "wall_killed": bool,
                         "cpu": seconds, "duration": seconds}
                        {"t": "status", "running": [ids], "warm": [pids of pre-forked children]}
The zygote enforces the wall clock: at the deadline it SIGKILLs the child, which it alone can reap, so a
pid is never signalled after it could have been reused.
"""

from __future__ import annotations

import os

# Single-threaded BLAS/OpenMP before numpy loads: threads per child would multiply by the slots and
# break RLIMIT_NPROC=0. (The supervisor also sets these in the scrubbed environment.)
for _name in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_name] = "1"

import array  # noqa: E402
import codecs  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

WALL_GRACE_SECONDS = 0.5  # the child's own SIGALRM fires first and reports a traceback; then SIGKILL
# Pre-forked, already confined children waiting for an execution: a run then skips the fork and the
# confinement (~2.5 ms of its latency); they cost no CPU while they wait, and their memory is shared.
WARM_CHILDREN = 1


@dataclass
class _Warm:
    pid: int
    link: socket.socket  # the zygote's end; the execution's socket is sent over it


@dataclass
class _Running:
    id: int
    pid: int
    started: float
    deadline: float
    wall_killed: bool = False


def _preload() -> None:
    """Import and warm everything a child may touch, so a fork finds it loaded (and shared, copy-on-write)."""
    import numpy as np
    import pandas as pd

    from reconciler.policy import ALLOWED_MODULES, compile_strategy, guards
    from reconciler.sandbox import child

    for name in ALLOWED_MODULES | guards.LIBRARY_IMPORTS:
        __import__(name)
    # The child runs as another user, who may not be able to read the interpreter's own library
    # (e.g. a pyenv under a 0700 home): whatever it could import lazily must be loaded here.
    for encoding in (
        "latin-1",
        "cp1252",
        "ascii",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "iso8859-15",
        "unicode_escape",
        "raw_unicode_escape",
        "hex",
        "base64",
    ):
        codecs.lookup(encoding)
    guards.harden_libraries()
    # Lazy imports inside pandas happen on first use; do the common ones here, not in every child.
    frame = pd.DataFrame(
        {"close": np.linspace(1.0, 2.0, 50), "volume": np.arange(50.0)},
        index=pd.date_range("2024-01-01", periods=50, freq="min"),
    )
    frame["sma"] = frame["close"].rolling(5).mean()
    frame["ema"] = frame["close"].ewm(span=5).mean()
    repr(frame)
    frame.describe()
    frame.resample("5min").agg({"close": "last", "volume": "sum"})
    frame.to_dict()
    frame.to_json(date_format="iso")
    pd.to_datetime(["2024-01-01T00:00:00Z"], utc=True)
    np.random.default_rng(0).normal(size=4)
    json.dumps(child.to_jsonable(frame))
    code = compile_strategy("import math\nx = [i for i in range(3)]\nRESULT = {'a': x}\n")
    exec(code, {"__builtins__": guards.make_builtins(), "__name__": guards.STRATEGY_MODULE})


def _recv_control(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


class Zygote:
    def __init__(self, config: dict[str, Any]) -> None:
        from reconciler.sandbox import seccomp
        from reconciler.sandbox.confine import ChildPlan

        program = None
        if seccomp.available():
            try:
                program = seccomp.Program(seccomp.compile_filter())
            except (OSError, ValueError) as exc:
                print(f"sandbox zygote: cannot build the seccomp filter: {exc!r}", file=sys.stderr)
        self.plan = ChildPlan(
            memory_mb=int(config["memory_mb"]),
            cpu_seconds=int(config["cpu_seconds"]),
            uid=config.get("uid"),
            gid=config.get("gid"),
            seccomp_program=program,
        )
        self.wall_seconds = float(config["wall_seconds"])
        self.control = socket.socket(fileno=int(config["control_fd"]))
        self.running: dict[int, _Running] = {}  # by pid
        self.by_id: dict[int, _Running] = {}
        self.warm: dict[int, _Warm] = {}  # by pid
        # SIGCHLD wakes the select loop through a pipe; the handler itself does nothing.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode())

    def fork_child(self, target: Any, fd: int) -> int:
        pid = os.fork()
        if pid == 0:  # the child: never returns into this loop
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                target(fd, self.plan)
            finally:
                os._exit(70)
        os.close(fd)  # only the child keeps its end: its death is then EOF for the supervisor
        return pid

    def probe_layers(self) -> dict[str, bool]:
        from reconciler.sandbox import child, protocol

        mine, theirs = socket.socketpair()
        pid = self.fork_child(child.probe, theirs.detach())
        mine.settimeout(10)
        try:
            layers = protocol.decode(protocol.recv_frame(mine, 4096)).get("layers", {})
        except (OSError, protocol.ProtocolError):
            layers = {}
        finally:
            mine.close()
            os.waitpid(pid, 0)
        return {str(key): bool(value) for key, value in layers.items()}

    def fork_warm(self) -> None:
        from reconciler.sandbox import child

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = self.fork_child(child.serve_warm, theirs.detach())
        self.warm[pid] = _Warm(pid, mine)

    def _hand_to_warm(self, fd: int) -> int | None:
        """Give the execution's socket to a waiting child; its pid, or None if none could take it."""
        while self.warm:
            _pid, warm = self.warm.popitem()
            try:
                if os.waitpid(warm.pid, os.WNOHANG)[0] == warm.pid:  # died waiting; now reaped
                    continue
                socket.send_fds(warm.link, [b"run"], [fd])
            except (OSError, ChildProcessError):  # it died while waiting; reap() collects it
                continue
            finally:
                warm.link.close()
            return warm.pid
        return None

    def spawn(self, request_id: int, fd: int) -> None:
        from reconciler.sandbox import child

        now = time.monotonic()
        pid = self._hand_to_warm(fd)
        if pid is None:
            pid = self.fork_child(child.serve, fd)
        else:
            os.close(fd)
        entry = _Running(request_id, pid, now, now + self.wall_seconds + WALL_GRACE_SECONDS)
        self.running[pid] = entry
        self.by_id[request_id] = entry

    def kill(self, request_id: int) -> None:
        entry = self.by_id.get(request_id)
        if entry is not None:
            os.kill(entry.pid, signal.SIGKILL)  # still our unreaped child: the pid cannot be reused

    def reap(self) -> None:
        while self.running or self.warm:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            warm = self.warm.pop(pid, None)
            if warm is not None:  # died while waiting (killed from outside): replaced below
                warm.link.close()
                continue
            entry = self.running.pop(pid, None)
            if entry is None:
                continue
            del self.by_id[entry.id]
            self.send(
                {
                    "t": "exited",
                    "id": entry.id,
                    "pid": pid,
                    "status": status,
                    "wall_killed": entry.wall_killed,
                    "cpu": usage.ru_utime + usage.ru_stime,
                    "duration": time.monotonic() - entry.started,
                }
            )

    def enforce_deadlines(self) -> float | None:
        now = time.monotonic()
        nearest: float | None = None
        for entry in self.running.values():
            if entry.wall_killed:
                continue
            if now >= entry.deadline:
                entry.wall_killed = True
                os.kill(entry.pid, signal.SIGKILL)
            else:
                nearest = entry.deadline if nearest is None else min(nearest, entry.deadline)
        return None if nearest is None else max(0.0, nearest - now)

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            timeout = self.enforce_deadlines()
            for key, _events in selector.select(timeout):
                if key.data == "wake":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                message, fds = _recv_control(self.control)
                if message is None:  # the supervisor is gone: take every child with us
                    for pid in [*self.running, *self.warm]:
                        os.kill(pid, signal.SIGKILL)
                    return
                self.handle(message, fds)
            self.reap()
            # Replenish after answering, so the fork is off the path of the run that used the last one.
            while len(self.warm) < WARM_CHILDREN:
                self.fork_warm()

    def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == "spawn" and len(fds) == 1:
            self.spawn(int(message["id"]), fds[0])
            return
        for fd in fds:  # anything unexpected: never leak a descriptor into the next fork
            os.close(fd)
        if op == "kill":
            self.kill(int(message["id"]))
        elif op == "status":
            self.send(
                {
                    "t": "status",
                    "running": sorted(entry.id for entry in self.running.values()),
                    "warm": sorted(self.warm),
                }
            )


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.dont_write_bytecode = True
    from reconciler.sandbox import confine

    # Die with the replica (and, should that signal be missed, at EOF on the control socket). A
    # Ctrl-C in the replica's terminal is the replica's to handle: the zygote ends when it closes.
    confine.set_parent_death_signal(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    confine.set_dumpable(False)
    network = confine.isolate_zygote_network()  # once, inherited by every child
    _preload()
    if "reconciler.settings" in sys.modules:  # a check that must survive `python -O`
        raise SystemExit("sandbox zygote: reconciler.settings was imported; refusing to serve")
    gc.collect()
    gc.freeze()  # children start with a clean, shared heap: less copy-on-write from the collector
    zygote = Zygote(config)
    layers = {**network, **zygote.probe_layers(), "language_policy": True}
    zygote.send({"t": "ready", "layers": layers, "pid": os.getpid()})
    zygote.serve()


if __name__ == "__main__":
    main()
