"""The service as a newcomer runs it: `strategy-executor serve`, over HTTP, through the real sandbox."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import PROJECT_ROOT, TOKEN, Service, free_port, service_env, wait_for

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start_serve(env: dict[str, str], tmp_path: Path, name: str) -> tuple[Service, str]:
    port = free_port()
    env = {**env, "PORT": str(port)}
    service = Service("serve", env, tmp_path, name)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not service.alive():
            raise AssertionError(f"serve exited:\n{service.log()[-3000:]}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 90, "the service to become healthy", interval=0.25)
    return service, base


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="se-serve-"))
    root.chmod(0o711)
    yield root / "data"


def test_serve_deploys_runs_and_reports_through_http(database_url: str, tmp_path: Path) -> None:
    service, base = start_serve(service_env(database_url), tmp_path, "serve")
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            code = (
                "STATE['runs'] = STATE.get('runs', 0) + 1\n"
                "print('run', STATE['runs'])\n"
                "RESULT = {'runs': STATE['runs']}\n"
            )
            deployed = client.post(
                "/strategies/deploy",
                json={"strategy_id": "hello", "user_id": "u1", "code": code, "execution_interval": 3600},
            )
            assert deployed.status_code == 201, deployed.text
            # The first tick runs at once; a manual run with ?wait returns the execution it caused.
            ran = client.post("/strategies/hello/execute", params={"wait": 20})
            assert ran.status_code == 200, ran.text
            execution = ran.json()
            assert execution["status"] == "succeeded", execution
            assert execution["result"]["runs"] >= 1
            assert "run " in execution["output"]
            status = client.get("/strategies/hello/status").json()
            assert status["status"] == "running"
            assert status["stats"]["successful_executions"] >= 1
            assert status["observed_generation"] == status["generation"] == 1
            # A manual run of a stopped strategy starts within a second of the request (slots are free).
            quiet = {"strategy_id": "quiet", "user_id": "u1", "code": "RESULT = 1", "execution_interval": 60}
            assert client.post("/strategies/deploy", json={**quiet, "auto_start": False}).status_code == 201
            manual = client.post("/strategies/quiet/execute", params={"wait": 20}).json()
            assert manual["trigger"] == "manual" and manual["status"] == "succeeded"
            requested, claimed = (datetime.fromisoformat(manual[k]) for k in ("scheduled_for", "claimed_at"))
            assert (claimed - requested).total_seconds() < 1.0
            health = client.get("/health").json()
            assert health["status"] == "healthy" and health["scheduler_running"] is True
    finally:
        assert service.terminate() == 0, service.log()[-3000:]


def test_embedded_default_starts_migrates_and_restarts_on_the_same_data(data_dir: Path, tmp_path: Path) -> None:
    env = service_env(None, data_dir=data_dir)
    for name in ("EXECUTOR_API_TOKEN", "ENCRYPTION_KEY"):
        env.pop(name)
    service, base = start_serve(env, tmp_path, "embedded1")
    try:
        token = (data_dir / "api-token").read_text().strip()
        assert f"API token (generated in {data_dir / 'api-token'}): {token}" in service.log()
        # The printed command works as printed, with the embedded server's own psql (no client installed).
        lines = service.log().splitlines()
        (printed,) = [line.split("connect with: ", 1)[1] for line in lines if "connect with: " in line]
        argv = shlex.split(printed)
        assert Path(argv[0]).is_absolute() and argv[1] == "-h"
        inspected = subprocess.run([*argv, "-Atc", "SELECT count(*) FROM strategies"], capture_output=True, text=True)
        assert (inspected.returncode, inspected.stdout.strip()) == (0, "0"), inspected.stderr
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.post(
            f"{base}/strategies/deploy",
            headers=headers,
            json={"strategy_id": "kept", "user_id": "u1", "code": "RESULT = 1", "execution_interval": 60},
        )
        assert response.status_code == 201, response.text
        assert httpx.get(f"{base}/strategies/kept/status").status_code == 401
    finally:
        assert service.terminate() == 0, service.log()[-3000:]
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()  # the server it started was stopped

    service, base = start_serve(env, tmp_path, "embedded2")
    try:
        assert (data_dir / "api-token").read_text().strip() == token
        status = httpx.get(f"{base}/strategies/kept/status", headers=headers)
        assert status.status_code == 200
        assert status.json()["strategy_id"] == "kept"
    finally:
        assert service.terminate() == 0, service.log()[-3000:]


def test_bad_setting_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "PORT": "abc", "MAX_MEMORY_MB": "-1"}
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "serve"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "MAX_MEMORY_MB" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_deletion_waiting_for_a_run_in_flight_finishes_when_the_run_does(database_url: str, tmp_path: Path) -> None:
    """A deletion requested while an execution runs waits for it, then is finalized by the replica
    that records its outcome: seconds after the run ends, not at the next full resync (set here to
    ten minutes, so only the completion can have triggered it)."""
    env = service_env(database_url, resync_interval_seconds=600)
    service, base = start_serve(env, tmp_path, "serve")
    try:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            code = "import time\ntime.sleep(3)\nRESULT = 1\n"
            body = {"strategy_id": "slow", "user_id": "u1", "code": code, "execution_interval": 3600}
            assert client.post("/strategies/deploy", json=body).status_code == 201

            def running() -> bool:
                items = client.get("/strategies/slow/executions").json()["items"]
                return bool(items) and items[0]["status"] == "running"

            wait_for(running, 30, "the first tick to be running")
            assert client.delete("/strategies/slow").status_code == 202
            asked = time.monotonic()
            wait_for(lambda: client.get("/strategies/slow/status").status_code == 404, 30, "the deletion to finish")
            # The run had up to 3 s left; a deletion left to the resync would take ten minutes.
            assert time.monotonic() - asked < 15
    finally:
        assert service.terminate() == 0, service.log()[-3000:]
