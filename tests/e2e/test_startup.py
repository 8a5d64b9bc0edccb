"""Start-up against a database that is not there yet, or a URL that cannot be right, as real processes."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reconciler.embedded import EmbeddedPostgres
from tests.e2e.harness import Service, connect, service_env, wait_for
from tests.e2e.test_cli import cli

pytestmark = pytest.mark.slow


@pytest.fixture
def later_server() -> Iterator[EmbeddedPostgres]:
    """A server the test starts when it chooses (initialised, not running)."""
    root = Path(tempfile.mkdtemp(prefix="se-startup-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(data_dir=root / "cluster", fast_unsafe=True)
    server.start()
    server.stop()
    try:
        yield server
    finally:
        server.stop()


def test_worker_waits_for_the_database_and_starts_when_it_comes(later_server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = later_server.url()
    worker = Service("worker", service_env(url), tmp_path, "w0")
    try:
        time.sleep(6)  # several attempts, backing off
        assert worker.alive(), worker.log()
        log = worker.log()
        assert "Traceback" not in log
        waiting = [line for line in log.splitlines() if "unavailable" in line]
        assert len(waiting) == 1, log  # one line for the whole wait, not one per attempt
        later_server.start()
        with connect(url) as conn:
            wait_for(lambda: registered(conn), 60, "the worker to migrate and register")
        assert "database reachable again after an outage of" in worker.log()
        assert worker.terminate() == 0
    finally:
        worker.stop()


def registered(conn: psycopg.Connection) -> bool:
    if conn.execute("SELECT to_regclass('replicas')").fetchone()[0] is None:
        return False  # not migrated yet
    return bool(conn.execute("SELECT count(*) FROM replicas").fetchone()[0] == 1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user@localhost/db", "scheme 'mysql'"),
        ("postgresql://user:pw@no-such-host.invalid/db", "unknown host"),
    ],
)
def test_a_url_that_cannot_be_right_stops_with_one_line(url: str, expected: str) -> None:
    started = time.monotonic()
    result = cli("migrate", env=service_env(url))
    assert result.returncode == 1
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert time.monotonic() - started < 30  # at once: no waiting for what cannot come


def test_a_missing_database_stops_with_one_line(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    missing = make_url(database_url).set(database="no_such_db").render_as_string(hide_password=False)
    result = cli("migrate", env=service_env(missing))
    assert result.returncode == 1
    assert 'database "no_such_db" does not exist' in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
