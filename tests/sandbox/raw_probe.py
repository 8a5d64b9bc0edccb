"""What a strategy could do if it escaped the language policy entirely (run by the layer tests).

    python -m tests.sandbox.raw_probe < config.json    (on stdin: the secret must not be on a command line)

Sets itself up exactly as the zygote does (`Zygote` itself: the network namespace, the seccomp
program, the slot identities and memory cgroups, then the filesystem view) and forks its children with
`Zygote.fork_child`: each in its own PID and IPC namespaces, confined by the real `confine_child`.
The children then run plain, unrestricted Python probes and report them as JSON. This process plays
the zygote's part and, like the tests, also looks at the children from the outside (through a
descriptor on the host's /proc kept from before the view hid it).

Scenarios (config "scenario"):
  single  one child probes its own boundary: identity, namespaces, files, network, IPC, syscalls
  pair    two concurrent children: the attacker tries every route to the victim's real (host) pid
Config "seccomp": false confines the children without the seccomp filter, to show that the
namespaces and identities hold on their own. Started with a scrubbed environment, like the zygote,
so that anything secret a probe finds can only have come from another process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import mmap
import os
import platform
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from reconciler.sandbox import child, confine, protocol
from reconciler.sandbox import zygote as zygote_module

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# x86_64 numbers of the calls probed by number (no libc wrapper, or one that would hide the call).
_NR = {
    "shmget": 29,
    "semget": 64,
    "msgget": 68,
    "ptrace": 101,
    "tgkill": 234,
    "add_key": 248,
    "keyctl": 250,
    "ioprio_set": 251,
    "ioprio_get": 252,
    "mount": 165,
    "unshare": 272,
    "perf_event_open": 298,
    "setns": 308,
    "process_vm_readv": 310,
    "kcmp": 312,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "pidfd_open": 434,
}
F_SETOWN, F_SETSIG, F_SETOWN_EX, F_SETLEASE = 8, 10, 15, 1024
IPC_CREAT, IPC_PRIVATE = 0o1000, 0
KEY = 0x5EC0DE  # SysV key the probes use: its absence on the host is checked
CHILD_NICENESS = confine.CHILD_NICENESS


def _attempt(action: Callable[[], Any]) -> str:
    try:
        value = action()
    except Exception as exc:
        return f"{type(exc).__name__}:{getattr(exc, 'errno', '')}"
    return f"ok:{str(value)[:200]}"


def _syscall(name: str, *args: int) -> int:
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOSYS, "probe needs x86_64 syscall numbers")
    result = _libc.syscall(_NR[name], *(ctypes.c_long(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(result)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1 << 20)


# -- probes inside one child -------------------------------------------------------------------------


def own_boundary(config: dict[str, Any], sock: socket.socket) -> dict[str, Any]:
    """Everything one escaped strategy could try alone."""
    target = int(config["target_pid"])  # the test process: a host pid, holding the planted secret
    port = int(config["port"])

    def connect() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass

    def write_tmp() -> None:
        with open("/tmp/sandbox-raw-probe-write", "w") as fh:
            fh.write("x")

    def memfd_grow() -> int:
        fd = os.memfd_create("probe")
        try:
            os.ftruncate(fd, 64 << 20)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def shared_mapping_beyond_limit() -> int:
        with mmap.mmap(-1, 512 << 20, flags=mmap.MAP_SHARED) as mapping:  # 512 MiB > the 100 MiB limit
            return len(mapping)

    def sysv_create() -> str:
        shm = _syscall("shmget", KEY, 1 << 20, IPC_CREAT | 0o666)
        sem = _syscall("semget", KEY, 1, IPC_CREAT | 0o666)
        msg = _syscall("msgget", KEY, IPC_CREAT | 0o666)
        return f"{shm},{sem},{msg}"

    visible = {}
    for path in ("/proc", "/sys", "/home", "/var", "/var/lib", "/run", "/etc/passwd", "/etc/hostname", "/dev/shm"):
        visible[path] = os.path.lexists(path)
    for path in config.get("hidden_paths", []):
        visible[path] = os.path.lexists(path)
    return {
        "pid": os.getpid(),
        "uid": [os.getuid(), os.geteuid()],
        "gid": [os.getgid(), os.getegid()],
        "groups": os.getgroups(),
        "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        "rlimit_core": resource.getrlimit(resource.RLIMIT_CORE)[0],
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "rlimit_cpu": resource.getrlimit(resource.RLIMIT_CPU)[0],
        "visible": visible,
        "root_entries": sorted(os.listdir("/")),
        "slash_root_entries": sorted(os.listdir("/root")) if os.path.isdir("/root") else [],
        "tmp_entries": sorted(os.listdir("/tmp")),
        "read_python_file": _attempt(lambda: len(_read(os.__file__)) > 0),
        "target_environ": _attempt(lambda: _read(f"/proc/{target}/environ")),
        "target_mem": _attempt(lambda: _read(f"/proc/{target}/mem")),
        "socket": _attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
        "connect_db": _attempt(connect),
        "fork": _attempt(os.fork),
        # Without the filter, exec works (the view keeps the interpreter) and would end the probe.
        "exec": _attempt(lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]))
        if config.get("seccomp", True)
        else "skipped",
        "write_tmp": _attempt(write_tmp),
        "kill_target": _attempt(lambda: os.kill(target, 0)),
        "ptrace_target": _attempt(lambda: _syscall("ptrace", 16, target, 0, 0)),  # PTRACE_ATTACH
        "setuid_root": _attempt(lambda: os.setuid(0)),
        "sysv_ipc": _attempt(sysv_create),
        "memfd_grow": _attempt(memfd_grow),
        "shared_mapping_beyond_limit": _attempt(shared_mapping_beyond_limit),
        "fcntl_setown": _attempt(lambda: _fcntl(sock.fileno(), F_SETOWN, os.getpid())),
        "fcntl_setsig": _attempt(lambda: _fcntl(sock.fileno(), F_SETSIG, signal.SIGUSR1)),
        "fcntl_setlease": _attempt(lambda: _fcntl(sock.fileno(), F_SETLEASE, 0)),
        "keyctl": _attempt(lambda: _syscall("keyctl", 0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the user's
        "add_key": _attempt(lambda: _syscall("add_key", 0, 0, 0, 0, -3)),
        "bpf": _attempt(lambda: _syscall("bpf", 0, 0, 0)),
        "perf_event_open": _attempt(lambda: _syscall("perf_event_open", 0, 0, -1, -1, 0)),
        "userfaultfd": _attempt(lambda: _syscall("userfaultfd", 0)),
        "io_uring_setup": _attempt(lambda: _syscall("io_uring_setup", 1, 0)),
        "mount": _attempt(lambda: _syscall("mount", 0, 0, 0, 0, 0)),
        "unshare": _attempt(lambda: _syscall("unshare", confine.CLONE_NEWNET)),
        "setns": _attempt(lambda: _syscall("setns", 0, 0)),
    }


def _fcntl(fd: int, command: int, argument: int) -> int:
    result = _libc.fcntl(fd, command, argument)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def attack(victim_pid: int, victim_uid: int, sock: socket.socket) -> dict[str, Any]:
    """Every route one child could take to another, given its real (host) pid and uid."""
    pid = victim_pid

    def setown_and_signal() -> str:
        _fcntl(sock.fileno(), F_SETOWN, pid)
        _fcntl(sock.fileno(), F_SETSIG, signal.SIGKILL)
        flags = _fcntl(sock.fileno(), 3, 0)  # F_GETFL
        _fcntl(sock.fileno(), 4, flags | os.O_ASYNC)  # F_SETFL: I/O on the socket now signals the owner
        return "armed"

    def process_vm_readv() -> int:
        buffer = ctypes.create_string_buffer(64)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 64)
        remote = (ctypes.c_void_p * 2)(0x400000, 64)
        return _syscall("process_vm_readv", pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)

    return {
        "kill": _attempt(lambda: os.kill(pid, signal.SIGKILL)),
        "stop": _attempt(lambda: os.kill(pid, signal.SIGSTOP)),
        "signal_0": _attempt(lambda: os.kill(pid, 0)),
        "kill_group": _attempt(lambda: os.kill(-pid, signal.SIGKILL)),
        "kill_everything": _attempt(lambda: os.kill(-1, signal.SIGKILL)),
        "tgkill": _attempt(lambda: _syscall("tgkill", pid, pid, signal.SIGKILL)),
        "pidfd_open": _attempt(lambda: _syscall("pidfd_open", pid, 0)),
        "fcntl_setown": _attempt(setown_and_signal),
        "setpriority": _attempt(lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)),
        "setpriority_user": _attempt(lambda: os.setpriority(os.PRIO_USER, victim_uid, 19)),
        "sched_setaffinity": _attempt(lambda: os.sched_setaffinity(pid, {0})),
        "sched_setscheduler": _attempt(lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))),
        "ioprio_set": _attempt(lambda: _syscall("ioprio_set", 1, pid, 3 << 13)),  # IOPRIO_CLASS_IDLE
        "ioprio_set_user": _attempt(lambda: _syscall("ioprio_set", 3, victim_uid, 3 << 13)),
        "process_vm_readv": _attempt(process_vm_readv),
        "ptrace_attach": _attempt(lambda: _syscall("ptrace", 16, pid, 0, 0)),
        "ptrace_seize": _attempt(lambda: _syscall("ptrace", 0x4206, pid, 0, 0)),
        "prlimit": _attempt(lambda: resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1))),
        "kcmp": _attempt(lambda: _syscall("kcmp", os.getpid(), pid, 0, 0, 0)),
        "proc_status": _attempt(lambda: _read(f"/proc/{pid}/status")),
        "proc_environ": _attempt(lambda: _read(f"/proc/{pid}/environ")),
        "proc_mem": _attempt(lambda: _read(f"/proc/{pid}/mem")),
        "proc_cmdline": _attempt(lambda: _read(f"/proc/{pid}/cmdline")),
    }


# -- the children ------------------------------------------------------------------------------------


def _single(config: dict[str, Any]) -> Callable[[int, confine.ChildPlan], None]:
    def target(fd: int, plan: confine.ChildPlan) -> None:
        layers = confine.confine_child(plan, fd)
        sock = socket.socket(fileno=confine.CHILD_FD)
        protocol.send(sock, {"layers": layers, **own_boundary(config, sock)})
        protocol.recv_frame(sock, 4096)  # stay alive until the parent has looked at us from outside
        os._exit(0)

    return target


def _victim(fd: int, plan: confine.ChildPlan) -> None:
    confine.confine_child(plan, fd)
    sock = socket.socket(fileno=confine.CHILD_FD)
    received: list[int] = []
    for number in (signal.SIGUSR1, signal.SIGIO, signal.SIGURG, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda signum, _frame: received.append(signum))
    protocol.send(sock, {"uid": os.getuid()})
    protocol.recv_frame(sock, 4096)  # the attack is over
    protocol.send(
        sock,
        {
            "alive": True,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
            "ioprio": _attempt(lambda: _syscall("ioprio_get", 1, 0)),
            "affinity": _attempt(lambda: sorted(os.sched_getaffinity(0))),
            "scheduler": _attempt(lambda: os.sched_getscheduler(0)),
            "signals": received,
        },
    )
    os._exit(0)


def _attacker(fd: int, plan: confine.ChildPlan) -> None:
    confine.confine_child(plan, fd)
    sock = socket.socket(fileno=confine.CHILD_FD)
    victim = protocol.decode(protocol.recv_frame(sock, 4096))
    report = attack(int(victim["pid"]), int(victim["uid"]), sock)
    report["uid"] = os.getuid()
    protocol.send(sock, report)  # I/O on the socket: signals its owner, if F_SETOWN took
    os._exit(0)


# -- the zygote's part: fork, look from outside, collect, check that nothing remains ---------------


class Outside:
    """The host's /proc, seen through a descriptor taken before the filesystem view hid it."""

    def __init__(self) -> None:
        self.proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def read(self, path: str) -> str:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.proc)
        try:
            return os.read(fd, 1 << 20).decode(errors="replace")
        finally:
            os.close(fd)

    def status(self, pid: int) -> dict[str, str]:
        text = self.read(f"{pid}/status")
        return {k: v.strip() for k, v in (line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)}

    def fds(self, pid: int) -> list[int]:
        fd = os.open(f"{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.proc)
        try:
            return sorted(int(entry) for entry in os.listdir(fd))
        finally:
            os.close(fd)

    def namespace(self, pid: int | str, kind: str) -> str | None:
        try:
            return os.readlink(f"{pid}/ns/{kind}", dir_fd=self.proc)
        except PermissionError:  # another user's process (a non-root run looking at the test)
            return None

    def shared_namespaces(self, pid: int, other: int | str) -> list[str]:
        shared = []
        for kind in ("pid", "ipc", "net", "mnt"):
            mine = self.namespace(pid, kind)
            if mine is not None and mine == self.namespace(other, kind):
                shared.append(kind)
        return shared

    def interfaces(self, pid: int) -> list[str]:
        return sorted(line.split(":")[0].strip() for line in self.read(f"{pid}/net/dev").splitlines()[2:])

    def processes_of(self, uids: set[int]) -> list[int]:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.proc)
        try:
            entries = [entry for entry in os.listdir(fd) if entry.isdigit()]
        finally:
            os.close(fd)
        found = []
        for entry in entries:
            try:
                uid = int(self.status(int(entry))["Uid"].split()[0])
            except (OSError, KeyError):
                continue
            if uid in uids:
                found.append(int(entry))
        return found

    def sysv(self) -> dict[str, list[str]]:
        """The host's SysV objects (this process is in the host's IPC namespace), minus headers."""
        return {kind: self.read(f"sysvipc/{kind}").splitlines()[1:] for kind in ("shm", "sem", "msg")}


