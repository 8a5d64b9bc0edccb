"""The seccomp filter of a sandboxed child, through the system's libseccomp (pyseccomp, via ctypes).

A deny-list over a default of ALLOW: CPython, numpy and pandas use too many syscalls for an allow-list
to stay correct across library upgrades, while the dangerous ones are few and stable. Denied calls
fail with an errno (EPERM, or ENOSYS where libc should fall back) so the strategy sees a clean Python
exception instead of a dead process. Calls from a foreign architecture (int 0x80 on x86_64) kill the
process: libseccomp's default bad-arch action.
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

# Creating processes or new programs, reaching into other processes, changing the system.
_DENY_ALWAYS = (
    "fork",
    "vfork",
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "get_robust_list",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "setns",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "quotactl",
    "personality",
    "setpriority",
    "sched_setscheduler",
    "sched_setparam",
    "sched_setaffinity",
    "ioprio_set",
    "migrate_pages",
    "move_pages",
    "mbind",
    # No network: the zygote's namespace is already empty; this also stops new sockets entirely.
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    # No file writes, whatever the uid could otherwise write (e.g. /tmp).
    "creat",
    "truncate",
    "ftruncate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "mknod",
    "mknodat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utimensat",
    "memfd_create",
    "name_to_handle_at",
    "open_by_handle_at",
)

# Calls whose structured argument cannot be inspected: ENOSYS makes glibc fall back to the old call,
# which the filter can inspect (clone3 -> clone).
_ENOSYS = ("clone3", "openat2")

_WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)


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

    Compiling costs milliseconds; installing a ready program is one prctl. The filter therefore does
    not depend on the child's pid: signals to any other process are refused outright (CPython needs
    no kill/tgkill of its own; the kernel delivers SIGXCPU and SIGALRM itself).
    """
    if _seccomp is None:
        raise OSError(errno.ENOSYS, "libseccomp is not available")
    s: Any = _seccomp
    eperm = s.ERRNO(errno.EPERM)
    f = s.SyscallFilter(s.ALLOW)
    for name in _DENY_ALWAYS:
        if _known(name):
            f.add_rule(eperm, name)
    for name in _ENOSYS:
        if _known(name):
            f.add_rule(s.ERRNO(errno.ENOSYS), name)
    # Threads only: a clone without CLONE_THREAD is a new process (fork bomb, helper process).
    f.add_rule(eperm, "clone", s.Arg(0, s.MASKED_EQ, _CLONE_THREAD, 0))
    # Opening for reading is needed (lazy imports of pandas modules); opening for writing is not.
    for flag in _WRITE_FLAGS:
        f.add_rule(eperm, "openat", s.Arg(2, s.MASKED_EQ, flag, flag))
        if _known("open"):
            f.add_rule(eperm, "open", s.Arg(1, s.MASKED_EQ, flag, flag))
    # Siblings run as the same unprivileged uid: no signals, no prlimit on anything but itself.
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        f.add_rule(eperm, name)
    f.add_rule(eperm, "prlimit64", s.Arg(0, s.NE, 0))  # glibc's setrlimit passes pid 0
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
