"""GET /metrics of a real service: served where the issue says, and moving when executions happen."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase

from reconciler import metrics
from tests.e2e.harness import service_env, wait_for
from tests.ops.conftest import AUTH, Running, names, samples, start, value

pytestmark = pytest.mark.slow

PREFIX = metrics.PREFIX


def defined_families() -> set[str]:
    """The exposition name of every series this project defines (counters with _total, histograms' _count)."""
    suffix = {"counter": "_total", "histogram": "_count", "gauge": ""}
    exposed = set()
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        for family in collector.describe():
            if family.name.startswith(PREFIX):
                exposed.add(family.name + suffix[family.type])
    return exposed


def test_metrics_are_public_and_list_every_series(serve: Running) -> None:
    found = samples(serve.base)  # no Authorization header: public, like /health
    missing = defined_families() - names(found)
    assert not missing, f"missing from /metrics: {sorted(missing)}"
    assert "process_resident_memory_bytes" in names(found)
    # The API itself still refuses unauthenticated requests elsewhere.
    assert httpx.get(f"{serve.base}/strategies", timeout=10).status_code == 401


def test_a_worker_serves_metrics_on_its_health_port(database_url: str, tmp_path: Path) -> None:
    worker = start("worker", service_env(database_url), tmp_path, "worker", port_variable="WORKER_HEALTH_PORT")
    try:
        found = samples(worker.base)
        missing = defined_families() - names(found)
        assert not missing, f"missing from the worker's /metrics: {sorted(missing)}"
        assert value(found, f"{PREFIX}_slots") == 5 and value(found, f"{PREFIX}_database_up") == 1
    finally:
        worker.service.terminate()


def test_metrics_move_when_executions_happen(serve: Running) -> None:
    before = samples(serve.base)
    replica = httpx.get(f"{serve.base}/health", timeout=10).json()["replica"]["replica_id"]
    assert value(before, f"{PREFIX}_slots", replica=replica) == 5
    assert value(before, f"{PREFIX}_sandbox_start_seconds_count") == 1
    assert value(before, f"{PREFIX}_sandbox_layer_active", layer="language_policy") == 1
    assert value(before, f"{PREFIX}_executions_total", replica=replica) == 0

    with httpx.Client(base_url=serve.base, headers=AUTH, timeout=60) as client:
        # A scheduled strategy: its first tick runs at once (a schedule lag is observed).
        deploy = {"user_id": "u1", "execution_interval": 3600}
        assert client.post("/strategies/deploy", json={**deploy, "strategy_id": "ok", "code": "RESULT = 1"}).is_success
        failing = {**deploy, "strategy_id": "bad", "code": "raise ValueError('no')", "auto_start": False}
        assert client.post("/strategies/deploy", json=failing).is_success
        assert client.post("/strategies/bad/execute", params={"wait": 30}).json()["status"] == "failed"
        assert client.post("/strategies/ok/execute", params={"wait": 30}).json()["status"] == "succeeded"

    def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        found = samples(serve.base)
        ok = value(found, f"{PREFIX}_executions_total", replica=replica, outcome="succeeded") >= 2
        return found if ok and value(found, f"{PREFIX}_busy_slots", replica=replica) == 0 else None

    after = wait_for(settled, 30, "the executions to show in /metrics")
    assert value(after, f"{PREFIX}_executions_total", replica=replica, outcome="failed") == 1
    assert value(after, f"{PREFIX}_execution_duration_seconds_count", replica=replica) == 3
    assert 0 < value(after, f"{PREFIX}_execution_duration_seconds_sum", replica=replica) < 60
    assert value(after, f"{PREFIX}_schedule_lag_seconds_count", replica=replica) == 1  # the first tick of "ok"
    claims_before = value(before, f"{PREFIX}_claims_per_pass_sum", replica=replica)
    assert value(after, f"{PREFIX}_claims_per_pass_sum", replica=replica) - claims_before == 3
    assert value(after, f"{PREFIX}_reconcile_pass_duration_seconds_count", replica=replica) > value(
        before, f"{PREFIX}_reconcile_pass_duration_seconds_count", replica=replica
    )
    assert value(after, f"{PREFIX}_database_up", replica=replica) == 1
    assert value(after, f"{PREFIX}_lost_executions_rescued_total", replica=replica) == 0


def test_separate_processes_share_one_metrics_view_in_multiprocess_mode(database_url: str, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, the API's /metrics also shows a worker process's replica."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = service_env(database_url, prometheus_multiproc_dir=str(shared))
    api = start("serve", env, tmp_path, "serve")
    worker = start("worker", env, tmp_path, "worker", port_variable="WORKER_HEALTH_PORT")
    try:
        replicas = {
            httpx.get(f"{api.base}/health", timeout=10).json()["replica"]["replica_id"],
            httpx.get(f"{worker.base}/health", timeout=10).json()["replica_id"],
        }
        with httpx.Client(base_url=api.base, headers=AUTH, timeout=60) as client:
            body = {"strategy_id": "m", "user_id": "u1", "code": "RESULT = 1", "execution_interval": 3600}
            assert client.post("/strategies/deploy", json=body).is_success
            ran = client.post("/strategies/m/execute", params={"wait": 30}).json()
            assert ran["status"] == "succeeded"
        # The first tick and the manual run, wherever each ran; then both views agree.
        succeeded = f"{PREFIX}_executions_total"
        wait_for(lambda: value(samples(api.base), succeeded, outcome="succeeded") == 2, 30, "both executions")
        for base in (api.base, worker.base):
            found = samples(base)
            assert {dict(labels)["replica"] for name, labels in found if name == f"{PREFIX}_slots"} == replicas
            assert value(found, succeeded, outcome="succeeded") == 2
    finally:
        worker.service.terminate()
        api.service.terminate()