def _cgroup_procs(zygote: zygote_module.Zygote, slot: Any) -> list[str] | None:
    if zygote.cgroup_fd is None or slot.cgroup is None:
        return None
    fd = os.open(f"{slot.cgroup}/cgroup.procs", os.O_RDONLY, dir_fd=zygote.cgroup_fd)
    try:
        return os.read(fd, 65536).decode().split()
    finally:
        os.close(fd)


def _reap(zygote: zygote_module.Zygote, pid: int) -> tuple[int, Any]:
    slot = zygote.slot_of[pid]
    _, status = os.waitpid(pid, 0)
    zygote.release(pid)
    return status, slot


def _leftovers(zygote: zygote_module.Zygote, outside: Outside, slots: list[Any], uids: set[int]) -> dict[str, Any]:
    """After the children were reaped: what of them remains anywhere (everything must be empty)."""
    sysv = outside.sysv()
    return {
        "processes": outside.processes_of(uids),
        "cgroup_procs": [_cgroup_procs(zygote, slot) for slot in slots],
        "sysv_with_key": [line for lines in sysv.values() for line in lines if f"{KEY:>10}" in line],
        "sysv_owned": [line for lines in sysv.values() for line in lines if any(f" {u} " in line for u in uids)],
        "tmp_entries": sorted(os.listdir("/tmp")),
    }


