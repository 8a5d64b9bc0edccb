"""Real `strategy-executor` processes for the operations tests, and a reader of their /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import TOKEN, Service, free_port, service_env, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Running:
    service: Service
    base: str


def start(command: str, env: dict[str, str], log_dir: Path, name: str, port_variable: str = "PORT") -> Running:
    """Start `strategy-executor <command>` on a free port and wait until its /health answers 200.

    Other test runs share this machine: a port found free may be taken before the service binds it,
    so a start that fails on exactly that is tried again on another port.
    """
    for attempt in range(3):
        port = free_port()
        service = Service(command, {**env, port_variable: str(port)}, log_dir, f"{name}-{attempt}")
        base = f"http://127.0.0.1:{port}"

        def healthy(service: Service = service, base: str = base) -> bool:
            if not service.alive():
                raise AssertionError(f"{command} exited:\n{service.log()[-3000:]}")
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, 90, f"`{command}` to become healthy", interval=0.25)
        except AssertionError:
            service.stop()
            if "address already in use" in service.log() and attempt < 2:
                continue
            raise
        return Running(service, base)
    raise AssertionError("unreachable")


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Iterator[Running]:
    running = start("serve", service_env(database_url), tmp_path, "serve")
    try:
        yield running
    finally:
        running.service.terminate()


def samples(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of GET /metrics, keyed by (name, labels)."""
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in found.items() if n == name and wanted <= sample_labels)


def names(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in found}
