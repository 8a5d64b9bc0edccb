"""Real service processes for end-to-end tests: `strategy-executor worker` / `serve` as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from reconciler.crypto import generate_key
from reconciler.storage.db import libpq_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(database_url: str | None, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "TEST_DATABASE_URL"))}
    env.update(
        {
            "PYTHONPATH": str(PROJECT_ROOT),
            "EXECUTOR_API_TOKEN": TOKEN,
            "ENCRYPTION_KEY": ENCRYPTION_KEY,
            "LOG_LEVEL": "INFO",
            "LEASE_SECONDS": "4",
            "POLL_INTERVAL_SECONDS": "1",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "MAX_WALL_TIME_SECONDS": "10",
        }
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


ENCRYPTION_KEY = generate_key("e2e")


class Service:
    """One `strategy-executor <command>` process, its log in a file the test can show on failure."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", command],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """kill -9 of the replica process alone (its sandbox zygote must notice by itself)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def deploy_sql(conn: psycopg.Connection, strategy_id: str, code: str, interval: int, **spec: Any) -> None:
    """Write desired state the way the API does (the API itself has its own tests)."""
    conn.execute(
        "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, desired_state, exchange) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'paper')",
        (strategy_id, spec.get("user_id", "u1"), strategy_id, code, interval, spec.get("desired_state", "running")),
    )


def connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(libpq_url(database_url), autocommit=True)
