"""What the replica claims from its host for its zygote's children: a block of uids, a memory cgroup.

Both are claimed in the replica (which sees the host), before the zygote starts, and handed to it by
name: the zygote moves into its own filesystem view, where neither /sys nor other replicas exist.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

# Concurrent children one zygote may hold (running or pre-forked): one uid each.
UIDS_PER_REPLICA = 512
_MAX_BLOCKS = 128
_CGROUP_PREFIX = "strategy-executor-sandbox-"
_serial = itertools.count(1)  # one cgroup per zygote, several zygotes per process over its life


@dataclass
class UidBlock:
    """`count` uids starting at `first`, held by this replica alone while `lock` stays open.

    Replicas on one host agree without a file or a server: each binds an abstract unix socket named
    after its block, which the kernel releases when the process ends, however it ends.
    """

    first: int
    count: int
    lock: socket.socket

    @classmethod
    def claim(cls, base: int, count: int = UIDS_PER_REPLICA) -> UidBlock:
        for index in range(_MAX_BLOCKS):
            lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                lock.bind(f"\0strategy-executor-sandbox-uids-{base}-{index}")
            except OSError:
                lock.close()
                continue
            return cls(base + index * count, count, lock)
        raise RuntimeError(f"all {_MAX_BLOCKS} sandbox uid blocks from SANDBOX_UID_BASE={base} are in use")

    def close(self) -> None:
        self.lock.close()


def _own_cgroup_lines() -> list[tuple[str, str, str]]:
    lines = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        lines.append((number, controllers, path))
    return lines


def _mount_points() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            points.append((fields[4].replace("\\040", " "), tail[0], tail[2]))
    return points


def find_memory_cgroup() -> tuple[Path, int] | None:
    """This process's memory cgroup directory and its version (1 or 2), if it may create children in it.

    v1: the memory hierarchy's directory for this process. v2: this process's cgroup, if the memory
    controller is available to its children (`cgroup.subtree_control`) - which the kernel allows only
    where the cgroup holds no process itself, i.e. in a delegated subtree.
    """
    with contextlib.suppress(OSError, ValueError):
        mounts = _mount_points()
        for _number, controllers, path in _own_cgroup_lines():
            if "memory" in controllers.split(","):
                for point, kind, options in mounts:
                    if kind == "cgroup" and "memory" in options.split(","):
                        directory = Path(point + path)
                        if os.access(directory, os.W_OK):
                            return directory, 1
        for _number, controllers, path in _own_cgroup_lines():
            if controllers == "":
                for point, kind, _options in mounts:
                    if kind == "cgroup2":
                        directory = Path(point + path)
                        enabled = (directory / "cgroup.subtree_control").read_text().split()
                        if "memory" in enabled and os.access(directory, os.W_OK):
                            return directory, 2
    return None


@dataclass
class MemoryCgroup:
    """A cgroup directory for one zygote's children (the zygote creates one per slot inside it)."""

    path: Path
    version: int

    @classmethod
    def create(cls) -> MemoryCgroup | None:
        """A new, empty cgroup under this process's own; None where the host does not allow one."""
        found = find_memory_cgroup()
        if found is None:
            return None
        parent, version = found
        sweep_stale(parent)
        path = parent / f"{_CGROUP_PREFIX}{os.getpid()}-{next(_serial)}"
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return None
        return cls(path, version)

    def remove(self) -> None:
        """Remove the slot cgroups and this one; their processes are gone by now (the zygote's too)."""
        remove_tree(self.path)


def remove_tree(path: Path) -> None:
    """rmdir a cgroup and its child cgroups (cgroupfs directories: rmdir, never unlink)."""
    with contextlib.suppress(OSError):
        for child in path.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        path.rmdir()


def sweep_stale(parent: Path) -> None:
    """Remove cgroups left by replicas that were killed before they could (their pid is gone)."""
    pattern = re.compile(re.escape(_CGROUP_PREFIX) + r"(\d+)-")
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = pattern.match(entry.name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                remove_tree(entry)
