"""Prometheus metrics of one process: its replica (executions, slots, passes), its database calls, its sandbox.

Every process serves its own `GET /metrics` (the API's port in `serve`, `WORKER_HEALTH_PORT` for a
`worker`); Prometheus scrapes each replica separately, and the `replica` label ties a series to the
`replicas` table and to the log lines of that replica. No strategy or user id is ever a label: the
number of series stays fixed however many strategies there are.

Metrics are process-wide by nature (one registry per process, like the process's own CPU time), so
the metric objects live here and the instrumented code calls one small function or method per event.
When `PROMETHEUS_MULTIPROC_DIR` is set (several processes behind one port, e.g. an API run under a
process manager), prometheus-client keeps the values in files there and `render` merges them.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "strategy_executor"

# The `_created` series double the output and no dashboard here reads them.
disable_created_metrics()
REGISTRY = CollectorRegistry()
if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    # A process that ends takes its live gauges (slots, busy slots, database up) with it; its
    # counters and histograms stay in the directory, so totals never go backwards.
    atexit.register(lambda: _multiprocess.mark_process_dead(os.getpid()))  # type: ignore[no-untyped-call]
else:
    # Per-process figures (resident memory, CPU, open descriptors) of the replica itself; in
    # multi-process mode they would describe only the process that happens to answer the scrape.
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)

# Outcomes are the execution statuses a replica records (see reconciler.outcome), plus `lost` when
# this replica rescues another replica's execution.
EXECUTIONS = Counter(
    f"{PREFIX}_executions", "Executions that ended, by outcome", ["replica", "outcome"], registry=REGISTRY
)
EXECUTION_DURATION = Histogram(
    f"{PREFIX}_execution_duration_seconds",
    "Wall time of an execution in the sandbox (fork to outcome)",
    ["replica"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
SCHEDULE_LAG = Histogram(
    f"{PREFIX}_schedule_lag_seconds",
    "From a scheduled tick to its claim, both by the database clock (scheduled executions only)",
    ["replica"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
SLOTS = Gauge(
    f"{PREFIX}_slots", "Execution slots of the replica", ["replica"], registry=REGISTRY, multiprocess_mode="livesum"
)
BUSY_SLOTS = Gauge(
    f"{PREFIX}_busy_slots",
    "Slots holding a running sandboxed process",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CLAIMS_PER_PASS = Histogram(
    f"{PREFIX}_claims_per_pass",
    "Executions claimed by one claim statement",
    ["replica"],
    buckets=(0, 1, 2, 3, 5, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_pass_duration_seconds",
    "Time of one reconcile pass (read specs, decide, write status)",
    ["replica"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
LOST_RESCUED = Counter(
    f"{PREFIX}_lost_executions_rescued",
    "Executions of dead replicas this replica recorded as lost",
    ["replica"],
    registry=REGISTRY,
)
DATABASE_UP = Gauge(
    f"{PREFIX}_database_up",
    "1 while the replica reaches the database, 0 while it retries",
    ["replica"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
DATABASE_ERRORS = Counter(
    f"{PREFIX}_database_errors",
    "Database errors at the storage boundary, by kind (unavailable, error, ...)",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("unavailable", "error"):
    DATABASE_ERRORS.labels(_kind).inc(0)  # both series exist from the start: rate() reads 0, not "no data"
DATABASE_RETRIES = Counter(
    f"{PREFIX}_database_retries",
    "Database operations retried after a transient error (each retry counts once)",
    registry=REGISTRY,
)
SANDBOX_START = Histogram(
    f"{PREFIX}_sandbox_start_seconds",
    "Time to start the sandbox zygote (pandas and numpy imported, confinement set up)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 120),
    registry=REGISTRY,
)
SANDBOX_LAYER = Gauge(
    f"{PREFIX}_sandbox_layer_active",
    "1 when the sandbox isolation layer is active on this host, 0 when it is not",
    ["layer"],
    registry=REGISTRY,
    multiprocess_mode="livemin",
)


class ClaimTimes(Protocol):
    # Read-only (properties), so frozen dataclasses such as the replica's Claim match it.
    @property
    def trigger(self) -> str: ...
    @property
    def scheduled_for(self) -> datetime: ...
    @property
    def claimed_at(self) -> datetime: ...


class ReplicaMetrics:
    """One replica's series, bound to its id once so each hook in the loop is a single call."""

    def __init__(self, replica_id: str, slots: int) -> None:
        self.replica_id = replica_id
        self._duration = EXECUTION_DURATION.labels(replica_id)
        self._lag = SCHEDULE_LAG.labels(replica_id)
        self._busy = BUSY_SLOTS.labels(replica_id)
        self._claims = CLAIMS_PER_PASS.labels(replica_id)
        self._reconcile = RECONCILE_DURATION.labels(replica_id)
        self._lost = LOST_RESCUED.labels(replica_id)
        self._database = DATABASE_UP.labels(replica_id)
        self._up: bool | None = None  # what the database gauge says (None: not written yet)
        SLOTS.labels(replica_id).set(slots)
        self._busy.set(0)
        self._lost.inc(0)
        # Each outcome's child bound once: a `labels()` lookup per execution was a dozen calls.
        self._executions: dict[str, Counter] = {}
        for outcome in ("succeeded", "failed", "timed_out", "memory_exceeded", "interrupted", "lost"):
            # Present from the start, so a rate() over a fresh replica is 0, not "no data".
            self._executions[outcome] = EXECUTIONS.labels(replica_id, outcome)
            self._executions[outcome].inc(0)

    def claimed(self, claims: Sequence[ClaimTimes]) -> None:
        """One claim statement took these executions; the scheduled ones' lag, by the database's clock."""
        self._claims.observe(len(claims))
        for claim in claims:
            if claim.trigger == "schedule":
                self._lag.observe(max(0.0, (claim.claimed_at - claim.scheduled_for).total_seconds()))

    def busy(self, running: int) -> None:
        self._busy.set(running)

    def finished(self, outcome: str, duration: float | None) -> None:
        counter = self._executions.get(outcome)
        if counter is None:
            counter = self._executions[outcome] = EXECUTIONS.labels(self.replica_id, outcome)
        counter.inc()
        if duration is not None:
            self._duration.observe(duration)

    def lost(self, count: int) -> None:
        if count:
            self._lost.inc(count)
            self._executions["lost"].inc(count)

    def database(self, *, up: bool) -> None:
        # Reported after every claim and outcome batch: the gauge is written only when it changes.
        if up is not self._up:
            self._up = up
            self._database.set(1 if up else 0)

    @contextmanager
    def reconcile_pass(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._reconcile.observe(time.perf_counter() - start)


def database_error(kind: str) -> None:
    DATABASE_ERRORS.labels(kind).inc()


def database_retry(operation: str) -> None:
    # The operation is named in the retry's log line; as a label it would be an open-ended set.
    DATABASE_RETRIES.inc()


def sandbox_started(seconds: float, layers: Mapping[str, bool]) -> None:
    SANDBOX_START.observe(seconds)
    for layer, active in layers.items():
        SANDBOX_LAYER.labels(layer).set(1 if active else 0)


def render() -> bytes:
    """The exposition text of this process (merged over all processes in multi-process mode)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def endpoint(request: Request) -> Response:
    """`GET /metrics`, unauthenticated like /health: series carry no strategy, user or secret."""
    return Response(render(), media_type=CONTENT_TYPE)
