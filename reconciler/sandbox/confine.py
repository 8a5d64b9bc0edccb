"""Operating-system isolation: what the zygote does once, and what each forked child does to itself.

Order matters in `confine_child` and is commented where it does. Each step reports whether it took
effect, so the sandbox can tell an operator (via /health) exactly which layers this host provides.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from dataclasses import dataclass

from reconciler.sandbox import seccomp

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
_CAPABILITY_VERSION_3 = 0x20080522

# Descriptors a child may hold at once: its socketpair, and the few a lazy `import` opens briefly.
CHILD_MAX_FDS = 16
CHILD_NICENESS = 10


@dataclass(frozen=True)
class ChildPlan:
    """What the zygote tells each child to do to itself (from the zygote's command line)."""

    memory_mb: int
    cpu_seconds: int
    uid: int | None  # drop to this uid/gid when the zygote runs as root
    gid: int | None
    seccomp_program: seccomp.Program | None  # compiled once in the zygote; None: libseccomp absent


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def set_dumpable(dumpable: bool) -> None:
    """Non-dumpable: /proc/<pid>/{environ,mem,maps,...} become root-owned, ptrace by same uid refused."""
    _prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_parent_death_signal(sig: int) -> None:
    _prctl(PR_SET_PDEATHSIG, sig)


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def isolate_zygote_network() -> dict[str, bool]:
    """Move the zygote (and so every future child) into a new, empty network namespace, once.

    As root this is one unshare. Otherwise an unprivileged user namespace, where available, grants
    the capability to create the network namespace; the uid maps to itself so files keep their owner.
    """
    if os.geteuid() == 0:
        try:
            _unshare(CLONE_NEWNET)
            return {"network_namespace": True, "user_namespace": False}
        except OSError:
            return {"network_namespace": False, "user_namespace": False}
    uid, gid = os.geteuid(), os.getegid()
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
    except OSError:
        return {"network_namespace": False, "user_namespace": False}
    # Map our uid to itself inside the namespace (setgroups must be denied before writing gid_map).
    for path, text in (
        ("/proc/self/uid_map", f"{uid} {uid} 1"),
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
        try:
            with open(path, "w") as fh:
                fh.write(text)
        except OSError:
            pass
    return {"network_namespace": True, "user_namespace": True}


def _drop_capabilities() -> None:
    """Clear every capability (effective, permitted, inheritable) of this process: capset(2)."""

    class _Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class _Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = _Header(_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if _libc.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def address_space_bytes() -> int:
    """Current virtual size of this process (the baseline the memory limit is added to)."""
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


CHILD_FD = 3


def confine_child(plan: ChildPlan, keep_fd: int) -> dict[str, bool]:
    """Apply every per-execution layer to the calling (freshly forked) process; irreversible.

    On return the socketpair is descriptor CHILD_FD and every other descriptor is closed.
    """
    layers: dict[str, bool] = {}

    # 1. Close every descriptor but the socketpair: the zygote's control socket, its wake-up pipe and
    #    the standard streams. Print and log are captured in memory and travel over the socketpair.
    #    The socket moves to a fixed low number so the descriptor limit below can be small.
    if keep_fd != CHILD_FD:
        os.dup2(keep_fd, CHILD_FD, inheritable=False)
    os.closerange(0, CHILD_FD)
    os.closerange(CHILD_FD + 1, 1 << 20)

    # 2. Its own session and process group, so nothing aimed at the zygote's group reaches it; and a
    #    lower CPU priority, so five slots spinning on two cores cannot starve the replica's event
    #    loop (heartbeats, leases, the other slots' broker calls).
    os.setsid()
    os.nice(CHILD_NICENESS)

    # 3. rlimits, while still privileged enough to set hard limits. The address-space baseline is the
    #    zygote's (pandas and numpy already mapped), measured here because it grows with the zygote.
    #    CPU: SIGXCPU at the soft limit (the child turns it into a timed_out outcome with its
    #    traceback), SIGKILL one second later if the code ignores it from inside C.
    baseline = address_space_bytes()
    memory = baseline + plan.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (plan.cpu_seconds, plan.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # a write that slips through gets EFBIG
    resource.setrlimit(resource.RLIMIT_NOFILE, (CHILD_MAX_FDS, CHILD_MAX_FDS))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, for a clear error
    layers["rlimits"] = True

    # 4. Privilege drop. As root: an unprivileged uid with no supplementary groups, so the child
    #    cannot read /proc/<replica>/environ or /proc/<pid>/mem of anything running as root. In a
    #    user namespace (not root): drop the namespace's capabilities instead.
    if plan.uid is not None and plan.gid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        layers["privilege_drop"] = os.geteuid() == plan.uid
    else:
        try:
            _drop_capabilities()
            layers["privilege_drop"] = os.geteuid() != 0
        except OSError:
            layers["privilege_drop"] = False
    # No new processes: RLIMIT_NPROC is checked against the uid's process count at fork (not here),
    # so fork fails even where seccomp is missing. Root ignores it, hence after the drop.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))

    # 5. After the uid change (which resets both): no new privileges through setuid binaries or file
    #    capabilities; non-dumpable so same-uid siblings cannot read this child's memory; die with
    #    the zygote.
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    layers["no_new_privs"] = True
    set_dumpable(False)
    set_parent_death_signal(signal.SIGKILL)

    # 6. Last, seccomp: it forbids some of the calls above (setns, prlimit on others, ...).
    layers["seccomp"] = False
    if plan.seccomp_program is not None:
        try:
            plan.seccomp_program.install()
            layers["seccomp"] = True
        except OSError:
            pass
    return layers
