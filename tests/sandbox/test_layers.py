"""Defence in depth: the operating-system layers hold even for code that escaped the language policy.

`raw_probe` confines a fork exactly as the zygote confines each child (`confine_child`), then runs
plain Python in it. The secret planted in this process's environment (conftest) must stay out of reach.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reconciler
from reconciler.sandbox import Sandbox
from reconciler.sandbox.zygote_client import scrubbed_environment
from tests.sandbox.conftest import PLANTED_SECRET, LoopRunner, leftover_processes

ROOT = Path(reconciler.__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0


def _run_probe(fake_database: socket.socket, prefix: list[str], uid: int | None, gid: int | None) -> Any:
    config = {
        "target_pid": os.getpid(),
        "port": fake_database.getsockname()[1],
        "secret_prefix": PLANTED_SECRET,
        "uid": uid,
        "gid": gid,
    }
    completed = subprocess.run(
        [*prefix, sys.executable, "-P", "-m", "tests.sandbox.raw_probe"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=60,
        env=scrubbed_environment(),
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def probe_report(fake_database: socket.socket) -> dict[str, Any]:
    if IS_ROOT:
        nobody = pwd.getpwnam("nobody")
        return _run_probe(fake_database, [], nobody.pw_uid, nobody.pw_gid)
    return _run_probe(fake_database, [], None, None)


def test_child_runs_as_unprivileged_user_without_groups(probe_report: dict[str, Any]) -> None:
    if IS_ROOT:
        nobody = pwd.getpwnam("nobody")
        assert probe_report["uid"] == [nobody.pw_uid, nobody.pw_uid]
        assert probe_report["gid"] == [nobody.pw_gid, nobody.pw_gid]
        assert probe_report["groups"] == []
    assert probe_report["setuid_root"].startswith("PermissionError")
    assert probe_report["cap_eff"] == probe_report["cap_prm"] == "0000000000000000"
    assert probe_report["layers"]["privilege_drop"] is True


@pytest.mark.skipif(not IS_ROOT, reason="simulates a non-root replica with `unshare --user` (needs root)")
def test_non_root_replica_uses_a_user_namespace(fake_database: socket.socket) -> None:
    """The code path of a replica that does not run as root: `unshare --user` makes this process
    uid 1000 in a user namespace (file access is still root's, so only the mechanism is checked:
    a nested user + network namespace, capabilities dropped, no_new_privs, seccomp)."""
    as_uid_1000 = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    report = _run_probe(fake_database, as_uid_1000, None, None)
    assert report["network"] == {"network_namespace": True, "user_namespace": True}
    expected = {"rlimits": True, "privilege_drop": True, "no_new_privs": True, "seccomp": True}
    assert report["layers"] == expected
    assert report["uid"] == [1000, 1000]
    assert report["cap_eff"] == report["cap_prm"] == "0000000000000000"
    assert report["interfaces"] == ["lo"]
    for probe in ("socket", "fork", "exec", "write_tmp", "kill_target", "ptrace_target", "unshare"):
        assert not report[probe].startswith("ok"), (probe, report[probe])


def test_harden_replica_process_makes_it_non_dumpable() -> None:
    code = (
        "import ctypes; from reconciler.sandbox import harden_replica_process; "
        "libc = ctypes.CDLL(None); before = libc.prctl(3, 0, 0, 0, 0); harden_replica_process(); "
        "print(before, libc.prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, env=scrubbed_environment()
    )
    assert out.stdout.split() == ["1", "0"], out.stderr


def test_no_new_privileges_and_seccomp_filter_installed(probe_report: dict[str, Any]) -> None:
    assert probe_report["no_new_privs"] == "1"
    assert probe_report["seccomp_mode"] == "2"  # SECCOMP_MODE_FILTER
    assert probe_report["layers"]["seccomp"] is True


def test_only_the_socketpair_is_open(probe_report: dict[str, Any]) -> None:
    # descriptor 3 is the socketpair; one other is os.listdir's own handle on /proc/self/fd
    fds = probe_report["fds"]
    assert 3 in fds and len(fds) == 2, fds


def test_rlimits_and_priority(probe_report: dict[str, Any]) -> None:
    assert probe_report["niceness"] == 10
    assert probe_report["rlimit_core"] == 0
    assert probe_report["rlimit_nofile"] == 16
    assert probe_report["rlimit_cpu"] == 5
    assert 100 << 20 < probe_report["rlimit_as"] < 4 << 30


def test_network_namespace_is_empty_and_sockets_are_refused(
    probe_report: dict[str, Any], fake_database: socket.socket
) -> None:
    assert probe_report["network"]["network_namespace"] is True
    assert probe_report["interfaces"] == ["lo"]
    assert probe_report["socket"].startswith("PermissionError")
    assert not probe_report["connect_db"].startswith("ok")
    with pytest.raises(BlockingIOError):
        fake_database.accept()


def test_cannot_fork_exec_write_signal_or_trace(probe_report: dict[str, Any]) -> None:
    for probe in ("fork", "exec", "write_tmp", "kill_target", "ptrace_target", "unshare"):
        assert probe_report[probe].startswith(("PermissionError", "OSError:1")), (probe, probe_report[probe])
    assert not os.path.exists("/tmp/sandbox-raw-probe-write")


def test_cannot_read_the_supervisors_environment_or_memory(probe_report: dict[str, Any]) -> None:
    for probe in ("target_environ", "target_mem", "target_maps"):
        assert probe_report[probe].startswith("PermissionError"), (probe, probe_report[probe])
    # A search of every /proc/<pid>/{environ,cmdline,maps,mem} it can open finds no secret.
    assert probe_report["proc_scan"]["leaks"] == []
    assert probe_report["proc_scan"]["readable"] > 0  # the scan did run (cmdline is world-readable)
    assert probe_report["read_world_file"].startswith("ok")  # reading as such is allowed (imports)


def test_zygote_environment_is_scrubbed(sandbox: Sandbox) -> None:
    assert sandbox._zygote is not None
    pid = sandbox._zygote.process.pid
    environ = Path(f"/proc/{pid}/environ").read_bytes()  # readable by us (root or same uid)
    assert PLANTED_SECRET.encode() not in environ
    assert b"DATABASE_URL" not in environ and b"OTHER_TENANT" not in environ
    assert PLANTED_SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"OMP_NUM_THREADS=1" in environ and b"OPENBLAS_NUM_THREADS=1" in environ


def test_zygote_holds_no_tenant_modules(sandbox: Sandbox, loop_runner: LoopRunner) -> None:
    """The zygote refuses to serve if it loaded the settings; check it from the outside too."""
    assert sandbox._zygote is not None
    maps = Path(f"/proc/{sandbox._zygote.process.pid}/maps").read_text()
    assert "libpq" not in maps and "psycopg" not in maps
    code = (
        "import sys; import reconciler.sandbox.zygote, reconciler.sandbox.child; "
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'reconciler.settings', 'reconciler.store', 'sqlalchemy', 'psycopg', 'pydantic'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, env=scrubbed_environment()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_layers_property_reports_every_layer(sandbox: Sandbox, loop_runner: LoopRunner) -> None:
    layers = sandbox.layers
    names = ("network_namespace", "seccomp", "privilege_drop", "rlimits", "no_new_privs", "language_policy")
    # On this CI host (root, libseccomp present, unshare allowed) every layer is active.
    assert all(layers[name] for name in names), layers
    assert loop_runner.run(leftover_processes(sandbox)) == []
