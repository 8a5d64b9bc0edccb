"""Deploy compiles in worker processes: slow or huge code gets a clear 422, concurrent deploys never a
500, and `open` is refused with its position (the real compile pool, the real database)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.api.conftest import BuildClient, deploy_body
from tests.unit.test_policy_compiler import LARGE, SLOW


def _reason(response: object) -> dict[str, object]:
    assert response.status_code == 422, response.text  # type: ignore[attr-defined]
    (detail,) = response.json()["detail"]  # type: ignore[attr-defined]
    assert detail["field"] == "code"
    return detail  # type: ignore[no-any-return]


def test_code_that_takes_too_long_to_compile_is_422(build_client: BuildClient) -> None:
    client = build_client(compile_timeout_seconds=0.3)
    detail = _reason(client.post("/strategies/deploy", json=deploy_body(code=SLOW)))
    assert str(detail["reason"]).startswith("code takes too long to compile (more than 0.3 s of CPU time)")
    assert client.post("/strategies/deploy", json=deploy_body(code="RESULT = 1\n")).status_code == 201


def test_code_whose_compiled_form_is_too_big_is_422(build_client: BuildClient) -> None:
    client = build_client(max_compiled_bytes=256 << 10)
    detail = _reason(client.post("/strategies/deploy", json=deploy_body(code=LARGE)))
    assert "the compiled code is" in str(detail["reason"]) and f"over the limit of {256 << 10} bytes" in str(
        detail["reason"]
    )


def test_open_is_refused_at_deploy_with_line_and_column(build_client: BuildClient) -> None:
    client = build_client()
    detail = _reason(client.post("/strategies/deploy", json=deploy_body(code="x = 1\ndata = open('/etc/passwd')\n")))
    assert (detail["line"], detail["column"]) == (2, 8)
    assert "open() is not available" in str(detail["reason"])


def test_concurrent_deploys_never_answer_500(build_client: BuildClient) -> None:
    client = build_client(compile_timeout_seconds=0.5)
    bodies = [
        deploy_body(strategy_id=f"s{i}", code=SLOW if i % 3 == 0 else f"RESULT = {i}\nimport math\n") for i in range(9)
    ]
    with ThreadPoolExecutor(max_workers=9) as threads:
        statuses = list(threads.map(lambda body: client.post("/strategies/deploy", json=body).status_code, bodies))
    assert statuses == [422 if i % 3 == 0 else 201 for i in range(9)]
