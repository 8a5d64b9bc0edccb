"""`strategy-executor openapi`: the document the service serves, dumped without a server or database."""

from __future__ import annotations

import json
import re
from pathlib import Path

from starlette.testclient import TestClient

from api.openapi_dump import openapi_document
from reconciler.cli import main
from tests.api.conftest import build_client, client  # noqa: F401  (fixtures)
from tests.e2e.harness import PROJECT_ROOT


def test_the_dump_is_what_a_running_app_serves(client: TestClient) -> None:  # noqa: F811
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert openapi_document() == served.json()


def test_the_cli_writes_the_document_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert main(["openapi", "-o", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document == openapi_document()
    assert "/strategies/deploy" in document["paths"]


def test_the_readme_shows_the_client_package_example() -> None:
    def example(path: Path) -> str:
        match = re.search(r"```ts\n(.*?)```", path.read_text(), re.S)
        assert match, f"no ```ts example in {path}"
        return match.group(1)

    # The package's copy is compiled and run by its Node tests; the project README shows the same lines.
    assert example(PROJECT_ROOT / "README.md") == example(PROJECT_ROOT / "clients" / "typescript" / "README.md")
