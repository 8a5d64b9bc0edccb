"""The composition root: resolve the database, migrate, and run a replica with or without the API.

`serve` runs the API and one reconciler replica in one process and event loop; `worker` runs a
replica alone, so replicas scale separately from the API. Both drain on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shlex
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import uvicorn
from pydantic import SecretStr

from reconciler.alerts import WebhookSender
from reconciler.crypto import CredentialCipher, Credentials, generate_key
from reconciler.embedded import EmbeddedPostgres, default_data_dir
from reconciler.exchange.broker import BrokerFactory
from reconciler.logging_setup import redact_settings
from reconciler.loop import Replica, SandboxRunner
from reconciler.policy.cache import CompiledCache
from reconciler.policy.pool import CompileLimits, CompilePool
from reconciler.sandbox import Sandbox, SandboxLimits, harden_replica_process
from reconciler.secrets_file import load_or_create, new_api_token
from reconciler.settings import Settings
from reconciler.storage.alert_store import AlertStore
from reconciler.storage.api_store import Store
from reconciler.storage.credentials import check_key_ids, rotate
from reconciler.storage.db import Database, SessionLimits, create_engine
from reconciler.storage.exchange_store import ExchangeStore
from reconciler.storage.migrate import migrate
from reconciler.storage.outage import wait_for_database
from reconciler.webhook_secrets import seal_secret

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Start-up cannot go on; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class Runtime:
    settings: Settings  # with the secrets an embedded installation generated filled in
    database_url: str
    embedded: EmbeddedPostgres | None


def prepare(settings: Settings, *, with_api: bool) -> Runtime:
    """Resolve the database (starting the embedded one if DATABASE_URL is unset), secrets, schema."""
    if settings.database_url is None:
        data_dir = settings.data_dir or default_data_dir()
        embedded = EmbeddedPostgres(data_dir=data_dir, bindir=settings.postgres_bin_dir)
        url = embedded.start()
        try:
            log.info("embedded PostgreSQL: data in %s", embedded.pgdata)
            log.info("connect with: %s", embedded.psql_command())
            settings = _embedded_secrets(settings, data_dir, with_api=with_api)
            return _prepare_database(settings, url, embedded, with_api=with_api)
        except BaseException:
            # Start-up failed after this process started the server (a malformed key, a failed
            # migration, Ctrl-C): stop it, or it would outlive us holding the data directory.
            stop_embedded(embedded)
            raise
    return _prepare_database(settings, settings.database_url.get_secret_value(), None, with_api=with_api)


def _prepare_database(settings: Settings, url: str, embedded: EmbeddedPostgres | None, *, with_api: bool) -> Runtime:
    if embedded is None:
        if with_api and settings.executor_api_token is None:
            raise StartupError("EXECUTOR_API_TOKEN is not set: every API route but /health needs it")
        if settings.encryption_key is None:
            raise StartupError("ENCRYPTION_KEY is not set; generate one with `strategy-executor generate-key`")
    redact_settings(settings)  # from here on, no log line can show the token, the keys or the password
    CredentialCipher.from_settings(settings)  # a malformed key stops start-up here, not mid-run
    if with_api:
        check_jwt_secret(settings)
    if embedded is None:
        # A database that is not up yet (a container starting beside us, a restart) is waited for,
        # with one log line a minute; a URL that cannot be right stops start-up with one line.
        wait_for_database(url, log)
    migrate(url)
    return Runtime(settings=settings, database_url=url, embedded=embedded)


def stop_embedded(embedded: EmbeddedPostgres | None) -> None:
    """Stop the embedded server if this process started it (a reused one belongs to its starter)."""
    if embedded is not None and embedded.started_here:
        embedded.stop()


def _embedded_secrets(settings: Settings, data_dir: Path, *, with_api: bool) -> Settings:
    updates: dict[str, SecretStr] = {}
    if settings.executor_api_token is None:
        token, created = load_or_create(data_dir / "api-token", new_api_token)
        updates["executor_api_token"] = SecretStr(token)
        if with_api:
            # Printed once, on the console of whoever started the service; never logged again.
            path = shlex.quote(str(data_dir / "api-token"))
            print(f"API token ({'generated' if created else 'stored'} in {path}): {token}")
            print(f"  in a shell: TOKEN=$(cat {path})   (or: TOKEN=$(strategy-executor api-token))")
    if settings.jwt_secret is None and with_api:
        secret, created = load_or_create(data_dir / JWT_SECRET_FILE, new_jwt_secret)
        updates["jwt_secret"] = SecretStr(secret)
        if created:
            log.info("generated a JWT secret for the tenant API in %s", data_dir / JWT_SECRET_FILE)
    if settings.encryption_key is None:
        key, created = load_or_create(data_dir / "encryption-key", generate_key)
        updates["encryption_key"] = SecretStr(key)
        if created:
            log.info("generated an encryption key in %s", data_dir / "encryption-key")
    return settings.model_copy(update=updates) if updates else settings


JWT_SECRET_FILE = "jwt-secret"


def new_jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def check_jwt_secret(settings: Settings) -> None:
    """A tenant JWT must never be forgeable by whoever holds the executor token, nor brute-forced."""
    if settings.jwt_secret is None:
        log.warning("JWT_SECRET is not set: the tenant API and the dashboard refuse every request")
        return
    from api.tenant_auth import MIN_SECRET_BYTES

    secret = settings.jwt_secret.get_secret_value()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise StartupError(f"JWT_SECRET is too short: use at least {MIN_SECRET_BYTES} random bytes")
    token = settings.executor_api_token
    if token is not None and token.get_secret_value() == secret:
        raise StartupError("JWT_SECRET must differ from EXECUTOR_API_TOKEN (the two must not open each other)")


def mint_token(settings: Settings, user_id: str, ttl_seconds: int) -> str:
    """`strategy-executor token`: a tenant JWT for `user_id`, under JWT_SECRET (or, with the embedded
    database, the secret `serve` keeps in the data directory, created here if `serve` has not run yet)."""
    from api.tenant_auth import TenantAuth

    if settings.jwt_secret is not None:
        check_jwt_secret(settings)
        secret = settings.jwt_secret.get_secret_value()
    elif settings.database_url is None:
        secret, _ = load_or_create((settings.data_dir or default_data_dir()) / JWT_SECRET_FILE, new_jwt_secret)
    else:
        raise StartupError("JWT_SECRET is not set: the service that checks the token needs the same one")
    try:
        return TenantAuth(secret).mint(user_id, ttl_seconds=ttl_seconds)
    except ValueError as exc:
        raise StartupError(str(exc)) from None


async def rotate_keys(runtime: Runtime) -> int:
    engine = create_engine(runtime.database_url, pool_size=1)
    try:
        return await rotate(engine, CredentialCipher.from_settings(runtime.settings))
    finally:
        await engine.dispose()


def current_key_id(runtime: Runtime) -> str:
    return CredentialCipher.from_settings(runtime.settings).current_key_id


class ManagedSandbox(SandboxRunner, Protocol):
    """The sandbox as the composition root holds it: a runner it starts before the replica and closes after."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


