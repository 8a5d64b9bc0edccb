"""GET /openapi.json: every route, with its request and response schemas, all references resolvable."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.api.conftest import BuildClient

ROUTES = {
    ("get", "/health"),
    ("post", "/strategies/deploy"),
    ("get", "/strategies"),
    ("get", "/strategies/{strategy_id}"),
    ("delete", "/strategies/{strategy_id}"),
    ("get", "/strategies/{strategy_id}/status"),
    ("post", "/strategies/{strategy_id}/start"),
    ("post", "/strategies/{strategy_id}/stop"),
    ("post", "/strategies/{strategy_id}/execute"),
    ("get", "/strategies/{strategy_id}/executions"),
    ("get", "/strategies/{strategy_id}/orders"),
    ("get", "/strategies/{strategy_id}/balances"),
    ("get", "/executions/{execution_id}"),
    ("get", "/openapi.json"),
    ("post", "/webhooks"),
    ("get", "/webhooks"),
    ("get", "/webhooks/{webhook_id}"),
    ("delete", "/webhooks/{webhook_id}"),
    ("get", "/webhooks/{webhook_id}/deliveries"),
    ("post", "/api/webhooks"),
    ("get", "/api/webhooks"),
    ("delete", "/api/webhooks/{webhook_id}"),
    ("post", "/api/bot/start"),
    ("post", "/api/bot/stop"),
    ("get", "/api/bot/deployments"),
    ("get", "/api/bot/deployments/{deployment_id}"),
    ("delete", "/api/bot/deployments/{deployment_id}"),
    ("post", "/api/bot/deployments/{deployment_id}/run"),
}


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_document_lists_every_route_with_schemas(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    listed = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert listed == ROUTES
    schemas = doc["components"]["schemas"]
    for name in ("DeployRequest", "Strategy", "StrategyStatus", "StrategyStats", "RunRequest", "Execution",
                 "ExecutionList", "OrderList", "StrategyList", "HealthResponse", "ErrorResponse",
                 "ValidationErrorResponse"):  # fmt: skip
        assert name in schemas, name
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref

    deploy = doc["paths"]["/strategies/deploy"]["post"]
    assert deploy["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DeployRequest"
    }
    assert {"200", "201", "401", "409", "413", "422", "503"} <= set(deploy["responses"])
    assert deploy["security"] == [{"bearerAuth": []}]
    assert "security" not in doc["paths"]["/health"]["get"]
    execute = doc["paths"]["/strategies/{strategy_id}/execute"]["post"]
    assert {p["name"] for p in execute["parameters"]} == {"strategy_id", "wait"}
    assert set(execute["responses"]) >= {"200", "202", "404", "422"}
    listing = doc["paths"]["/strategies"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor", "user_id", "status", "include_code"}
    # Credentials are accepted, never returned.
    assert "api_secret" in schemas["DeployRequest"]["properties"]
    for name, schema in schemas.items():
        if name != "DeployRequest":
            assert "api_secret" not in schema.get("properties", {}), name


def test_the_interval_bounds_are_this_servers_settings(build_client: BuildClient) -> None:
    client = build_client(min_execution_interval=10, max_execution_interval=100)
    schema = client.get("/openapi.json").json()["components"]["schemas"]["DeployRequest"]
    assert schema["properties"]["execution_interval"]["minimum"] == 10
    assert schema["properties"]["execution_interval"]["maximum"] == 100


def test_a_run_refused_for_a_halt_is_documented_with_the_status_halt_object(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, model, halt in (
        ("/strategies/{strategy_id}/execute", "StrategyHaltedResponse", "Halt"),
        ("/api/bot/deployments/{deployment_id}/run", "BotHaltedResponse", "BotHalt"),
    ):
        schema = doc["paths"][path]["post"]["responses"]["409"]["content"]["application/json"]["schema"]
        # Either body: a halt's, or the plain one of a strategy being deleted.
        plain = {"$ref": "#/components/schemas/ErrorResponse"}
        assert schema == {"anyOf": [{"$ref": f"#/components/schemas/{model}"}, plain]}
        assert schemas[model]["properties"]["error"]["const"] == "strategy_halted"
        assert schemas[model]["properties"]["halt"] == {"$ref": f"#/components/schemas/{halt}"}
        assert set(schemas[model]["required"]) == {"error", "message", "halt"}
    # The status's own object (the executor API's), and the same in the tenant API's camelCase.
    assert schemas["StrategyStatus"]["properties"]["halt"]["anyOf"][0] == {"$ref": "#/components/schemas/Halt"}
    assert list(schemas["Halt"]["properties"]) == ["limit", "value", "threshold", "halted_at", "resume_at"]
    assert list(schemas["BotHalt"]["properties"]) == ["limit", "value", "threshold", "haltedAt", "resumeAt"]
