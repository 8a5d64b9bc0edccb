"""Bad input of every shape is a 4xx, never a 500: every field of the deploy body and every query."""

from __future__ import annotations

import itertools

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import deploy_body

ODD_VALUES: list[object] = [
    None,
    True,
    0,
    -1,
    2**31,
    10**30,
    1.5,
    "",
    " ",
    "\x00",
    "é" * 10,
    "\ud7ff",
    "x" * 5000,
    [],
    [None],
    {},
    {"a": {"b": [1, {"c": None}]}},
]
FIELDS = [
    "strategy_id",
    "user_id",
    "name",
    "code",
    "config",
    "execution_interval",
    "exchange",
    "api_key",
    "api_secret",
    "auto_start",
]


@pytest.mark.parametrize("field", FIELDS)
def test_odd_values_in_every_deploy_field_are_never_a_500(client: TestClient, field: str) -> None:
    for value in ODD_VALUES:
        response = client.post("/strategies/deploy", json=deploy_body(**{field: value}))
        assert response.status_code < 500, (field, value, response.text)
        assert response.headers["content-type"] == "application/json"


QUERIES = ["limit", "cursor", "user_id", "status", "include_code", "wait", "offset"]
RAW_VALUES = ["", "%00", "-1", "1e999", "nan", "%FF%FE", "x" * 2000, "%C3%A9", "[]", "null", "eyJ9"]


def test_odd_query_values_are_never_a_500(client: TestClient) -> None:
    client.post("/strategies/deploy", json=deploy_body())
    paths = ["/strategies", "/strategies/s1/executions", "/strategies/s1/orders"]
    for path, name, value in itertools.product(paths, QUERIES, RAW_VALUES):
        response = client.get(f"{path}?{name}={value}")
        assert response.status_code < 500, (path, name, value, response.text)
    for value in RAW_VALUES:
        response = client.post(f"/strategies/s1/execute?wait={value}")
        assert response.status_code < 500, (value, response.text)


@pytest.mark.parametrize("strategy_id", ["%00", "%FF", "a%2Fb", "x" * 3000, "%20", ".", "..", "a..b"])
def test_odd_path_ids_are_never_a_500(client: TestClient, strategy_id: str) -> None:
    for method, suffix in [("GET", ""), ("GET", "/status"), ("POST", "/stop"), ("DELETE", ""), ("GET", "/orders")]:
        response = client.request(method, f"/strategies/{strategy_id}{suffix}")
        assert response.status_code < 500, (method, strategy_id, suffix, response.text)
    assert client.get(f"/executions/{strategy_id}").status_code < 500
