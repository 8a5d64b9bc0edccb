"""The operator commands: generate-key, migrate, rotate-keys, as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg

from reconciler.crypto import CredentialCipher, Credentials, Sealed, parse_keys
from tests.e2e.harness import PROJECT_ROOT, service_env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_key_prints_a_usable_key() -> None:
    result = cli("generate-key", env=service_env(None))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    ((key_id, material),) = parse_keys(key)
    assert len(material) == 32 and key.startswith(f"{key_id}:")
    assert cli("generate-key", env=service_env(None)).stdout.strip() != key  # a new one every time


def test_rotate_keys_reseals_every_credential_with_the_first_key(
    database_url: str, pg_conn: psycopg.Connection
) -> None:
    old_key = cli("generate-key", env=service_env(None)).stdout.strip()
    new_key = cli("generate-key", env=service_env(None)).stdout.strip()
    old = CredentialCipher.from_key_string(old_key)
    for strategy_id in ("a", "b"):
        pg_conn.execute(
            "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval, exchange) "
            "VALUES (%s, 'u', 'n', 'RESULT = 1', 60, 'coindcx')",
            (strategy_id,),
        )
        sealed = old.encrypt(Credentials(api_key=f"key-{strategy_id}", api_secret="s3cret"), strategy_id=strategy_id)
        pg_conn.execute(
            "INSERT INTO strategy_credentials (strategy_id, key_id, credentials) VALUES (%s, %s, %s)",
            (strategy_id, sealed.key_id, sealed.ciphertext),
        )

    result = cli("rotate-keys", env=service_env(database_url, encryption_key=f"{new_key},{old_key}"))
    assert result.returncode == 0, result.stderr
    new = CredentialCipher.from_key_string(new_key)
    assert f"re-encrypted 2 credential rows with key {new.current_key_id}" in result.stdout
    rows = pg_conn.execute("SELECT strategy_id, key_id, credentials FROM strategy_credentials ORDER BY 1").fetchall()
    for strategy_id, key_id, ciphertext in rows:
        assert key_id == new.current_key_id
        opened = new.decrypt(Sealed(key_id=key_id, ciphertext=bytes(ciphertext)), strategy_id=strategy_id)
        assert opened.api_secret == "s3cret"
    assert "s3cret" not in result.stdout + result.stderr


def test_a_malformed_encryption_key_stops_with_one_clear_line(database_url: str) -> None:
    result = cli("migrate", env=service_env(database_url, encryption_key="not-a-key"))
    assert result.returncode == 1
    assert "ENCRYPTION_KEY" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_stops_serve_before_anything_starts(tmp_path: Path) -> None:
    # Another service holds the port: one line naming PORT, before the embedded PostgreSQL, the
    # migrations or the replica start (uvicorn alone would fail only after all of them, and say
    # nothing about which setting to change).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = service_env(None, data_dir=tmp_path / "data", port=port, host="127.0.0.1")
        result = cli("serve", env=env)
    assert result.returncode == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr and "PORT" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "pgdata").exists()  # no database was started for a service that cannot listen


def test_a_host_that_is_no_address_stops_serve_with_one_line(tmp_path: Path) -> None:
    env = service_env(None, data_dir=tmp_path / "data", host="no-such-host.invalid")
    result = cli("serve", env=env)
    assert result.returncode == 1, result.stderr
    assert "HOST 'no-such-host.invalid'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "pgdata").exists()


def test_a_reader_that_goes_away_ends_a_command_quietly() -> None:
    # `strategy-executor openapi | head -c 1`, with the reader gone before the first write: the
    # status a tool killed by SIGPIPE has, and no traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "openapi"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == ""