# Builds the replica's sandbox from the settings and the replica's compile cache.
SandboxFactory = Callable[[Settings, CompiledCache], ManagedSandbox]


def real_sandbox(settings: Settings, compiled: CompiledCache) -> Sandbox:
    return Sandbox(SandboxLimits.from_settings(settings), compiled)


async def run(
    runtime: Runtime,
    *,
    with_api: bool,
    sandbox_factory: SandboxFactory = real_sandbox,
    listening: socket.socket | None = None,
) -> None:
    """Run a replica (and the API) until SIGTERM/SIGINT.

    `sandbox_factory` is a seam for the database benchmark alone, which passes a runner that returns
    at once from a process of its own (tests/benchmarks). No setting or environment variable reaches
    it: the CLI, the only entry point of the product, always calls this with the real sandbox.
    """
    settings = runtime.settings
    engine = create_engine(
        runtime.database_url,
        pool_size=settings.db_pool_size,
        pre_ping=False,
        # The pid tells an operator (and the fault tests) which replica a backend in pg_stat_activity serves.
        application_name=f"strategy-executor replica {os.getpid()}",
        limits=SessionLimits.for_replica(settings.lease_seconds),
        generic_plans=True,
        lanes=3,  # kept by the claims, the outcome batches and the closing reads (`Database.run_wire`)
    )
    api_engine = None
    # This process holds decrypted credentials while executions run: make its /proc files (environ,
    # mem) unreadable to same-uid processes, in case the sandbox ever runs as our own uid.
    harden_replica_process()
    # One compile for every use of a source in this replica: the reconcile pass's verdict and the
    # code objects its executions run; both off the event loop, in worker processes.
    compiled = CompiledCache(CompilePool(CompileLimits.from_settings(settings)), settings.compile_cache_bytes)
    sandbox = sandbox_factory(settings, compiled)
    await sandbox.start()  # logs a warning for each isolation layer this host does not allow
    cipher = CredentialCipher.from_settings(settings)
    # Wrong key material is found now, not in the middle of someone's run.
    await check_key_ids(engine, cipher)
    brokers = BrokerFactory(settings, ExchangeStore(engine), cipher)
    db = Database(engine)
    replica = Replica(
        settings,
        db,
        sandbox,
        check_code=compiled.verdict,
        brokers=brokers,
        database_url=runtime.database_url,
    )
    replica.alert_sender = WebhookSender(settings, AlertStore(engine, replica_id=replica.replica_id), cipher)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_stop_signal, stop, replica, settings.shutdown_grace_seconds)

    server = None
    tasks = [asyncio.create_task(replica.run(stop), name="replica")]
    if with_api:
        api_engine = Store.engine_for(runtime.database_url, pool_size=settings.db_pool_size)
        server = _api_server(settings, Store(api_engine), cipher, replica)
    elif settings.worker_health_port is not None:
        from reconciler.health import health_app

        server = _Server(
            uvicorn.Config(
                health_app(replica.health), host=settings.host, port=settings.worker_health_port, log_config=None
            )
        )
    if server is not None:
        # On the socket bound before start-up (`listen`) when there is one; else uvicorn binds.
        sockets = [listening] if listening is not None else None
        tasks.append(asyncio.create_task(server.serve(sockets=sockets), name="http"))
    try:
        await stop.wait()
        log.info("stopping: draining executions")
        await tasks[0]  # the replica drains within the grace period
    finally:
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await brokers.aclose()
        await db.close_lanes()  # the connections the claims and the outcomes kept
        await sandbox.close()
        await engine.dispose()
        if api_engine is not None:
            await api_engine.dispose()


