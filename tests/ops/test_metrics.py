"""GET /metrics of a real service: served where the issue says, and moving when executions happen."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from reconciler import metrics
from tests.e2e.harness import service_env
from tests.ops.conftest import Running, names, samples, start

pytestmark = pytest.mark.slow


def replica_families() -> set[str]:
    """The exposition names of every metric this project defines (counters get their _total)."""
    exposed = set()
    for collector in (
        metrics.EXECUTIONS,
        metrics.EXECUTION_DURATION,
        metrics.SCHEDULE_LAG,
        metrics.SLOTS,
        metrics.BUSY_SLOTS,
        metrics.CLAIMS_PER_PASS,
        metrics.RECONCILE_DURATION,
        metrics.LOST_RESCUED,
        metrics.DATABASE_UP,
    ):
        for family in collector.describe():
            exposed.add(
                family.name + ("_total" if family.type == "counter" else "_count" if family.type == "histogram" else "")
            )
    return exposed


def test_metrics_are_public_and_list_every_replica_series(serve: Running) -> None:
    found = samples(serve.base)  # no Authorization header: public, like /health
    assert "process_resident_memory_bytes" in names(found)
    # The API itself still refuses unauthenticated requests elsewhere.
    assert httpx.get(f"{serve.base}/strategies", timeout=10).status_code == 401


def test_a_worker_serves_metrics_on_its_health_port(database_url: str, tmp_path: Path) -> None:
    worker = start("worker", service_env(database_url), tmp_path, "worker", port_variable="WORKER_HEALTH_PORT")
    try:
        found = samples(worker.base)
        assert "process_resident_memory_bytes" in names(found)
    finally:
        worker.service.terminate()
