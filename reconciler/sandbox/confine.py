"""Operating-system isolation: what the zygote does once, and what each forked child does to itself.

Order matters in `confine_child` and is commented where it does. Each step reports whether it took
effect, so the sandbox can tell an operator (via /health) exactly which layers this host provides.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import resource
import signal
import sys
from dataclasses import dataclass

from reconciler.sandbox import seccomp

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_PARENT = 0x00008000
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(platform.machine())
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
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
    uid: int | None  # drop to this uid/gid when the zygote runs as root (one per concurrent child)
    gid: int | None
    seccomp_program: seccomp.Program | None  # compiled once in the zygote; None: libseccomp absent
    # Filled in by the zygote per fork: its own address-space size (the child has no /proc to read
    # it from), and a descriptor on the child's memory cgroup's `cgroup.procs` to join it.
    address_space: int | None = None
    cgroup_procs_fd: int | None = None
    # Benchmark only (the profile tool's zygote config): the child stamps its CPU time and page faults
    # at each phase and sends them with its report. The replica never sets it.
    profile: bool = False


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
    if os.geteuid() == 0:  # (no user namespace needed, so none reported)
        try:
            _unshare(CLONE_NEWNET)
            return {"network_namespace": True}
        except OSError:
            return {"network_namespace": False}
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


def clone_available() -> bool:
    """Whether `fork_isolated` can pass clone flags (the raw clone syscall's number is known here)."""
    return _SYS_CLONE is not None


def fork_isolated(flags: int) -> int:
    """fork(), but with the child in new namespaces (`CLONE_NEWPID | CLONE_NEWIPC`) and, with
    CLONE_PARENT, a child of the caller's parent: the raw clone syscall, wrapped in CPython's own
    before/after-fork hooks exactly as `os.fork` wraps fork().

    unshare(CLONE_NEWPID) would move only the *next* child into a namespace, once: a zygote forks many
    children, each of which must be pid 1 of its own namespace (it sees no process but itself, and
    when it exits the kernel kills whatever it left behind). The caller is single-threaded, so the
    C library's fork-time bookkeeping for other threads does not arise.
    """
    if not flags or _SYS_CLONE is None:
        if flags:
            raise OSError(errno.ENOSYS, "clone flags need the raw clone syscall, unknown on this machine")
        return os.fork()
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _libc.syscall(_SYS_CLONE, ctypes.c_ulong(flags | signal.SIGCHLD), None, None, None, None)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return int(pid)


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
# Flags a bind mount keeps from its source: in a user namespace they are locked, and a read-only
# remount that dropped one would be refused.
_STATVFS_TO_MS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda v: None if v is None else v.encode()  # noqa: E731
    if _libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _bind_read_only(source_fd: int, target: str, *, device: bool = False) -> None:
    _mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND)
    locked = 0
    with contextlib.suppress(OSError):
        flags = os.statvfs(target).f_flag
        locked = sum(ms for st, ms in _STATVFS_TO_MS if flags & st)
    nodev = 0 if device else MS_NODEV
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | nodev | locked)


# Device nodes a Python process may open (all read-only here); the rest of /dev does not exist.
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


def enter_filesystem_view(paths: list[str]) -> bool:
    """Give this process (the zygote, once; its children inherit it) a root with only `paths`, each
    read-only at its own location, an empty /tmp, and a few devices: no /home, /root, /var, /proc,
    no service data or logs. False where the host forbids it.

    Built on a private tmpfs mounted over /tmp (in the new mount namespace only), then made the root
    with pivot_root(".", "."), and the old root detached. The sources are opened before the tmpfs
    hides anything, so a path under /tmp binds as well as any other. Should building fail midway,
    the zygote stays in its private namespace with the host's view (the tmpfs detached again).
    """
    if _SYS_PIVOT_ROOT is None:
        return False
    try:
        _unshare(CLONE_NEWNS)
    except OSError:
        return False
    # Opened in the new namespace (a bind mount's source must be a mount of the caller's namespace).
    sources: dict[str, int] = {}
    links: dict[str, str] = {}
    try:
        for path in sorted({os.path.abspath(p) for p in paths} | set(_DEVICES)):
            if os.path.islink(path):  # e.g. /lib -> usr/lib: the same link, to what is bound anyway
                links[path] = os.readlink(path)
                continue
            with contextlib.suppress(OSError):
                sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        # Nothing mounted here may propagate back to the host's namespace.
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        new_root = "/tmp"
        _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        try:
            _build_root(new_root, sources, links)
        except OSError as exc:  # back to the host's view (in a private namespace), reported inactive
            print(f"sandbox zygote: cannot build the filesystem view: {exc}", file=sys.stderr)
            os.chdir("/")
            _libc.umount2(new_root.encode(), _MNT_DETACH)
            return False
        return True
    finally:
        for fd in sources.values():
            os.close(fd)


def _build_root(new_root: str, sources: dict[str, int], links: dict[str, str]) -> None:
    for path, fd in sources.items():
        target = new_root + path
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _bind_read_only(fd, target, device=path in _DEVICES)
    for path, destination in links.items():
        os.makedirs(os.path.dirname(new_root + path), mode=0o755, exist_ok=True)
        os.symlink(destination, new_root + path)
    os.makedirs(new_root + "/tmp", mode=0o755, exist_ok=True)
    os.chdir(new_root)
    if _libc.syscall(_SYS_PIVOT_ROOT, b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    if _libc.umount2(b".", _MNT_DETACH) != 0:  # the old root, stacked under the new one
        err = ctypes.get_errno()
        raise OSError(err, f"umount old root: {os.strerror(err)}")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


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

    # 0. Join the memory cgroup of this child's slot, first: before it allocates anything, and while
    #    still privileged (moving a process needs it) and still holding the descriptor.
    layers["cgroup_memory"] = False
    if plan.cgroup_procs_fd is not None:
        with contextlib.suppress(OSError):
            layers["cgroup_memory"] = os.write(plan.cgroup_procs_fd, b"0") == 1  # "0": the writer itself

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
    baseline = plan.address_space if plan.address_space is not None else address_space_bytes()
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
