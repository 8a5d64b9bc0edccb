"""Authentication, and every error as JSON: 401, 404, 405, 503, 500 (with a request id, no traceback)."""

from __future__ import annotations

import logging
import socket

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import TOKEN, BuildClient, deploy_body


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
)
def test_every_route_but_health_needs_the_token(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    client.headers.pop("Authorization")
    for method, path in [
        ("POST", "/strategies/deploy"),
        ("GET", "/strategies"),
        ("GET", "/strategies/s1"),
        ("GET", "/strategies/s1/status"),
        ("POST", "/strategies/s1/execute"),
        ("DELETE", "/strategies/s1"),
        ("GET", "/executions/00000000-0000-0000-0000-000000000000"),
        ("GET", "/no/such/route"),
    ]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "unauthorized"
        assert "bearer" in response.json()["message"].lower()
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/health", headers=headers).status_code == 200
    # The API's description holds no secret, and /docs must render in a browser that cannot send it.
    assert client.get("/openapi.json", headers=headers).status_code == 200
    assert client.get("/docs", headers=headers).status_code == 200


def test_the_scheme_is_case_insensitive(client: TestClient) -> None:
    response = client.get("/strategies", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


def test_without_a_configured_token_everything_but_health_is_refused(build_client: BuildClient) -> None:
    client = build_client(executor_api_token=None)
    response = client.get("/strategies")
    assert response.status_code == 503
    assert "EXECUTOR_API_TOKEN" in response.json()["message"]
    assert client.get("/health").status_code == 200


def test_unknown_route_is_404_json(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no route /nope"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/strategies/s1"),
        ("GET", "/strategies/s1/start"),
        ("DELETE", "/strategies"),
        ("PATCH", "/strategies/deploy"),
        ("POST", "/executions/00000000-0000-0000-0000-000000000000"),
        ("POST", "/health"),
    ],
)
def test_wrong_method_is_405_json(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    body = response.json()
    assert body["error"] == "method_not_allowed"
    assert method in body["message"]
    assert "allow" in response.headers


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    ids = {client.get("/health").headers["x-request-id"], client.get("/nope").headers["x-request-id"]}
    assert len(ids) == 2


def test_an_unexpected_exception_is_500_json_logged_with_its_traceback(
    build_client: BuildClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(code: str) -> None:
        raise RuntimeError("kaboom-internal-detail")

    client = build_client(check_code=broken)
    with caplog.at_level(logging.ERROR):
        response = client.post("/strategies/deploy", json=deploy_body())
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error"
    assert body["request_id"] == response.headers["x-request-id"]
    assert "kaboom" not in response.text and "Traceback" not in response.text
    assert body["request_id"] in caplog.text
    assert "kaboom-internal-detail" in caplog.text
    assert any(record.exc_info for record in caplog.records)


def test_database_outage_during_a_request_is_503(build_client: BuildClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = build_client(url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing")
    for method, path, body in [
        ("POST", "/strategies/deploy", deploy_body()),
        ("GET", "/strategies", None),
        ("POST", "/strategies/s1/stop", None),
        ("GET", "/strategies/s1/status", None),
        ("POST", "/strategies/s1/execute?wait=1", None),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 503, (method, path, response.text)
        assert response.json()["error"] == "database_unavailable"
        assert response.headers["retry-after"] == "1"
    # Validation happens before the database is touched.
    assert client.post("/strategies/deploy", json=deploy_body(execution_interval=0)).status_code == 422


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/strategies/s1")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
