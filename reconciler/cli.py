"""`strategy-executor` command line: serve, worker, migrate, generate-key, rotate-keys, openapi, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from reconciler import cli_client
from reconciler.settings import SettingsError, load_settings

log = logging.getLogger("strategy-executor")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="strategy-executor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the API and a replica (embedded PostgreSQL when DATABASE_URL is unset)")
    commands.add_parser("worker", help="run a reconciler replica alone")
    commands.add_parser("migrate", help="upgrade the database schema and exit")
    commands.add_parser("generate-key", help="print a new ENCRYPTION_KEY")
    commands.add_parser("rotate-keys", help="re-encrypt every stored credential with the first ENCRYPTION_KEY")
    token = commands.add_parser("token", help="print a tenant JWT for a user (for the tenant API and the dashboard)")
    token.add_argument("--user", required=True, help="the user id, the token's 'sub'")
    token.add_argument("--ttl", type=int, default=30 * 86_400, help="seconds until it expires (default: 30 days)")
    openapi = commands.add_parser("openapi", help="print the OpenAPI document (no server or database needed)")
    openapi.add_argument("-o", "--output", type=Path, help="write it to this file instead of standard output")
    cli_client.register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "client_command", None) is not None:
        return cli_client.run(args)  # drives a running service over HTTP: no settings, no database

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


def _run(command: str, settings: object) -> int:
    from reconciler import service
    from reconciler.settings import Settings

    assert isinstance(settings, Settings)
    if command == "migrate":
        runtime = service.prepare(settings, with_api=False)
        print(f"database schema is up to date ({'embedded' if runtime.embedded else 'DATABASE_URL'})")
        return 0
    if command == "rotate-keys":
        runtime = service.prepare(settings, with_api=False)
        count = asyncio.run(service.rotate_keys(runtime))
        print(f"re-encrypted {count} credential rows with key {service.current_key_id(runtime)}")
        return 0
    with_api = command == "serve"
    runtime = service.prepare(settings, with_api=with_api)
    try:
        asyncio.run(service.run(runtime, with_api=with_api))
    finally:
        if runtime.embedded is not None and runtime.embedded.started_here:
            runtime.embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
