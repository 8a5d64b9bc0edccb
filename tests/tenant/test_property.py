"""Property-based requests (schemathesis over /openapi.json) against every tenant route: whatever a
client sends, no 5xx, and every answer matches the document (status, content type, body schema)."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from api.openapi_dump import openapi_document
from tests.tenant.conftest import bearer, start_body

schema = schemathesis.openapi.from_dict(openapi_document()).include(path_regex="^/api/bot/")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture, hypothesis.HealthCheck.too_slow],
)
def test_tenant_routes_keep_their_contract(case: schemathesis.Case, tenant_client: TestClient) -> None:
    # A bot of this user's, so ids and names the generator reuses can hit something real.
    tenant_client.post("/api/bot/start", headers=bearer("prop-user"), json=start_body(name="prop"))
    kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=bearer("prop-user"))
    request = {k: v for k, v in kwargs.items() if k in ("method", "url", "headers", "params", "json", "cookies")}
    if "data" in kwargs:
        request["content"] = kwargs["data"]
    response = tenant_client.request(**request)
    case.validate_response(response, checks=CHECKS)


def test_the_document_covers_every_tenant_route() -> None:
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    assert operations == {
        ("POST", "/api/bot/start"),
        ("POST", "/api/bot/stop"),
        ("GET", "/api/bot/deployments"),
        ("GET", "/api/bot/deployments/{deployment_id}"),
        ("DELETE", "/api/bot/deployments/{deployment_id}"),
        ("POST", "/api/bot/deployments/{deployment_id}/run"),
    }


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
