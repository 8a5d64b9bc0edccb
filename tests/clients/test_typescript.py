"""The TypeScript client (clients/typescript), run from the suite so one command runs every test.

Node is required: a machine without it, or without the package's locked dependencies
(`npm ci` in clients/typescript, which `.ci/run` does), fails here instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "clients" / "typescript"

pytestmark = pytest.mark.slow


def node() -> str:
    found = shutil.which("node")
    assert found, "node is not installed: the TypeScript client's tests need Node.js 20 or later"
    assert (PACKAGE / "node_modules" / "openapi-fetch").is_dir(), (
        "the TypeScript client's dependencies are missing: run `npm ci` in clients/typescript"
    )
    return found


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "TEST_DATABASE_URL"))}
    env["PYTHON"] = sys.executable  # the service and the OpenAPI dump run with this interpreter
    env.pop("NODE_OPTIONS", None)
    return subprocess.run(
        [node(), *args], cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-20000:]}\n--- stderr\n{result.stderr[-20000:]}"


def test_committed_types_are_what_the_service_generates() -> None:
    result = run("scripts/generate.mjs", "--check")
    assert result.returncode == 0, explain(result)
    assert "matches" in result.stdout


def test_the_drift_check_fails_when_the_document_changes(tmp_path: Path) -> None:
    from api.openapi_dump import openapi_document

    document = openapi_document()
    document["components"]["schemas"]["Strategy"]["properties"]["added_by_the_test"] = {"type": "string"}
    changed = tmp_path / "openapi.json"
    changed.write_text(json.dumps(document))
    result = run("scripts/generate.mjs", "--check", "--from", str(changed))
    assert result.returncode == 1, explain(result)
    assert "npm run generate" in result.stderr


# Bounds, not expectations: on a quiet machine the whole test takes well under a minute.
@pytest.mark.timeout(1200)
def test_typescript_compiles_and_node_tests_pass_against_a_real_service() -> None:
    # tsc type-checks src and test together (noEmitOnError): a wrapper that no longer fits the
    # generated types fails here, before any test runs.
    shutil.rmtree(PACKAGE / "dist", ignore_errors=True)  # no stale output of a removed test runs
    compiled = run("node_modules/typescript/bin/tsc", "-p", "tsconfig.json")
    assert compiled.returncode == 0, explain(compiled)
    tests = sorted(str(path.relative_to(PACKAGE)) for path in (PACKAGE / "dist" / "test").glob("*.test.js"))
    assert tests, "no compiled Node tests found"
    result = run("--test", "--test-reporter=spec", *tests)
    assert result.returncode == 0, explain(result)
    assert "\u2139 fail 0" in result.stdout or "# fail 0" in result.stdout, explain(result)
