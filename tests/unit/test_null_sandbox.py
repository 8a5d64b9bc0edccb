"""The benchmark's null sandbox cannot be reached from anything a user configures.

It lives outside the product's packages (tests/benchmarks), only its own entry point passes it to
`service.run`, and the CLI (the product's one entry point) always runs the real sandbox, whatever the
environment holds.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, service
from reconciler.policy.cache import CompiledCache
from reconciler.policy.pool import CompilePool
from reconciler.sandbox import Sandbox
from reconciler.settings import Settings
from tests.benchmarks.null_replica import NullSandbox

ROOT = Path(__file__).resolve().parents[2]

# Names a person might try, by guess or by accident, to switch the runner.
TEMPTING_ENVIRONMENT = {
    "SANDBOX": "null",
    "SANDBOX_RUNNER": "null",
    "SANDBOX_FACTORY": "tests.benchmarks.null_replica:NullSandbox",
    "NULL_SANDBOX": "1",
    "BENCHMARK": "1",
    "BENCHMARK_NULL_RUNNER": "true",
}


def test_no_product_module_imports_the_benchmarks() -> None:
    offenders = []
    for path in [*ROOT.glob("reconciler/**/*.py"), *ROOT.glob("api/**/*.py")]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in modules if m.split(".")[0] == "tests"]
        assert "null_replica" not in path.read_text() and "NullSandbox" not in path.read_text(), path
    assert offenders == []


def test_no_setting_names_a_runner() -> None:
    for name in Settings.model_fields:
        assert not any(word in name for word in ("null", "bench", "runner", "factory")), name


def test_run_defaults_to_the_real_sandbox() -> None:
    default = inspect.signature(service.run).parameters["sandbox_factory"].default
    assert default is service.real_sandbox
    sandbox = service.real_sandbox(Settings(), CompiledCache(CompilePool()))
    assert isinstance(sandbox, Sandbox)
    assert not isinstance(sandbox, NullSandbox)


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_the_cli_never_passes_another_sandbox(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every tempting variable set, `worker` and `serve` still call `service.run` with the real one."""
    for name, value in TEMPTING_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@localhost/none")
    monkeypatch.setenv("ENCRYPTION_KEY", "k1:" + "A" * 43 + "=")
    monkeypatch.setenv("EXECUTOR_API_TOKEN", "t" * 32)
    calls: list[dict[str, Any]] = []

    def prepare(settings: Settings, *, with_api: bool) -> service.Runtime:
        return service.Runtime(settings=settings, database_url="postgresql://nobody@localhost/none", embedded=None)

    async def run(runtime: service.Runtime, **kwargs: Any) -> None:
        calls.append(kwargs)

    bind = service.listen
    monkeypatch.setattr(service, "listen", lambda host, port, setting: bind(host, 0, setting))  # any free port
    monkeypatch.setattr(service, "prepare", prepare)
    monkeypatch.setattr(service, "run", run)
    assert cli.main([command]) == 0
    (kwargs,) = calls
    listening = kwargs.pop("listening")
    if listening is not None:
        listening.close()
    assert (listening is not None) == (command == "serve")  # worker without WORKER_HEALTH_PORT listens nowhere
    assert kwargs == {"with_api": command == "serve"}  # no sandbox_factory: the real sandbox
