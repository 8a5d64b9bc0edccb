"""The client commands drive a real running service end to end, with the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler import cli_client
from tests.e2e.harness import PROJECT_ROOT, TOKEN, free_port, wait_for
from tests.ops.conftest import Running

pytestmark = pytest.mark.slow

STRATEGY = """\
STATE["runs"] = STATE.get("runs", 0) + 1
print("hello from run", STATE["runs"], "n =", CONFIG["n"])
RESULT = {"runs": STATE["runs"]}
"""


def client_env(base: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EXECUTOR_API_TOKEN", "DATA_DIR", "DATABASE_URL")}
    env.update({"PYTHONPATH": str(PROJECT_ROOT), "STRATEGY_EXECUTOR_URL": base, "EXECUTOR_API_TOKEN": TOKEN})
    env.update(extra)
    return env


def cli(base: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One `strategy-executor` client command, its output piped (so plain text, no colour)."""
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        env=client_env(base, **env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_deploy_run_logs_stop_delete_with_exit_codes(serve: Running, tmp_path: Path) -> None:
    base = serve.base
    source = tmp_path / "hello.py"
    source.write_text(STRATEGY)

    deployed = cli(
        base,
        "deploy",
        str(source),
        "--interval",
        "3600",
        "--config",
        '{"n": 2}',
        "--id",
        "hello",
        "--user",
        "u1",
        "--json",
    )
    assert deployed.returncode == cli_client.EXIT_OK, deployed.stderr
    assert json.loads(deployed.stdout)["strategy_id"] == "hello"
    assert json.loads(deployed.stdout)["config"] == {"n": 2}

    listed = cli(base, "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header[:3] == ["id", "user", "status"] and [row[:2] for row in rows] == [["hello", "u1"]]
    assert "\x1b[" not in listed.stdout  # piped: no colour codes

    ran = cli(base, "run", "hello", "--wait", "--timeout", "60")
    assert ran.returncode == cli_client.EXIT_OK, ran.stdout + ran.stderr
    assert "succeeded" in ran.stdout and "hello from run" in ran.stdout and "n = 2" in ran.stdout

    ran_json = cli(base, "run", "hello", "--wait", "--json")
    assert ran_json.returncode == 0, ran_json.stderr
    execution = json.loads(ran_json.stdout)
    assert execution["status"] == "succeeded" and execution["trigger"] == "manual"

    logs = cli(base, "logs", "hello")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.count("hello from run") >= 2 and execution["execution_id"] in logs.stdout

    status = cli(base, "status", "hello")
    fields = dict(line.split("\t", 1) for line in status.stdout.splitlines())
    assert status.returncode == 0 and fields["status"] == "running" and fields["desired"] == "running"
    assert int(fields["succeeded"]) >= 2

    stopped = cli(base, "stop", "hello")
    assert stopped.returncode == 0 and "desired state stopped" in stopped.stdout, stopped.stderr
    fields = json.loads(cli(base, "status", "hello", "--json").stdout)
    assert fields["desired_state"] == "stopped"
    assert cli(base, "start", "hello").returncode == 0

    deleted = cli(base, "delete", "hello")
    assert deleted.returncode == 0 and "deletion requested" in deleted.stdout, deleted.stderr
    wait_for(lambda: cli(base, "status", "hello").returncode == cli_client.EXIT_NOT_FOUND, 60, "the deletion")


def test_exit_codes_for_each_kind_of_failure(serve: Running, tmp_path: Path) -> None:
    base = serve.base
    failing = tmp_path / "failing.py"
    failing.write_text("RESULT = 1\nraise ValueError('boom')\n")
    assert cli(base, "deploy", str(failing), "--interval", "3600", "--id", "boom", "--stopped").returncode == 0
    ran = cli(base, "run", "boom", "--wait")
    assert ran.returncode == cli_client.EXIT_EXECUTION_FAILED, ran.stdout + ran.stderr
    assert "failed" in ran.stdout and "boom" in ran.stdout

    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\nimport os\n")
    refused = cli(base, "deploy", str(bad), "--interval", "60")
    assert refused.returncode == cli_client.EXIT_REFUSED
    assert "line 2" in refused.stderr and "Traceback" not in refused.stderr

    assert cli(base, "deploy", str(bad), "--interval", "60", "--config", "[1]").returncode == cli_client.EXIT_USAGE
    assert cli(base, "deploy", str(bad), "--interval", "60", "--config", "{x").returncode == cli_client.EXIT_USAGE
    assert cli(base, "deploy", str(tmp_path / "absent.py"), "--interval", "60").returncode == cli_client.EXIT_USAGE
    assert cli(base, "status").returncode == cli_client.EXIT_USAGE  # argparse: the ID is missing

    missing = cli(base, "status", "no-such-strategy")
    assert missing.returncode == cli_client.EXIT_NOT_FOUND and "not found" in missing.stderr
    assert cli(base, "run", "no-such-strategy", "--wait").returncode == cli_client.EXIT_NOT_FOUND

    wrong = cli(base, "list", EXECUTOR_API_TOKEN="not-the-token")
    assert wrong.returncode == cli_client.EXIT_AUTH and "EXECUTOR_API_TOKEN" in wrong.stderr
    down = cli(f"http://127.0.0.1:{free_port()}", "list")
    assert down.returncode == cli_client.EXIT_UNAVAILABLE and "cannot reach" in down.stderr

    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(8)\nRESULT = 1\n")
    assert cli(base, "deploy", str(slow), "--interval", "3600", "--id", "slow", "--stopped").returncode == 0
    timed_out = cli(base, "run", "slow", "--wait", "--timeout", "1")
    assert timed_out.returncode == cli_client.EXIT_TIMEOUT, timed_out.stdout + timed_out.stderr
    # The run above is still sleeping, so this request waits (one execution in flight per strategy),
    # and the next one joins it.
    requested = cli(base, "run", "slow")
    assert requested.returncode == 0 and "run requested for slow (request" in requested.stdout, requested.stdout
    joined = cli(base, "run", "slow")
    assert joined.returncode == 0, joined.stderr
    assert "already waiting to start: joined it" in joined.stdout and "asked 2 times" in joined.stdout, joined.stdout


def test_the_token_comes_from_the_data_directory_when_unset(serve: Running, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api-token").write_text(TOKEN + "\n")
    env = client_env(serve.base, DATA_DIR=str(data_dir))
    del env["EXECUTOR_API_TOKEN"]
    listed = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_logs_follow_prints_executions_as_they_end(serve: Running, tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text(STRATEGY)
    assert (
        cli(
            serve.base, "deploy", str(source), "--interval", "3600", "--config", '{"n": 7}', "--id", "f", "--stopped"
        ).returncode
        == 0
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "logs", "f", "--follow", "--json"],
        env=client_env(serve.base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[dict[str, object]] = []
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        for _ in range(2):
            assert cli(serve.base, "run", "f", "--wait").returncode == 0
            deadline = time.monotonic() + 30
            while len(seen) < _ + 1 and time.monotonic() < deadline:
                if selector.select(timeout=1):
                    seen.append(json.loads(follower.stdout.readline()))  # type: ignore[union-attr]
        assert [execution["status"] for execution in seen] == ["succeeded", "succeeded"]
        assert all("n = 7" in str(execution["output"]) for execution in seen)
        assert len({execution["execution_id"] for execution in seen}) == 2
    finally:
        follower.terminate()
        follower.wait(10)
