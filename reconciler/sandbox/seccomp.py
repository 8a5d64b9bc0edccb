"""The seccomp filter of a sandboxed child, through the system's libseccomp (pyseccomp, via ctypes).

An ALLOW-list: what CPython, numpy and pandas need to compute, read the Python installation, keep
time, handle their own signals and talk over the one socketpair. Everything else fails with EPERM
(the strategy sees a clean Python exception, not a dead process): new processes and programs,
sockets, file creation and writes, signals to anyone, another process's memory or scheduling, SysV
and POSIX IPC, memfd, keyrings, bpf, perf, userfaultfd, io_uring, mounts and namespaces. Calls from a
foreign architecture (int 0x80 on x86_64) kill the process: libseccomp's default bad-arch action.

Calls with a harmless and a harmful use are allowed by argument: `fcntl` for descriptor flags but
not for signal ownership, leases or locks; `ioctl` for the few terminal and non-blocking requests
CPython makes; `openat` for reading only; `clone` for threads only; `prlimit64` on itself only.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

try:  # libseccomp may be absent on a host; the sandbox then reports the layer as inactive.
    import pyseccomp as _seccomp
except (ImportError, OSError):  # pragma: no cover - depends on the host
    _seccomp = None

_CLONE_THREAD = 0x00010000

# Allowed with any arguments. Names the running kernel's architecture lacks are skipped.
_ALLOW = (
    # memory (bounded by RLIMIT_AS and the cgroup)
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "msync",
    # reading what is open, and the one socket
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "shutdown",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "lseek",
    "fadvise64",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    # looking at files (imports, linecache, time zones): the view is read-only anyway
    "fstat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "umask",
    # time, sleeping, the limit timers
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "time",
    "times",
    "setitimer",
    "getitimer",
    "alarm",
    # its own signal handling (SIGXCPU, SIGALRM); sending signals is not here
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "sigaltstack",
    "restart_syscall",
    # about itself
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getpgrp",
    "getpgid",
    "getsid",
    "getrusage",
    "getpriority",
    "sched_getaffinity",
    "sched_yield",
    "getcpu",
    "uname",
    "sysinfo",
    "getrandom",
    # threads' plumbing in the C library (new threads themselves fail: RLIMIT_NPROC is 0)
    "futex",
    "set_robust_list",
    "set_tid_address",
    "rseq",
    "arch_prctl",
    "exit",
    "exit_group",
)

# Calls whose structured argument cannot be inspected: ENOSYS makes glibc fall back to the old call,
# which the filter can inspect (clone3 -> clone, openat2 -> openat).
_ENOSYS = ("clone3", "openat2")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_F_DUPFD, _F_GETFD, _F_SETFD, _F_GETFL, _F_SETFL, _F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
# Not here: F_SETOWN/F_SETOWN_EX/F_SETSIG (a descriptor that signals another process), F_SETLEASE,
# F_NOTIFY, and the record locks (a channel between tenants sharing the read-only files).
_FCNTL_ALLOWED = (_F_DUPFD, _F_GETFD, _F_SETFD, _F_GETFL, _F_SETFL, _F_DUPFD_CLOEXEC, 9, 1032, 1034)
# TCGETS (isatty), FIONREAD, FIONBIO (socket.setblocking), FIONCLEX, FIOCLEX.
_IOCTL_ALLOWED = (0x5401, 0x541B, 0x5421, 0x5450, 0x5451)


def available() -> bool:
    return _seccomp is not None


def _known(name: str) -> bool:
    try:
        _seccomp.resolve_syscall(_seccomp.Arch.NATIVE, name)  # type: ignore[union-attr]
    except (ValueError, OSError):
        return False
    return True


def compile_filter() -> bytes:
    """Build the filter with libseccomp and return its BPF program (done once, in the zygote).

    Compiling costs milliseconds; installing a ready program is one prctl. The filter does not
    depend on the child's pid: it may send no signal at all (CPython needs none; the kernel
    delivers SIGXCPU and SIGALRM itself).
    """
    if _seccomp is None:
        raise OSError(errno.ENOSYS, "libseccomp is not available")
    s: Any = _seccomp
    f = s.SyscallFilter(s.ERRNO(errno.EPERM))
    for name in _ALLOW:
        if _known(name):
            f.add_rule(s.ALLOW, name)
    for name in _ENOSYS:
        if _known(name):
            f.add_rule(s.ERRNO(errno.ENOSYS), name)
    # Opening for reading (lazy imports, time zones); never for writing or creating.
    f.add_rule(s.ALLOW, "openat", s.Arg(2, s.MASKED_EQ, _WRITE_FLAGS, 0))
    if _known("open"):
        f.add_rule(s.ALLOW, "open", s.Arg(1, s.MASKED_EQ, _WRITE_FLAGS, 0))
    for command in _FCNTL_ALLOWED:
        f.add_rule(s.ALLOW, "fcntl", s.Arg(1, s.EQ, command))
    for request in _IOCTL_ALLOWED:
        f.add_rule(s.ALLOW, "ioctl", s.Arg(1, s.MASKED_EQ, 0xFFFFFFFF, request))
    # Threads only (and those fail on RLIMIT_NPROC): a clone without CLONE_THREAD is a new process.
    f.add_rule(s.ALLOW, "clone", s.Arg(0, s.MASKED_EQ, _CLONE_THREAD, _CLONE_THREAD))
    f.add_rule(s.ALLOW, "prlimit64", s.Arg(0, s.EQ, 0))  # glibc's get/setrlimit pass pid 0: itself
    fd = os.memfd_create("seccomp-bpf")
    try:
        with os.fdopen(fd, "w+b", closefd=False) as fh:
            f.export_bpf(fh)
            fh.seek(0)
            return fh.read()
    finally:
        os.close(fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_libc = ctypes.CDLL(None, use_errno=True)


class Program:
    """A compiled filter, ready to install with a single prctl in a freshly forked child."""

    def __init__(self, bpf: bytes) -> None:
        if not bpf or len(bpf) % 8:
            raise ValueError("not a BPF program")
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))

    def install(self) -> None:
        """Irreversible; requires no_new_privs (or CAP_SYS_ADMIN)."""
        if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
