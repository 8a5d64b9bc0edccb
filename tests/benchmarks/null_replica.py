"""A replica whose executions return at once: the database side of a replica, alone (bench_scale.py).

Benchmark-only, and deliberately outside the product's packages: the service's one entry point (the
CLI) always builds the real sandbox, and no setting or environment variable selects this runner
(tests/unit/test_null_sandbox.py checks both). The benchmark starts this module as a process:

    python -m tests.benchmarks.null_replica SAMPLES.json [--before]   # DATABASE_URL, ENCRYPTION_KEY set

It is a `strategy-executor worker` in every respect (the same settings, the same `service.run`, the
same claims, outcome records, leases, NOTIFY, broker sessions and risk guard) except the sandbox: an
execution's outcome is what a real empty run reports (succeeded, no output, no RESULT, STATE as it
was), so the claim and record statements and everything around them are all that is measured.

On SIGTERM it drains like a worker and writes SAMPLES.json: for each statement (named as in
reconciler.storage.statements, timed in this process around the driver's execute, so a round trip
to the server is included: SQLAlchemy's statements by its events, the hot path's by `Wire.send`) and
for the claim and record transactions (BEGIN to COMMIT, the commit's WAL flush included), the
wall-clock time each ended at and how long it took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from sqlalchemy import TextClause, event
from sqlalchemy.engine import Engine

from reconciler import service
from reconciler.logging_setup import configure_logging
from reconciler.outcome import BrokerCall, ExecutionOutcome, ExecutionRequest
from reconciler.policy.cache import CompiledCache
from reconciler.sandbox import layers as sandbox_layers
from reconciler.settings import Settings, load_settings
from reconciler.storage import statements
from reconciler.storage.db import Wire
from reconciler.storage.replica_store import ReplicaStore

log = logging.getLogger("null_replica")


class NullSandbox:
    """An execution that returns at once with the outcome a real empty run reports."""

    def __init__(self, settings: Settings, compiled: CompiledCache) -> None:
        del settings, compiled  # nothing is compiled or limited: nothing runs

    @property
    def layers(self) -> dict[str, bool]:
        # Every isolation layer reported inactive, and the runner named: replicas.sandbox_layers and
        # /health show at a glance that this replica runs nothing.
        return {name: False for name in sandbox_layers.LAYER_NAMES} | {"benchmark_null_runner": True}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def interrupt_all(self) -> None:
        return None  # nothing ever runs long enough to interrupt

    async def run(self, request: ExecutionRequest, broker: BrokerCall | None = None) -> ExecutionOutcome:
        started = time.monotonic()
        # A real empty run reports STATE back unchanged (the child returns the dict it was given).
        return ExecutionOutcome(status="succeeded", duration=time.monotonic() - started, state=dict(request.state))


class Samples:
    """Durations by name, each with the wall-clock time it ended at (the benchmark keeps a window)."""

    def __init__(self) -> None:
        self.ended: dict[str, array[float]] = {}
        self.seconds: dict[str, array[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        if name not in self.ended:
            self.ended[name] = array("d")
            self.seconds[name] = array("d")
        self.ended[name].append(time.time())
        self.seconds[name].append(seconds)

    def dump(self, path: Path) -> None:
        data = {name: {"ended": list(self.ended[name]), "seconds": list(self.seconds[name])} for name in self.ended}
        path.write_text(json.dumps(data))


def _normalized(sql: str) -> str:
    """A statement's text without its parameter markers and whitespace, as written or as sent."""
    return re.sub(r"\s+|%\(\w+\)s|(?<!:):\w+", "", sql)


def _statement_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for module_name in ("replica", "exchange", "risk", "alerts"):
        module = __import__(f"{statements.__name__}.{module_name}", fromlist=["_"])
        for attribute, value in vars(module).items():
            if isinstance(value, TextClause):
                names[_normalized(value.text)] = f"{module_name}.{attribute}"
    return names


def instrument(samples: Samples) -> None:
    """Time every statement the replica sends and the claim and record transactions."""
    known = _statement_names()
    cache: dict[str, str] = {}

    def name_of(statement: str) -> str:
        name = cache.get(statement)
        if name is None:
            name = known.get(_normalized(statement)) or "other: " + " ".join(statement.split())[:60]
            cache[statement] = name
        return name

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("started", []).append(time.perf_counter())

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info["started"].pop()
        samples.add(name_of(statement), time.perf_counter() - started)

    # The hot path's statements go through `Wire.send`, past SQLAlchemy's events: timed one by one.
    send = Wire.send

    async def timed_send(self: Wire, *statements: Any, commit: bool = False) -> Any:
        results = []
        for statement, params in statements:
            started = time.perf_counter()
            [rows] = await send(self, (statement, params))
            samples.add(name_of(statement.text), time.perf_counter() - started)
            results.append(rows)
        if commit:
            await self.commit()
        return results

    Wire.send = timed_send  # type: ignore[method-assign]

    claim, complete_many = ReplicaStore.claim, ReplicaStore.complete_many

    async def timed_claim(self: ReplicaStore, slots: int, **options: Any) -> Any:
        started = time.perf_counter()
        claimed = await claim(self, slots, **options)
        samples.add("transaction: claim", time.perf_counter() - started)
        samples.add("claimed per transaction", float(len(claimed.claims)))
        return claimed

    async def timed_complete_many(self: ReplicaStore, outcomes: Any, **options: Any) -> Any:
        started = time.perf_counter()
        done = await complete_many(self, outcomes, **options)
        samples.add("transaction: record outcomes", time.perf_counter() - started)
        samples.add("recorded per transaction", float(len(outcomes)))
        return done

    ReplicaStore.claim = timed_claim  # type: ignore[method-assign,assignment]
    ReplicaStore.complete_many = timed_complete_many  # type: ignore[method-assign,assignment]


def main(argv: list[str]) -> int:
    before = "--before" in argv
    argv = [arg for arg in argv if arg != "--before"]
    if len(argv) != 1:
        print("usage: python -m tests.benchmarks.null_replica SAMPLES.json [--before]", file=sys.stderr)
        return 2
    if before:
        # The claim statements and the connection pool as they were before the scale benchmark's
        # changes (statements_before.py), for its before/after phases; the store reads the statements
        # from the module at each call, the service builds its engine with `create_engine`.
        from reconciler.storage.statements import replica as replica_queries
        from tests.benchmarks import statements_before

        replica_queries.CLAIM_SCHEDULED = statements_before.CLAIM_SCHEDULED
        replica_queries.NEXT_DUE = statements_before.NEXT_DUE
        service.create_engine = statements_before.create_engine_with_overflow
        ReplicaStore.claim = statements_before.claim  # type: ignore[method-assign]
    settings = load_settings()
    if settings.database_url is None:
        print("null_replica: DATABASE_URL is required (the benchmark's own server)", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    samples = Samples()
    instrument(samples)
    runtime = service.prepare(settings, with_api=False)
    try:
        asyncio.run(service.run(runtime, with_api=False, sandbox_factory=NullSandbox))
    finally:
        samples.dump(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
