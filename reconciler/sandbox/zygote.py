"""The zygote: one per replica, started with a scrubbed environment, one forked child per execution.

    python -P -m reconciler.sandbox.zygote '<json config>'   (config names the control socket's descriptor)

It pays once what each execution would otherwise pay: importing pandas and numpy (hundreds of
milliseconds), warming their lazy imports, moving into an empty network namespace, and entering its
filesystem view (only the Python installation, read-only; see `confine.enter_filesystem_view`). It
never receives tenant data: the request travels straight from the supervisor to the child over the
child's own socketpair, whose end arrives here only as a descriptor (SCM_RIGHTS) to hand to the child.

Each child serves exactly one execution and exits. It is cloned into its own PID and IPC namespaces
by the zygote's template (a fork of the finished zygote that only clones, see `start_template`; the
child is still the zygote's child) and holds a slot alone while it lives: a uid of the replica's
block and, where the host allows, a memory cgroup (the config's "uids" and "cgroup"). To keep the
fork and the confinement off a run's path, one child is forked ahead ("warm"): already confined, it
waits for an execution's descriptor.

Control messages are SOCK_SEQPACKET datagrams of JSON (boundaries kept, each spawn with its descriptor):
  supervisor -> zygote  {"op": "spawn", "id": n} + fd       {"op": "kill", "id": n}    {"op": "status"}
  zygote -> supervisor  {"t": "ready", "layers": {...}, "pid": n}
                        {"t": "exited", "id": n, "pid": n, "status": wait status, "wall_killed": bool,
                         "memory_killed": bool, "cpu": seconds, "duration": seconds}
                        {"t": "refused", "id": n, "reason": str}   (no free slot: no child was started)
                        {"t": "status", "running": [ids], "warm": [pids of pre-forked children],
                         "template": pid of the template or null, "forks": profile counters}
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
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

WALL_GRACE_SECONDS = 0.5  # the child's own SIGALRM fires first and reports a traceback; then SIGKILL
# Pre-forked, already confined children waiting for an execution: a run then skips the fork and the
# confinement (~2.5 ms of its latency); they cost no CPU while they wait, and their memory is shared.
WARM_CHILDREN = 1


class NoFreeSlot(Exception):
    """Every sandbox identity (uid, cgroup) of this zygote is held by a live child."""


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


@dataclass
class _Slot:
    """One identity a live child holds alone: a uid (and gid) and, where the host allows, a memory
    cgroup. A slot is taken at fork and given back when the child is reaped, so no two live children
    (running or pre-forked) ever share one."""

    index: int
    uid: int | None
    cgroup: str | None  # directory name under the zygote's cgroup, created on first use
    oom_kills: int = 0  # the cgroup's OOM-kill counter when the current child was forked


# A fork request to the template: target index, clone flags, uid (-1: none), address-space baseline,
# whether a cgroup.procs descriptor follows the execution's socket. The reply is the pid, or -errno.
_REQUEST = struct.Struct("<iiiqB")
_REPLY = struct.Struct("<q")
_TEMPLATE_TIMEOUT = 10.0  # a clone takes milliseconds; no answer in this long means the template is gone


class TemplateGone(SystemExit):
    """The template process died or stopped answering: the zygote ends (the supervisor starts another)."""


@dataclass
class _Template:
    pid: int
    link: socket.socket  # the zygote's end of the request socket
    size: int  # its address space when forked: the baseline of each child's RLIMIT_AS

    def fork(self, target: int, flags: int, plan: Any, fd: int, procs_fd: int | None) -> int:
        uid = -1 if plan.uid is None else int(plan.uid)
        request = _REQUEST.pack(target, flags, uid, int(plan.address_space or 0), procs_fd is not None)
        try:
            socket.send_fds(self.link, [request], [fd] if procs_fd is None else [fd, procs_fd])
            reply = self.link.recv(_REPLY.size)
        except OSError as exc:  # a timeout too
            raise TemplateGone(f"sandbox zygote: the template process is gone: {exc!r}") from None
        if len(reply) != _REPLY.size:
            raise TemplateGone("sandbox zygote: the template process is gone")
        (pid,) = _REPLY.unpack(reply)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        return int(pid)


def _serve_as_template(link: socket.socket, targets: list[Any], base: Any) -> None:
    """The template's loop: a fork request in, a clone, the pid out; nothing else (see `start_template`).

    Kept to as few objects as possible: every page this process writes while children share it is
    copied. The child's plan is built in the child, after the clone.
    """
    from reconciler.sandbox import confine

    fork, parent = confine.fork_isolated, confine.CLONE_PARENT
    while True:
        try:
            request, fds, _flags, _address = socket.recv_fds(link, _REQUEST.size, 2)
        except OSError:
            return
        if len(request) != _REQUEST.size or not fds:  # EOF: the zygote is gone
            return
        target, flags, uid, address_space, with_procs = _REQUEST.unpack(request)
        try:
            pid = fork(flags | parent)
        except OSError as exc:
            pid = -(exc.errno or 5)
        if pid == 0:  # the child: the zygote's child, never returns into this loop
            try:
                link.close()
                plan = dataclasses.replace(
                    base,
                    uid=None if uid < 0 else uid,
                    gid=None if uid < 0 else uid,
                    address_space=address_space or None,
                    cgroup_procs_fd=fds[1] if with_procs and len(fds) > 1 else None,
                )
                targets[target](fds[0], plan)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)
        link.send(_REPLY.pack(pid))


def _fork_hook_lists() -> tuple[list[Any], list[Any], list[Any]] | None:
    """The interpreter's lists of `os.register_at_fork` hooks (before, after in the parent, after in
    the child), or None where they cannot all be found.

    CPython keeps them in the interpreter state; they are garbage-collected lists, found by a hook
    each must hold (threading's in the child list; logging's before and after in the parent). Call
    before `gc.freeze()` (frozen objects are not listed).
    """
    import logging
    import threading

    markers = (
        getattr(logging, "_acquireLock", None) or getattr(logging, "_prepareFork", None),
        getattr(logging, "_releaseLock", None) or getattr(logging, "_afterFork", None),
        getattr(threading, "_after_fork", None),
    )
    found: list[list[Any] | None] = [None, None, None]
    for candidate in gc.get_objects():
        if type(candidate) is list:
            for index, marker in enumerate(markers):
                if marker is not None and any(item is marker for item in candidate):
                    found[index] = candidate
    before, parent, child = found
    if before is None or parent is None or child is None:
        return None
    return before, parent, child


def _redundant_fork_hooks() -> list[tuple[Any, Any, Any]]:
    """(before, after in the parent, after in the child) hooks that a template's child does not need.

    The template is single-threaded, never logs and never runs an executor: no lock of logging's or
    concurrent.futures' is held when it clones, so neither needs taking around the clone nor
    re-initialising in the child; threading's bookkeeping is the template's own thread (a child
    cannot start a thread: RLIMIT_NPROC is 0, seccomp allows clone for threads only); and the child
    reseeds `random` (and numpy) itself, `child.fresh_random_state`. Any other hook stays.
    """
    import concurrent.futures.thread
    import logging
    import random
    import threading

    lock: Any = concurrent.futures.thread._global_shutdown_lock  # type: ignore[attr-defined]
    groups: list[tuple[Any, Any, Any]] = [
        (None, None, getattr(threading, "_after_fork", None)),
        (None, None, random._inst.seed),  # type: ignore[attr-defined]
    ]
    # A lock's three hooks, all or nothing (a version of Python that names them otherwise keeps them).
    for locked in (
        (
            getattr(logging, "_acquireLock", None) or getattr(logging, "_prepareFork", None),
            getattr(logging, "_releaseLock", None) or getattr(logging, "_afterFork", None),
            getattr(logging, "_after_at_fork_child_reinit_locks", None),
        ),
        (getattr(lock, "acquire", None), getattr(lock, "release", None), getattr(lock, "_at_fork_reinit", None)),
    ):
        if all(hook is not None for hook in locked):
            groups.append(locked)
    return groups


def _skip_redundant_fork_hooks(lists: tuple[list[Any], list[Any], list[Any]] | None) -> None:
    """In the template: drop the fork hooks its children do not need (`_redundant_fork_hooks`).
    They cost each child about 200 page copies (measured; see the README's sandbox profile).

    A module's hooks go together or not at all: a lock taken before the clone must be re-initialised
    in the child, so its before-hook is dropped only with its child hook, and only if every one of
    them is where it is expected.
    """
    if lists is None:
        return
    for before, parent, child in _redundant_fork_hooks():
        if child is None:
            continue
        group = [(lists[2], child)] + ([] if before is None else [(lists[0], before), (lists[1], parent)])
        if not all(any(entry == hook for entry in hooks) for hooks, hook in group):
            continue
        for hooks, hook in group:
            hooks[:] = [entry for entry in hooks if entry != hook]


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


def view_paths() -> list[str]:
    """What a child may read: the Python installation, its libraries, and the sandbox's own package.

    Everything else of the host (home directories, /root, /var, /proc, the service's data and logs,
    the rest of the project) is absent from the child's filesystem view.
    """
    import reconciler

    package = os.path.dirname(os.path.abspath(reconciler.__file__))
    project = os.path.dirname(package)
    candidates = {sys.base_prefix, sys.prefix, "/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", package}
    candidates |= {entry for entry in sys.path if entry and os.path.isdir(entry) and entry != project}
    kept: list[str] = []
    for path in sorted(os.path.abspath(c) for c in candidates if os.path.lexists(c)):
        if not any(path == k or path.startswith(k + "/") for k in kept):  # already inside a kept one
            kept.append(path)
    return kept


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
        from reconciler.sandbox import confine, seccomp

        program = None
        if seccomp.available():
            try:
                program = seccomp.Program(seccomp.compile_filter())
            except (OSError, ValueError) as exc:
                print(f"sandbox zygote: cannot build the seccomp filter: {exc!r}", file=sys.stderr)
        self.memory_mb = int(config["memory_mb"])
        self.plan = confine.ChildPlan(
            memory_mb=self.memory_mb,
            cpu_seconds=int(config["cpu_seconds"]),
            uid=None,
            gid=None,
            seccomp_program=program,
            profile=bool(config.get("profile")),
        )
        self.wall_seconds = float(config["wall_seconds"])
        self.control = socket.socket(fileno=int(config["control_fd"]))
        self.running: dict[int, _Running] = {}  # by pid
        self.by_id: dict[int, _Running] = {}
        self.warm: dict[int, _Warm] = {}  # by pid
        # Identities: a uid per live child from the replica's own range (root), or none (one uid).
        # ("shared_uid" and "namespaces_per_child": false rebuild the previous round's layer set, for
        # the benchmark's before/after comparison; the replica never sets them.)
        uids = config.get("uids")
        count = int(uids[1]) if uids else int(config.get("max_children", 64))
        self.free_slots = list(range(count - 1, -1, -1))  # popped from the end: lowest first
        shared = bool(config.get("shared_uid"))
        self.slots = [_Slot(i, int(uids[0]) + (0 if shared else i) if uids else None, None) for i in range(count)]
        self.slot_of: dict[int, _Slot] = {}  # by pid of the live child holding it
        # Opened now, while the host's filesystem is still visible; used after the view hides it.
        self.statm_fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.cgroup_fd: int | None = None
        self.cgroup_version = 0
        cgroup = config.get("cgroup")
        if cgroup:
            try:
                self.cgroup_fd = os.open(cgroup["path"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.cgroup_version = int(cgroup["version"])
            except OSError as exc:
                print(f"sandbox zygote: cannot open the memory cgroup: {exc!r}", file=sys.stderr)
        self.fork_hooks = _fork_hook_lists()  # before gc.freeze(), which hides objects from gc
        # What a child may run (the template knows them by index; see `start_template`).
        self.targets: list[Any] = []
        self.template: _Template | None = None
        # The fork calls' own cost in this process (user s, system s, minor faults, forks): the clone
        # itself, or the request to the template. Counted in profile mode only.
        self.fork_usage: list[float] = [0.0, 0.0, 0, 0]
        self.clone_flags = confine.CLONE_NEWPID | confine.CLONE_NEWIPC
        if not config.get("namespaces_per_child", True):
            self.clone_flags = 0
        # SIGCHLD wakes the select loop through a pipe; the handler itself does nothing.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode())

    # -- identities ---------------------------------------------------------------------------------

    def _cgroup_file(self, slot: _Slot, name: str) -> str:
        return f"{slot.cgroup}/{name}"

    def _prepare_cgroup(self, slot: _Slot) -> None:
        """Create the slot's memory cgroup on first use, with the execution's limit.

        The limit counts what the child allocates plus the zygote pages it copies on write, so it is
        the zygote's resident size plus the memory limit, with room for kernel memory: RLIMIT_AS
        (a clean MemoryError) binds first; the cgroup bounds what RLIMIT_AS does not see.
        """
        if self.cgroup_fd is None or slot.cgroup is not None:
            return
        name = f"slot-{slot.index}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=self.cgroup_fd)
        resident = int(os.pread(self.statm_fd, 128, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")
        limit = resident + (self.memory_mb + 64) * 1024 * 1024
        files = (
            [("memory.limit_in_bytes", limit), ("memory.memsw.limit_in_bytes", limit)]
            if self.cgroup_version == 1
            else [("memory.max", limit), ("memory.swap.max", 0)]
        )
        for index, (leaf, value) in enumerate(files):
            try:
                fd = os.open(f"{name}/{leaf}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=self.cgroup_fd)
                try:
                    os.write(fd, str(value).encode())
                finally:
                    os.close(fd)
            except OSError:
                if index == 0:  # the limit itself; the swap limit is absent without swap accounting
                    raise
        slot.cgroup = name

    def _oom_kills(self, slot: _Slot) -> int:
        if self.cgroup_fd is None or slot.cgroup is None:
            return 0
        leaf = "memory.oom_control" if self.cgroup_version == 1 else "memory.events"
        try:
            fd = os.open(self._cgroup_file(slot, leaf), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.cgroup_fd)
            try:
                text = os.read(fd, 4096).decode()
            finally:
                os.close(fd)
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def _size(self) -> int:
        return int(os.pread(self.statm_fd, 128, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")

    def _plan_for(self, slot: _Slot) -> tuple[Any, int | None]:
        """The child's plan (its uid, the size of the process it is cloned from, its cgroup) and the
        descriptor to close."""
        procs_fd = None
        if self.cgroup_fd is not None:
            try:
                self._prepare_cgroup(slot)
                procs_fd = os.open(self._cgroup_file(slot, "cgroup.procs"), os.O_WRONLY, dir_fd=self.cgroup_fd)
                slot.oom_kills = self._oom_kills(slot)
            except OSError as exc:
                print(f"sandbox zygote: memory cgroup unavailable: {exc!r}", file=sys.stderr)
        # The template's size is the zygote's when it was forked (it allocates next to nothing since);
        # the child's address-space limit is that baseline plus the execution's memory.
        size = self.template.size if self.template is not None else self._size()
        plan = dataclasses.replace(self.plan, uid=slot.uid, gid=slot.uid, address_space=size, cgroup_procs_fd=procs_fd)
        return plan, procs_fd

    def release(self, pid: int) -> _Slot | None:
        """The child `pid` was reaped: its identity is free for the next one."""
        slot = self.slot_of.pop(pid, None)
        if slot is not None:
            self.free_slots.append(slot.index)
            self.free_slots.sort(reverse=True)
        return slot

    def fork_child(self, target: Any, fd: int) -> int:
        """Fork a child in its own PID and IPC namespaces, holding a free slot, running `target(fd, plan)`.

        The template forks it (see `start_template`) when there is one, the zygote itself otherwise;
        either way the child is the zygote's to reap and to kill. Takes ownership of `fd` (closed
        here; the child keeps its copy). Raises NoFreeSlot."""
        if not self.free_slots:
            os.close(fd)
            raise NoFreeSlot(f"all {len(self.slots)} sandbox identities are in use")
        slot = self.slots[self.free_slots.pop()]
        plan, procs_fd = self._plan_for(slot)
        before = resource.getrusage(resource.RUSAGE_SELF) if self.plan.profile else None
        try:
            if self.template is not None:
                pid = self.template.fork(self.targets.index(target), self.clone_flags, plan, fd, procs_fd)
            else:
                pid = self._fork_here(target, fd, plan)
        except BaseException:
            self.free_slots.append(slot.index)
            self.free_slots.sort(reverse=True)
            os.close(fd)
            if procs_fd is not None:
                os.close(procs_fd)
            raise
        if before is not None:
            after = resource.getrusage(resource.RUSAGE_SELF)
            self.fork_usage[0] += after.ru_utime - before.ru_utime
            self.fork_usage[1] += after.ru_stime - before.ru_stime
            self.fork_usage[2] += after.ru_minflt - before.ru_minflt
            self.fork_usage[3] += 1
        if procs_fd is not None:
            os.close(procs_fd)
        os.close(fd)  # only the child keeps its end: its death is then EOF for the supervisor
        self.slot_of[pid] = slot
        return pid

    def _fork_here(self, target: Any, fd: int, plan: Any) -> int:
        from reconciler.sandbox import confine

        pid = confine.fork_isolated(self.clone_flags)
        if pid == 0:  # the child: never returns into this loop
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                target(fd, plan)
            finally:
                os._exit(70)
        return pid

    def start_template(self, targets: list[Any]) -> None:
        """Fork the template: the process that forks every child from now on, with CLONE_PARENT.

        Each clone copies the page tables of the process it is cloned from, and every page that
        process writes afterwards while a child still shares it is copied again (copy-on-write). The
        zygote writes all over its heap between forks (its control loop, JSON, bookkeeping), so
        cloning from it cost each execution a few hundred page copies on top of the clone. The
        template is a fork of the finished zygote that does nothing but wait for a fork request and
        clone: it touches a few pages per request, and its memory stays as the zygote left it
        (transparent huge pages included). CLONE_PARENT makes every child the zygote's child,
        exactly as before: the zygote alone reaps it, signals it (its pid cannot be reused before
        the zygote reaps it) and enforces its wall clock; a child's parent-death signal fires with
        the zygote. The template holds no descriptor but its request socket, no tenant data (the
        execution's socket only passes through it), and dies with the zygote.

        `targets`: the functions a child may run, registered before the template is forked (the
        template knows them by index). Without the raw clone syscall, the zygote keeps forking itself.
        """
        from reconciler.sandbox import confine

        if not confine.clone_available():
            return
        self.targets = list(targets)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Free memory inside the heap back to the kernel first: those pages are then not copied at
        # each clone, and a child's allocations there take a fresh zeroed page instead of a copy of a
        # zygote page (glibc reuses free chunks from all over the heap). Measured: about 150 fewer
        # page faults per execution.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
        zygote, size = os.getpid(), self._size()
        pid = os.fork()
        if pid == 0:
            try:
                confine.set_parent_death_signal(signal.SIGKILL)
                if os.getppid() != zygote:  # the zygote died before the line above took effect
                    os._exit(0)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                mine.close()
                _skip_redundant_fork_hooks(self.fork_hooks)
                self.control.close()  # else the supervisor would not see EOF when the zygote dies
                for fd in (self.wake_r, self.wake_w, self.statm_fd, self.cgroup_fd):
                    if fd is not None:
                        os.close(fd)
                _serve_as_template(theirs, list(self.targets), self.plan)
            finally:
                os._exit(70)
        theirs.close()
        mine.settimeout(_TEMPLATE_TIMEOUT)
        self.template = _Template(pid, mine, size)

    def probe_layers(self) -> dict[str, bool]:
        """Fork one confined child the way every execution's child is forked; what took effect.

        Also settles the clone flags: a host that refuses new PID or IPC namespaces (a container
        without CAP_SYS_ADMIN) gets plain forks, reported as inactive layers rather than a failure.
        """
        from reconciler.sandbox import child, confine, protocol

        for flags in (self.clone_flags, confine.CLONE_NEWPID, confine.CLONE_NEWIPC, 0):
            self.clone_flags = flags
            mine, theirs = socket.socketpair()
            try:
                pid = self.fork_child(child.probe, theirs.detach())
            except OSError:
                mine.close()
                continue
            mine.settimeout(10)
            try:
                layers = protocol.decode(protocol.recv_frame(mine, 4096)).get("layers", {})
            except (OSError, protocol.ProtocolError):
                layers = {}
            finally:
                mine.close()
                os.waitpid(pid, 0)
                self.release(pid)
            break
        else:
            layers = {}
        layers = {str(key): bool(value) for key, value in layers.items()}
        layers["pid_namespace"] = bool(self.clone_flags & confine.CLONE_NEWPID)
        layers["ipc_namespace"] = bool(self.clone_flags & confine.CLONE_NEWIPC)
        # Distinct identities only where the zygote can switch to any uid of its range (as root).
        distinct = len(self.slots) < 2 or self.slots[0].uid != self.slots[1].uid
        layers["distinct_uids"] = bool(layers.get("privilege_drop")) and self.slots[0].uid is not None and distinct
        return layers

    def fork_warm(self) -> bool:
        from reconciler.sandbox import child

        if not self.free_slots:
            return False
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = self.fork_child(child.serve_warm, theirs.detach())
        except OSError as exc:
            mine.close()
            print(f"sandbox zygote: cannot pre-fork a child: {exc!r}", file=sys.stderr)
            return False
        self.warm[pid] = _Warm(pid, mine)
        return True

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
            try:
                pid = self.fork_child(child.serve, fd)
            except (NoFreeSlot, OSError) as exc:
                self.send({"t": "refused", "id": request_id, "reason": str(exc)})
                return
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
            if self.template is not None and pid == self.template.pid:
                raise TemplateGone("sandbox zygote: the template process died")
            slot = self.release(pid)
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
                    "memory_killed": slot is not None and self._oom_kills(slot) > slot.oom_kills,
                    "cpu": usage.ru_utime + usage.ru_stime,
                    "user": usage.ru_utime,
                    "system": usage.ru_stime,
                    "minflt": usage.ru_minflt,
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
                    template = [self.template.pid] if self.template is not None else []
                    for pid in [*self.running, *self.warm, *template]:
                        os.kill(pid, signal.SIGKILL)
                    return
                self.handle(message, fds)
            self.reap()
            # Replenish after answering, so the fork is off the path of the run that used the last one.
            while len(self.warm) < WARM_CHILDREN and self.fork_warm():
                pass

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
                    "forks": self.fork_usage,
                    "template": None if self.template is None else self.template.pid,
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
    zygote = Zygote(config)
    # Last of the one-time layers: after it, nothing outside the Python installation can be opened
    # (the zygote keeps descriptors on what it still needs: its statm, its cgroup).
    view = confine.enter_filesystem_view(view_paths()) if config.get("filesystem_view", True) else False
    from reconciler.sandbox import child

    child.rehearse()  # what every child would do the first time, done once here (see `rehearse`)
    gc.collect()
    gc.freeze()  # children start with a clean, shared heap: less copy-on-write from the collector
    # From here on, children are cloned from an untouched copy of this state.
    zygote.start_template([child.serve, child.serve_warm, child.probe])
    layers = {**network, "filesystem_view": view, **zygote.probe_layers(), "language_policy": True}
    zygote.send({"t": "ready", "layers": layers, "pid": os.getpid()})
    zygote.serve()


if __name__ == "__main__":
    main()