def run_single(
    zygote: zygote_module.Zygote, outside: Outside, config: dict[str, Any], single: Callable[[int, Any], None]
) -> dict[str, Any]:
    mine, theirs = socket.socketpair()
    pid = zygote.fork_child(single, theirs.detach())
    report = protocol.decode(protocol.recv_frame(mine, 1 << 20))
    status = outside.status(pid)
    report["outside"] = {
        "status": {k: status.get(k, "") for k in ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "CapEff", "CapPrm")},
        "nspid": status.get("NSpid", "").split(),
        "fds": outside.fds(pid),
        "interfaces": outside.interfaces(pid),
        "namespaces_shared_with_zygote": outside.shared_namespaces(pid, "self"),
        "namespaces_shared_with_host": outside.shared_namespaces(pid, int(config["target_pid"])),
        "sysv_with_key": [line for lines in outside.sysv().values() for line in lines if f"{KEY:>10}" in line],
    }
    uid = int(status["Uid"].split()[0])
    protocol.send(mine, "bye")
    mine.close()
    exit_status, slot = _reap(zygote, pid)
    report["exit_status"] = exit_status
    report["leftovers"] = _leftovers(zygote, outside, [slot], {uid} - {os.getuid()})
    return report


def run_pair(zygote: zygote_module.Zygote, outside: Outside) -> dict[str, Any]:
    victim_sock, theirs = socket.socketpair()
    victim = zygote.fork_child(_victim, theirs.detach())
    attacker_sock, theirs = socket.socketpair()
    attacker = zygote.fork_child(_attacker, theirs.detach())
    victim_uid = int(protocol.decode(protocol.recv_frame(victim_sock, 4096))["uid"])
    victim_before = outside.status(victim)
    protocol.send(attacker_sock, {"pid": victim, "uid": victim_uid})
    attacks = protocol.decode(protocol.recv_frame(attacker_sock, 1 << 20))
    attacker_uid = int(attacks.pop("uid"))
    attacker_status, attacker_slot = _reap(zygote, attacker)
    time.sleep(0.1)  # let any signal the attack queued arrive
    victim_after = outside.status(victim)
    if victim_after.get("State", "").startswith("T"):  # stopped by the attack: let it report anyway
        os.kill(victim, signal.SIGCONT)
    protocol.send(victim_sock, "report")
    try:
        victim_report = protocol.decode(protocol.recv_frame(victim_sock, 4096))
    except (OSError, protocol.ProtocolError) as exc:
        victim_report = {"alive": False, "error": repr(exc)}
    victim_status, victim_slot = _reap(zygote, victim)
    own = {os.getuid()}  # a non-root run's children share its uid: that says nothing about leftovers
    return {
        "attacks": attacks,
        "uids": [victim_uid, attacker_uid],
        "pids": [victim, attacker],
        "victim_state": [victim_before.get("State", ""), victim_after.get("State", "")],
        "victim": victim_report,
        "exit_status": {"victim": victim_status, "attacker": attacker_status},
        "leftovers": _leftovers(zygote, outside, [victim_slot, attacker_slot], {victim_uid, attacker_uid} - own),
    }


def main() -> None:
    config = json.loads(sys.stdin.read())
    network = confine.isolate_zygote_network()
    outside = Outside()
    control, _supervisor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = zygote_module.Zygote(
        {
            "control_fd": control.detach(),
            "memory_mb": 100,
            "cpu_seconds": 5,
            "wall_seconds": 10,
            "uids": config.get("uids"),
            "cgroup": config.get("cgroup"),
        }
    )
    if not config.get("seccomp", True):
        zygote.plan = dataclasses.replace(zygote.plan, seccomp_program=None)
    view = confine.enter_filesystem_view(zygote_module.view_paths())
    # Children are cloned by the template, as the zygote's are: it knows what they may run beforehand.
    single = _single(config)
    zygote.start_template([single, _victim, _attacker, child.probe])
    layers = zygote.probe_layers()
    pair = config["scenario"] == "pair"
    report = run_pair(zygote, outside) if pair else run_single(zygote, outside, config, single)
    report["zygote_layers"] = {**network, "filesystem_view": view, **layers}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