def _on_stop_signal(stop: asyncio.Event, replica: Replica, grace: float) -> None:
    """The first Ctrl-C (or SIGTERM) drains and says for how long; the second stops the executions now."""
    if not stop.is_set():
        stop.set()
        # Counted as the drain counts, not by the slots (/health's in_flight): executions claimed ahead
        # and waiting for a slot are waited for too, and may run within the grace period.
        running, waiting = replica.drain_counts()
        log.warning(
            "stopping: %d running, %d claimed and waiting for a slot; they may take up to %.0f s to finish"
            " (SHUTDOWN_GRACE_SECONDS); press Ctrl-C again to stop them now (they are recorded interrupted)",
            running,
            waiting,
            grace,
        )
    elif not replica.force_stop.is_set():
        log.warning("stopping now: interrupting the running executions")
        replica.force_stop.set()


def listen(host: str, port: int, setting: str) -> socket.socket:
    """Bind the address the HTTP server will listen on, before the database or the replica start.

    A port another service holds, or a HOST that is no address of this machine, then stops start-up
    at once with one line naming the setting to change, instead of uvicorn's bare error after the
    embedded PostgreSQL, the migrations and the replica's registration. The socket is handed to
    uvicorn as it is, so nothing can take the port in between."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: HOST {host!r} is not an address here ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {where}: the address is in use (another service running there?);"
                f" set {setting} to a free port"
            ) from None
        raise StartupError(f"cannot listen on {where}: {exc.strerror}; check HOST and {setting}") from None
    return sock


def _api_server(settings: Settings, store: Store, cipher: CredentialCipher, replica: Replica) -> uvicorn.Server:
    from api.app import create_app

    def seal(strategy_id: str, api_key: str, api_secret: str) -> tuple[str, bytes]:
        sealed = cipher.encrypt(Credentials(api_key=api_key, api_secret=api_secret), strategy_id=strategy_id)
        return sealed.key_id, sealed.ciphertext

    def seal_webhook_secret(webhook_id: uuid.UUID, secret: str) -> tuple[str, bytes]:
        sealed = seal_secret(cipher, webhook_id, secret)
        return sealed.key_id, sealed.ciphertext

    app = create_app(
        settings, store, seal_credentials=seal, replica=replica.health, seal_webhook_secret=seal_webhook_secret
    )
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, lifespan="on")
    return _Server(config)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service drains the replica first, then stops HTTP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if sockets and self.started:  # uvicorn says where it listens only when it binds the socket itself
            host, port = sockets[0].getsockname()[:2]
            log.info("listening on http://%s:%s (Ctrl-C to stop)", f"[{host}]" if ":" in host else host, port)
