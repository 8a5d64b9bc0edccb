"""No tenant can touch another: two concurrent children, one attacking the other by its real pid.

Unrestricted Python (see raw_probe) in the attacker tries every route to the victim: signals (kill,
stop, tgkill, pidfd, a descriptor armed with F_SETOWN/F_SETSIG), scheduling (setpriority by pid and
by uid, sched_*, ioprio_set by pid and by uid), memory (process_vm_readv, ptrace), limits (prlimit)
and /proc/<pid>/... The victim reports afterwards whether anything reached it. Run with the seccomp
filter (the attempts fail with EPERM) and without it (the PID namespace and the distinct uid hold
on their own).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from reconciler.outcome import ExecutionOutcome, ExecutionRequest
from reconciler.sandbox import Sandbox
from tests.sandbox.conftest import TEST_LIMITS, LoopRunner
from tests.sandbox.probe import AS_UID_1000, CHILD_NICENESS_SEEN, IS_ROOT, VIEW_TMP_MOUNTS, refused, run_probe


@pytest.fixture(scope="module")
def pair(fake_database: socket.socket) -> dict[str, Any]:
    return run_probe("pair", fake_database)


@pytest.fixture(scope="module")
def pair_without_seccomp(fake_database: socket.socket) -> dict[str, Any]:
    return run_probe("pair", fake_database, seccomp=False)


def _assert_untouched(report: dict[str, Any]) -> None:
    attacks = report["attacks"]
    assert len(attacks) == 23
    # By uid, a call may "succeed" on the caller alone when the children share a uid (non-root): it
    # names no other process in the caller's PID namespace. What counts is the victim's own view.
    by_uid = {"setpriority_user", "ioprio_set_user"}
    worked = {name: result for name, result in attacks.items() if not refused(result)}
    assert set(worked) <= by_uid and (not worked or report["uids"][0] == report["uids"][1]), worked
    victim = report["victim"]
    assert victim["alive"] is True, victim
    assert victim["niceness"] == CHILD_NICENESS_SEEN  # the sandbox's own niceness, not the attacker's 19
    assert victim["ioprio"] in ("ok:0", "PermissionError:1")  # not the idle class the attacker set
    assert victim["signals"] == []  # nothing arrived through an armed descriptor or otherwise
    assert not report["victim_state"][1].startswith("T"), report["victim_state"]  # never stopped
    assert report["exit_status"] == {"victim": 0, "attacker": 0}


def test_concurrent_children_have_distinct_uids(pair: dict[str, Any]) -> None:
    victim_uid, attacker_uid = pair["uids"]
    if IS_ROOT:
        assert victim_uid != attacker_uid and 0 not in (victim_uid, attacker_uid)


def test_a_child_cannot_signal_stop_trace_or_reprioritise_another(pair: dict[str, Any]) -> None:
    _assert_untouched(pair)
    for name, result in pair["attacks"].items():
        if name.startswith("proc_"):  # no /proc at all in the child's filesystem view
            assert result == "FileNotFoundError:2", (name, result)
        else:
            assert result == "PermissionError:1", (name, result)  # refused by the seccomp allow-list


def test_namespaces_and_uids_hold_without_seccomp(pair_without_seccomp: dict[str, Any]) -> None:
    """With the filter left out, the victim's pid names no process in the attacker's PID namespace."""
    _assert_untouched(pair_without_seccomp)
    for name, result in pair_without_seccomp["attacks"].items():
        expected = "FileNotFoundError:2" if name.startswith("proc_") else "ProcessLookupError:3"
        assert result == expected, (name, result)


def test_nothing_of_either_child_remains(pair: dict[str, Any], pair_without_seccomp: dict[str, Any]) -> None:
    for report in (pair, pair_without_seccomp):
        leftovers = report["leftovers"]
        assert leftovers["processes"] == []
        assert leftovers["sysv_with_key"] == [] and leftovers["sysv_owned"] == []
        assert set(leftovers["tmp_entries"]) <= VIEW_TMP_MOUNTS
        assert all(procs in (None, []) for procs in leftovers["cgroup_procs"]), leftovers["cgroup_procs"]
        assert report["cgroup_removed"] is True


@pytest.mark.skipif(not IS_ROOT, reason="simulates a non-root replica with `unshare --user` (needs root)")
def test_non_root_replica_children_share_a_uid_but_not_a_pid_namespace(fake_database: socket.socket) -> None:
    """Without root the children share the replica's uid (reported: distinct_uids inactive), and the
    PID namespace alone keeps them apart."""
    report = run_probe("pair", fake_database, prefix=AS_UID_1000, seccomp=False)
    assert report["uids"] == [1000, 1000]
    assert report["zygote_layers"]["distinct_uids"] is False
    assert report["zygote_layers"]["pid_namespace"] is True
    _assert_untouched(report)


def test_a_run_beyond_the_identities_of_a_zygote_fails_clearly_and_the_others_run(loop_runner: LoopRunner) -> None:
    """A zygote with two identities (one held by its pre-forked spare): of three concurrent runs, the
    one that finds no free identity fails at once with a clear error; the others are unaffected,
    and once they end the identities are free again."""

    class TwoIdentities(Sandbox):
        def _zygote_config(self) -> dict[str, Any]:
            config = super()._zygote_config()
            if config["uids"]:
                config["uids"] = [config["uids"][0], 2]
            else:
                config["max_children"] = 2
            return config

    box = TwoIdentities(TEST_LIMITS)
    slow = "import time\ntime.sleep(0.5)\nRESULT = 'ran'\n"

    async def scenario() -> tuple[list[ExecutionOutcome], ExecutionOutcome]:
        await box.start()
        try:
            first = await asyncio.gather(*(box.run(ExecutionRequest(f"e{i}", f"s{i}", slow)) for i in range(3)))
            after = await box.run(ExecutionRequest("after", "s", "RESULT = 'fine'\n"))
            return list(first), after
        finally:
            await box.close()

    outcomes, after = loop_runner.run(scenario())
    statuses = sorted(outcome.status for outcome in outcomes)
    assert statuses == ["failed", "succeeded", "succeeded"], outcomes
    refused_run = next(outcome for outcome in outcomes if outcome.status == "failed")
    error = refused_run.error or ""
    assert "could not start the run" in error and "identities are in use" in error, error
    assert after.status == "succeeded" and after.result == "fine"
