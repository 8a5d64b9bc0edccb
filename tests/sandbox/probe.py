"""Runs `raw_probe` (unrestricted Python inside the real confinement) and returns its report."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import reconciler
from reconciler.sandbox import host
from reconciler.sandbox.confine import CHILD_NICENESS
from reconciler.sandbox.zygote_client import scrubbed_environment
from tests.sandbox.conftest import PLANTED_SECRET

ROOT = Path(reconciler.__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
# `unshare --user` as root: this process becomes uid 1000 in a user namespace, the code path of a
# replica that does not run as root (file access is still root's, so only the mechanism is shown).
AS_UID_1000 = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
# What a child must not see of the host: the project's own files beyond the sandbox package.
HIDDEN_PROJECT_PATHS = [str(ROOT / "README.md"), str(ROOT / "tests"), str(ROOT / "pyproject.toml")]


# A child's niceness: the sandbox lowers its priority by CHILD_NICENESS from the replica's own (the
# test process here), up to the kernel's 19; 10 when the tests run at the default 0, more under `nice`.
CHILD_NICENESS_SEEN = min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS)


def run_probe(
    scenario: str,
    fake_database: socket.socket,
    *,
    seccomp: bool = True,
    prefix: list[str] | None = None,
    hidden_paths: list[str] | None = None,
) -> dict[str, Any]:
    """Run a scenario as the real zygote would; with `prefix` (non-root), without uids or cgroup.

    As root, a memory cgroup is claimed for the run exactly as the sandbox claims one, and removed
    after it: `report["cgroup_removed"]` says whether anything (a process, a slot) kept it alive.
    """
    uids = None
    cgroup = None
    if IS_ROOT and not prefix:
        block = host.UidBlock.claim(2_600_000)
        uids = [block.first, block.count]
        cgroup = host.MemoryCgroup.create()
    config = {
        "scenario": scenario,
        "target_pid": os.getpid(),
        "port": fake_database.getsockname()[1],
        "secret_prefix": PLANTED_SECRET,
        "uids": uids,
        "cgroup": {"path": str(cgroup.path), "version": cgroup.version} if cgroup else None,
        "seccomp": seccomp,
        "hidden_paths": HIDDEN_PROJECT_PATHS + (hidden_paths or []),
    }
    try:
        completed = subprocess.run(
            [*(prefix or []), sys.executable, "-P", "-m", "tests.sandbox.raw_probe"],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=120,
            env=scrubbed_environment(),
            cwd=ROOT,
        )
        assert completed.returncode == 0, completed.stderr
        report: dict[str, Any] = json.loads(completed.stdout)
    finally:
        if uids:
            block.close()
        if cgroup is not None:
            cgroup.remove()
    report["cgroup"] = None if cgroup is None else str(cgroup.path)
    report["cgroup_removed"] = cgroup is None or not cgroup.path.exists()
    return report


def refused(result: str) -> bool:
    """A probe's attempt failed (any exception); `ok:` means it worked."""
    return not result.startswith("ok")


def _mount_points_under_tmp() -> frozenset[str]:
    """The entries the view's own /tmp must hold: the first directory of each path the view mounts
    (the Python installation, the project) when a host keeps it under /tmp, as a fresh clone there
    does. They are read-only mount points, not files a run could leave behind."""
    paths = (sys.base_prefix, sys.prefix, os.path.dirname(reconciler.__file__))
    entries = set()
    for path in paths:
        for variant in (Path(path), Path(path).resolve()):
            if variant.parts[:2] == ("/", "tmp") and len(variant.parts) > 2:
                entries.add(variant.parts[2])
    return frozenset(entries)


VIEW_TMP_MOUNTS = _mount_points_under_tmp()
