"""Defence in depth: the operating-system layers hold even for code that escaped the language policy.

`raw_probe` sets itself up as the zygote does and forks its children with the zygote's own code, then
runs plain, unrestricted Python in them. The secret planted in this process's environment (conftest)
must stay out of reach. The cross-tenant items (two concurrent children) are in test_tenants.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.sandbox import Sandbox, host
from reconciler.sandbox.zygote_client import scrubbed_environment
from tests.sandbox.conftest import PLANTED_SECRET, LoopRunner, leftover_processes
from tests.sandbox.probe import AS_UID_1000, CHILD_NICENESS_SEEN, IS_ROOT, ROOT, VIEW_TMP_MOUNTS, refused, run_probe


@pytest.fixture(scope="module")
def probe_report(fake_database: socket.socket, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Stand-ins for the service's data directory and its log: the child must not see either.
    data = tmp_path_factory.mktemp("service-data")
    (data / "secrets.key").write_text(PLANTED_SECRET)
    log = data / "service.log"
    log.write_text(f"a log line with {PLANTED_SECRET}\n")
    return run_probe("single", fake_database, hidden_paths=[str(data), str(log)])


@pytest.fixture(scope="module")
def report_without_seccomp(fake_database: socket.socket) -> dict[str, Any]:
    """The same probes with the seccomp filter left out: what the namespaces and limits hold alone."""
    return run_probe("single", fake_database, seccomp=False)


def test_child_runs_as_its_own_unprivileged_user_without_groups(probe_report: dict[str, Any]) -> None:
    status = probe_report["outside"]["status"]
    if IS_ROOT:
        uid = probe_report["uid"][0]
        assert uid != 0 and probe_report["uid"] == [uid, uid] and probe_report["gid"] == [uid, uid]
        assert status["Uid"].split() == [str(uid)] * 4
        assert probe_report["groups"] == [] and status["Groups"] == ""
        assert probe_report["zygote_layers"]["distinct_uids"] is True
    assert probe_report["setuid_root"].startswith("PermissionError")
    assert status["CapEff"] == status["CapPrm"] == "0000000000000000"
    assert probe_report["layers"]["privilege_drop"] is True


def test_child_is_alone_in_its_pid_and_ipc_namespaces(probe_report: dict[str, Any]) -> None:
    """It is pid 1 of its own PID namespace (sees no process but itself) and has its own SysV IPC."""
    assert probe_report["pid"] == 1
    assert probe_report["outside"]["nspid"][-1] == "1" and len(probe_report["outside"]["nspid"]) >= 2
    shared = probe_report["outside"]["namespaces_shared_with_zygote"]
    assert "pid" not in shared and "ipc" not in shared
    if IS_ROOT:  # (a non-root run cannot read the test process's namespaces to compare)
        assert probe_report["outside"]["namespaces_shared_with_host"] == []
    layers = probe_report["zygote_layers"]
    assert layers["pid_namespace"] is True and layers["ipc_namespace"] is True


def test_filesystem_view_holds_only_the_python_installation(probe_report: dict[str, Any]) -> None:
    visible = probe_report["visible"]
    # No host /proc, /sys, home directories, /var (so no /var/lib, logs), /run, /etc beyond the loader's
    # cache, no /dev/shm; none of the service's data or log files; none of the project beyond its package.
    # (A directory on the way down to the Python installation, e.g. /home on a developer's machine,
    # exists in the view as that path alone.)
    shown = {path for path, seen in visible.items() if seen}
    assert shown <= _ancestors_of_the_installation(), shown
    assert set(probe_report["root_entries"]) <= {"usr", "lib", "lib64", "lib32", "etc", "dev", "tmp", *_tops()}
    # /root holds at most the path down to a Python installation kept there (pyenv): nothing else.
    kept = _ancestors_of_the_installation() | _installation()
    under_root = {Path(path).parts[2] for path in kept if path.startswith("/root/")}
    assert set(probe_report["slash_root_entries"]) <= under_root
    assert set(probe_report["tmp_entries"]) <= VIEW_TMP_MOUNTS  # an empty /tmp of its own
    assert probe_report["read_python_file"].startswith("ok")  # what imports need is readable
    assert probe_report["write_tmp"].startswith(("PermissionError", "OSError"))
    assert probe_report["zygote_layers"]["filesystem_view"] is True


def _installation() -> set[str]:
    import reconciler

    paths = (sys.base_prefix, sys.prefix, os.path.dirname(reconciler.__file__))
    return {str(variant) for path in paths for variant in (Path(path), Path(path).resolve())}


def _ancestors_of_the_installation() -> set[str]:
    return {str(parent) for path in _installation() for parent in Path(path).parents}


def _tops() -> set[str]:
    """Top-level directories under which this host keeps the Python installation or the project."""
    import reconciler

    paths = [sys.base_prefix, sys.prefix, os.path.dirname(reconciler.__file__)]
    return {Path(path).resolve().parts[1] for path in paths} | {Path(path).parts[1] for path in paths}


def test_no_memory_outside_the_limit(probe_report: dict[str, Any], report_without_seccomp: dict[str, Any]) -> None:
    """SysV IPC and memfd are refused; a shared mapping counts against the address-space limit.
    Without seccomp, a memfd cannot grow (RLIMIT_FSIZE) and SysV objects stay in the child's own
    IPC namespace: none appears on the host, and none outlives the child."""
    for probe in ("sysv_ipc", "memfd_grow"):
        assert probe_report[probe].startswith("PermissionError"), (probe, probe_report[probe])
    assert probe_report["shared_mapping_beyond_limit"] == "OSError:12"  # ENOMEM
    alone = report_without_seccomp
    assert alone["sysv_ipc"].startswith("ok"), alone["sysv_ipc"]  # created, in its own namespace...
    assert alone["outside"]["sysv_with_key"] == []  # ...invisible to the host while it lives
    assert alone["memfd_grow"].startswith("OSError:27"), alone["memfd_grow"]  # EFBIG
    assert alone["shared_mapping_beyond_limit"] == "OSError:12"
    for report in (probe_report, alone):
        assert report["leftovers"]["sysv_with_key"] == [] and report["leftovers"]["sysv_owned"] == []


def test_cgroup_memory_limit_per_child(probe_report: dict[str, Any]) -> None:
    found = host.find_memory_cgroup()
    if not IS_ROOT or found is None:
        assert probe_report["zygote_layers"]["cgroup_memory"] is False
        pytest.skip("this host does not let the replica create a memory cgroup")
    assert probe_report["layers"]["cgroup_memory"] is True
    assert probe_report["leftovers"]["cgroup_procs"] == [[]]  # the child left its slot's cgroup empty
    assert probe_report["cgroup_removed"] is True  # and nothing kept the cgroups alive after the run


def test_nothing_of_the_child_remains(probe_report: dict[str, Any]) -> None:
    assert probe_report["exit_status"] == 0
    leftovers = probe_report["leftovers"]
    assert leftovers["processes"] == []  # no process runs as its uid any more
    assert set(leftovers["tmp_entries"]) <= VIEW_TMP_MOUNTS  # no file
    assert leftovers["sysv_with_key"] == [] and leftovers["sysv_owned"] == []  # no segment


def test_seccomp_is_an_allow_list(probe_report: dict[str, Any]) -> None:
    """Calls no computation needs fail with EPERM, whatever namespace or uid would say."""
    assert probe_report["outside"]["status"]["NoNewPrivs"] == "1"
    assert probe_report["outside"]["status"]["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert probe_report["layers"]["seccomp"] is True
    for probe in (
        "fcntl_setown",
        "fcntl_setsig",
        "fcntl_setlease",
        "sysv_ipc",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "mount",
        "unshare",
        "setns",
        "socket",
        "fork",
        "exec",
        "ptrace_target",
        "kill_target",
    ):
        assert probe_report[probe] == "PermissionError:1", (probe, probe_report[probe])


def test_only_the_socketpair_is_open(probe_report: dict[str, Any]) -> None:
    assert probe_report["outside"]["fds"] == [3]


def test_rlimits_and_priority(probe_report: dict[str, Any]) -> None:
    assert probe_report["niceness"] == CHILD_NICENESS_SEEN
    assert probe_report["rlimit_core"] == 0
    assert probe_report["rlimit_nofile"] == 16
    assert probe_report["rlimit_cpu"] == 5
    assert 100 << 20 < probe_report["rlimit_as"] < 4 << 30


def test_network_namespace_is_empty_and_sockets_are_refused(
    probe_report: dict[str, Any], report_without_seccomp: dict[str, Any], fake_database: socket.socket
) -> None:
    assert probe_report["zygote_layers"]["network_namespace"] is True
    assert probe_report["outside"]["interfaces"] == ["lo"]
    assert probe_report["socket"].startswith("PermissionError")
    assert refused(probe_report["connect_db"]) and refused(report_without_seccomp["connect_db"])
    with pytest.raises(BlockingIOError):
        fake_database.accept()


def test_cannot_reach_the_supervisor_even_without_seccomp(
    probe_report: dict[str, Any], report_without_seccomp: dict[str, Any]
) -> None:
    """The test process (holding the planted secret) is out of sight: no /proc, not in the PID namespace."""
    for report in (probe_report, report_without_seccomp):
        for probe in ("target_environ", "target_mem", "kill_target", "ptrace_target", "fork", "write_tmp"):
            assert refused(report[probe]), (probe, report[probe])
    assert report_without_seccomp["kill_target"] == "ProcessLookupError:3"
    assert report_without_seccomp["target_environ"] == "FileNotFoundError:2"
    assert PLANTED_SECRET not in repr(probe_report) and PLANTED_SECRET not in repr(report_without_seccomp)


@pytest.mark.skipif(not IS_ROOT, reason="simulates a non-root replica with `unshare --user` (needs root)")
def test_non_root_replica_keeps_every_namespace(fake_database: socket.socket) -> None:
    """A replica that does not run as root: a user namespace grants the zygote what it needs for the
    network, mount, PID and IPC namespaces; only the distinct uids and the cgroup are missing (and
    reported so), and the child is still alone in its PID namespace."""
    report = run_probe("single", fake_database, prefix=AS_UID_1000)
    layers = report["zygote_layers"]
    for name in ("network_namespace", "user_namespace", "filesystem_view", "pid_namespace", "ipc_namespace"):
        assert layers[name] is True, name
    for name in ("rlimits", "privilege_drop", "no_new_privs", "seccomp"):
        assert layers[name] is True, name
    assert layers["distinct_uids"] is False and layers["cgroup_memory"] is False
    assert report["uid"] == [1000, 1000] and report["pid"] == 1
    assert report["outside"]["status"]["CapEff"] == "0000000000000000"
    assert report["outside"]["interfaces"] == ["lo"]
    assert {path for path, seen in report["visible"].items() if seen} <= _ancestors_of_the_installation()
    for probe in ("socket", "fork", "exec", "write_tmp", "kill_target", "ptrace_target", "unshare", "sysv_ipc"):
        assert refused(report[probe]), (probe, report[probe])


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


def test_the_zygote_itself_sees_only_the_view(sandbox: Sandbox) -> None:
    """The real zygote (root of every child's view) shows no /proc, /home or service files."""
    assert sandbox._zygote is not None
    root = Path(f"/proc/{sandbox._zygote.process.pid}/root")
    entries = {entry.name for entry in root.iterdir()}
    assert entries <= {"usr", "lib", "lib64", "lib32", "etc", "dev", "tmp", *_tops()}, entries
    assert not (root / "proc").exists() and not (root / "home").exists()
    assert {entry.name for entry in (root / "tmp").iterdir()} <= VIEW_TMP_MOUNTS


def test_layers_property_reports_every_layer(sandbox: Sandbox, loop_runner: LoopRunner) -> None:
    layers = sandbox.layers
    names = [
        "network_namespace",
        "filesystem_view",
        "pid_namespace",
        "ipc_namespace",
        "seccomp",
        "privilege_drop",
        "rlimits",
        "no_new_privs",
        "language_policy",
    ]
    if IS_ROOT:
        names.append("distinct_uids")
    # On this CI host (root, libseccomp present, namespaces allowed) these layers are all active; the
    # memory cgroup is active exactly where the host lets this process create one.
    assert all(layers[name] for name in names), layers
    assert layers["cgroup_memory"] is (IS_ROOT and host.find_memory_cgroup() is not None)
    assert loop_runner.run(leftover_processes(sandbox)) == []


def _processes_with_uids(first: int, count: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and first <= int(line.split()[1]) < first + count:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not IS_ROOT, reason="uids of their own need a root replica")
def test_through_the_real_sandbox_nothing_of_a_run_remains(loop_runner: LoopRunner) -> None:
    """Runs through a real Sandbox; afterwards only the pre-forked spare holds one of the replica's
    uids, and its slot's cgroup; once the sandbox closes, no process and no cgroup of it remains."""
    from reconciler.outcome import ExecutionRequest
    from tests.sandbox.conftest import TEST_LIMITS

    box = Sandbox(TEST_LIMITS)
    code = "import time\ntime.sleep(0.2)\nRESULT = sum(range(10))\n"

    async def scenario() -> tuple[list[Any], list[int], list[int]]:
        await box.start()
        outcomes = await asyncio.gather(*(box.run(ExecutionRequest(f"e{i}", f"s{i}", code)) for i in range(4)))
        for _ in range(100):  # the spare is replaced right after a run takes it
            warm = (await box.zygote_status())["warm"]
            if warm:
                break
            await asyncio.sleep(0.02)
        return list(outcomes), warm, await leftover_processes(box)

    assert box._zygote is None
    outcomes, warm, leftovers = loop_runner.run(scenario())
    assert [outcome.status for outcome in outcomes] == ["succeeded"] * 4
    assert leftovers == []
    assert box._uids is not None
    first, count = box._uids.first, box._uids.count
    assert sorted(_processes_with_uids(first, count)) == sorted(warm)
    cgroups = list(box._cgroups)
    assert len(cgroups) == (1 if box.layers["cgroup_memory"] else 0)
    for cgroup in cgroups:  # the slot cgroups hold the spare alone (pids as the host sees them)
        procs = [int(pid) for slot in cgroup.path.glob("slot-*") for pid in (slot / "cgroup.procs").read_text().split()]
        assert sorted(procs) == sorted(warm)
    loop_runner.run(box.close())
    for _ in range(100):
        if not _processes_with_uids(first, count):
            break
        time.sleep(0.02)
    assert _processes_with_uids(first, count) == []
    assert all(not cgroup.path.exists() for cgroup in cgroups)
