"""The deployment files, checked where they cannot be run here (no container engine, no cluster).

They load; the settings they set exist; the probes and the Service point at ports the service really
listens on and routes it really serves (asked of real processes); the grace periods outlast the
drain; every metric the Grafana dashboard queries is in a real service's /metrics; and the security
context's capabilities are enough for every sandbox layer (the sandbox started under exactly them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.settings import Settings
from tests.e2e.harness import PROJECT_ROOT, service_env
from tests.ops.conftest import Running, names, samples, start

DEPLOY = PROJECT_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SETTINGS = {name.upper() for name in Settings.model_fields}
SHUTDOWN_GRACE_DEFAULT = Settings.model_fields["shutdown_grace_seconds"].default


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in spec.get("env", [])}


def port_number(spec: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in spec["ports"] if p["name"] == port]
    return int(number)


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


# --- docker compose -------------------------------------------------------------------------------


def test_compose_runs_postgres_the_api_and_three_replicas() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "api", "worker"}
    assert services["api"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]
    assert services["worker"]["deploy"]["replicas"] == 3
    for name in ("api", "worker"):
        service = services[name]
        unknown = set(service["environment"]) - SETTINGS
        assert not unknown, f"{name} sets variables the service does not read: {unknown}"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        grace = float(service["environment"].get("SHUTDOWN_GRACE_SECONDS", SHUTDOWN_GRACE_DEFAULT))
        assert seconds(service["stop_grace_period"]) > grace
        assert "SYS_ADMIN" in service["cap_add"]
    api_port = services["api"]["environment"]["PORT"]
    assert services["api"]["ports"] == [f"{api_port}:{api_port}"]
    assert f"127.0.0.1:{api_port}/health" in " ".join(services["api"]["healthcheck"]["test"])
    worker_port = services["worker"]["environment"]["WORKER_HEALTH_PORT"]
    assert f"127.0.0.1:{worker_port}/health" in " ".join(services["worker"]["healthcheck"]["test"])
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = json.dumps(prometheus["scrape_configs"])
    assert f"api:{api_port}" in targets and f'"port": {worker_port}' in targets


def test_the_dockerfile_copies_what_exists_and_exposes_the_ports_used() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (PROJECT_ROOT / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"
    assert 'ENTRYPOINT ["strategy-executor"]' in dockerfile
    exposed = {int(port) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for port in line.split()}
    services = compose()["services"]
    assert {
        int(services["api"]["environment"]["PORT"]),
        int(services["worker"]["environment"]["WORKER_HEALTH_PORT"]),
    } <= exposed
    assert "libseccomp2" in dockerfile


# --- kubernetes --------------------------------------------------------------------------------------


def test_kubernetes_workers_api_and_service_fit_together() -> None:
    found = manifests()
    workers = found[("Deployment", "strategy-executor-worker")]
    api = found[("Deployment", "strategy-executor-api")]
    service = found[("Service", "strategy-executor-api")]
    assert workers["spec"]["replicas"] == 3
    for deployment, command in ((workers, "worker"), (api, "serve")):
        spec = container(deployment)
        assert spec["args"] == [command]
        env = env_of(spec)
        assert not set(env) - SETTINGS, f"unknown settings: {set(env) - SETTINGS}"
        grace = float(env.get("SHUTDOWN_GRACE_SECONDS", SHUTDOWN_GRACE_DEFAULT))
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
        # The selector selects the pod template.
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        context = spec["securityContext"]
        assert "SYS_ADMIN" in context["capabilities"]["add"] and context["capabilities"]["drop"] == ["ALL"]
        # Kubernetes refuses allowPrivilegeEscalation: false together with CAP_SYS_ADMIN.
        assert context.get("allowPrivilegeEscalation") is not False
    worker = container(workers)
    probe_port = port_number(worker, worker["readinessProbe"]["httpGet"]["port"])
    assert probe_port == int(env_of(worker)["WORKER_HEALTH_PORT"])
    api_spec = container(api)
    assert port_number(api_spec, service["spec"]["ports"][0]["targetPort"]) == int(env_of(api_spec)["PORT"])
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    postgres = found[("Service", "postgres")]
    assert postgres["spec"]["ports"][0]["port"] == 5432


@pytest.mark.slow
def test_the_probes_and_scrape_paths_point_at_real_routes(serve: Running, database_url: str, tmp_path: Path) -> None:
    found = manifests()
    worker = start("worker", service_env(database_url), tmp_path, "worker", port_variable="WORKER_HEALTH_PORT")
    try:
        for deployment, base in (("strategy-executor-worker", worker.base), ("strategy-executor-api", serve.base)):
            manifest = found[("Deployment", deployment)]
            spec = container(manifest)
            paths = [spec[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe")]
            paths.append(manifest["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
            for path in paths:
                response = httpx.get(f"{base}{path}", timeout=10)
                assert response.status_code == 200, f"{deployment}: {path} answered {response.status_code}"
    finally:
        worker.service.terminate()


# --- grafana -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_metric_the_dashboard_queries_exists(serve: Running) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "strategy-executor.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 13
    queried = {name for expr in expressions for name in re.findall(r"\b(?:strategy_executor|process)_[a-z_]+", expr)}
    exposed = names(samples(serve.base))
    assert queried and not queried - exposed, f"the dashboard queries metrics /metrics lacks: {queried - exposed}"
    # What the README tells operators to watch has a panel.
    for watched in ("schedule_lag_seconds", "busy_slots", "lost_executions_rescued"):
        assert any(watched in expr for expr in expressions), watched


# --- the sandbox under the manifests' capabilities ---------------------------------------------------

PROBE = """
import asyncio, json
from reconciler.outcome import ExecutionRequest
from reconciler.sandbox import Sandbox, SandboxLimits

async def main():
    sandbox = Sandbox(SandboxLimits(memory_mb=100, cpu_seconds=5, wall_seconds=10.0))
    await sandbox.start()
    outcome = await sandbox.run(ExecutionRequest("e1", "s", "RESULT = 1"))
    print(json.dumps({"layers": sandbox.layers, "status": outcome.status}))
    await sandbox.close()

asyncio.run(main())
"""


def sandbox_under(capabilities: list[str] | None) -> dict[str, Any]:
    command = [sys.executable, "-c", PROBE]
    if capabilities is not None:
        bounding = ",".join(["-all", *(f"+{cap.lower()}" for cap in capabilities)])
        command = ["setpriv", f"--bounding-set={bounding}", *command]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_the_security_context_s_capabilities_keep_every_sandbox_layer() -> None:
    capabilities = container(manifests()[("Deployment", "strategy-executor-worker")])["securityContext"]["capabilities"]
    full = sandbox_under(None)
    restricted = sandbox_under(capabilities["add"])
    assert restricted["status"] == "succeeded"
    lost = [layer for layer, active in full["layers"].items() if active and not restricted["layers"].get(layer)]
    assert not lost, f"layers lost under {capabilities['add']}: {lost}"
    # And what the README says is lost without CAP_SYS_ADMIN is lost.
    without = sandbox_under([cap for cap in capabilities["add"] if cap != "SYS_ADMIN"])
    assert full["layers"]["network_namespace"] and not without["layers"]["network_namespace"]
