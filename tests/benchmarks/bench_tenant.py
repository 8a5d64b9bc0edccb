"""Tenant benchmark: what the wallet-value record adds to a paper run, and how fast the tenant API and
the dashboard answer for a user with many bots.

Not part of the test run. Run it with:

    .venv/bin/python tests/benchmarks/bench_tenant.py [--bots 100] [--requests 200]

It starts its own durable embedded PostgreSQL (fsync on) and prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psycopg
from pydantic import SecretStr

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))

from api.app import create_app  # noqa: E402
from api.tenant_auth import TenantAuth  # noqa: E402
from reconciler.crypto import CredentialCipher, generate_key  # noqa: E402
from reconciler.embedded import EmbeddedPostgres  # noqa: E402
from reconciler.exchange.broker import BrokerFactory  # noqa: E402
from reconciler.exchange.feed import SimulatedFeed  # noqa: E402
from reconciler.settings import Settings  # noqa: E402
from reconciler.storage.api_store import Store  # noqa: E402
from reconciler.storage.db import create_engine, libpq_url  # noqa: E402
from reconciler.storage.exchange_store import ExchangeStore  # noqa: E402
from reconciler.storage.migrate import migrate  # noqa: E402

SECRET = "bench-tenant-secret-0123456789abcdefghij"


def seed(url: str, bots: int, runs: int) -> list[str]:
    ids = [uuid.uuid4().hex for _ in range(bots)]
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for n, bot in enumerate(ids):
            conn.execute(
                "INSERT INTO strategies (strategy_id, user_id, name, code, execution_interval) "
                "VALUES (%s, 'bench', %s, 'print(1)', 60)",
                (bot, f"bot-{n}"),
            )
            conn.execute(
                "INSERT INTO strategy_status (strategy_id, status, observed_generation, execution_count, "
                "successful_executions, avg_execution_time, state) VALUES (%s, 'running', 1, %s, %s, 0.05, "
                """'{"n": 1}')""",
                (bot, runs, runs),
            )
            conn.execute(
                "INSERT INTO executions (strategy_id, trigger, scheduled_for, generation, status, replica_id, "
                "started_at, finished_at, duration, output, wallet_value, wallet_currency) "
                "SELECT %s, 'schedule', now() - k * interval '1 minute', 1, 'succeeded', 'r', now(), "
                "now() - k * interval '1 minute', 0.05, 'run output', 21000 + k, 'USDT' "
                "FROM generate_series(1, %s) k",
                (bot, runs),
            )
    return ids


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    print(f"{name}: median {statistics.median(samples):.2f} ms, p95 {p95:.2f} ms ({len(samples)} samples)")


async def bench(url: str, bots: int, requests: int) -> None:
    ids = seed(url, bots, 20)
    engine = create_engine(url, pool_size=4)
    settings = Settings(executor_api_token=SecretStr("bench-token"), jwt_secret=SecretStr(SECRET))
    app = create_app(settings, Store(engine))
    jwt = TenantAuth(SECRET).mint("bench")
    headers = {"Authorization": f"Bearer {jwt}"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client:
            for _ in range(10):  # warm the pool and the template cache
                await client.get("/api/bot/deployments")
            report(
                f"GET /api/bot/deployments ({bots} bots, 20 recent runs each)",
                await timed(lambda: client.get("/api/bot/deployments?limit=200"), requests),
            )
            report(
                "GET /api/bot/deployments/{id} (20 runs, wallet history)",
                await timed(lambda: client.get(f"/api/bot/deployments/{ids[0]}"), requests),
            )
            client.cookies.set("se_session", jwt)
            report(f"dashboard GET / ({bots} bots, a chart each)", await timed(lambda: client.get("/"), requests))
            report("dashboard GET /bots/{id}", await timed(lambda: client.get(f"/bots/{ids[0]}"), requests))

        # The wallet-value record: a paper broker session opened and closed around a running execution
        # (as it closes, the risk guard values the wallet at the feed's prices and stores it).
        factory = BrokerFactory(
            Settings(), ExchangeStore(engine), CredentialCipher.from_key_string(generate_key("b")), feed=SimulatedFeed()
        )
        bot = ids[1]
        execution = uuid.uuid4()
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            # In flight, so its strategy names it (the database demands it: fk_executions_in_flight).
            conn.execute(
                "UPDATE strategy_status SET running_execution_id = %s WHERE strategy_id = %s", (execution, bot)
            )
            conn.execute(
                "INSERT INTO executions (execution_id, strategy_id, trigger, scheduled_for, generation, replica_id) "
                "VALUES (%s, %s, 'manual', now(), 1, 'bench')",
                (execution, bot),
            )

        async def paper_session() -> None:
            async with factory.session(strategy_id=bot, execution_id=str(execution), exchange="paper", config={}):
                pass

        await timed(paper_session, 20)
        report(
            "paper broker session open+close (the risk guard values the wallet and records it)",
            await timed(paper_session, requests),
        )
        await factory.aclose()
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="se-bench-tenant-"))
    root.chmod(0o711)
    server = EmbeddedPostgres(data_dir=root / "cluster")
    server.start()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; PostgreSQL durable (fsync on)")
    try:
        url = server.url("postgres")
        migrate(url)
        asyncio.run(bench(url, args.bots, args.requests))
    finally:
        server.stop()
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
