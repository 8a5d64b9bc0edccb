"""The OpenAPI 3.1 document, built from the route table and the pydantic models (no hand-kept copy)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.routes import Endpoint
from api.schemas import STRATEGY_ID_PATTERN, UUID_PATTERN, ErrorResponse, ValidationErrorResponse

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "strategy_id": {"type": "string", "pattern": STRATEGY_ID_PATTERN},
    "execution_id": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
    "deployment_id": {"type": "string", "pattern": STRATEGY_ID_PATTERN},
}
_ERROR_DESCRIPTIONS = {
    401: "Missing or invalid bearer token",
    404: "Unknown id or route",
    409: "A conflict: the strategy is being deleted or is another user's, the exchange API key is another"
    " user's, (balances) the strategy trades live, or (a run) its risk guard halted it: error"
    " strategy_halted, the message says since when, why, when it resumes and how to resume it, and"
    " `halt` holds the status's halt object (limit, value, threshold, when halted, when it resumes)",
    413: "Request body, code or config too large",
    422: "Invalid request",
    500: "Unexpected error (the body carries the request id)",
    503: "The database is unavailable",
}


def build_openapi(endpoints: list[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (ErrorResponse, "serialization"),
        (ValidationErrorResponse, "serialization"),
    ]
    for endpoint in endpoints:
        if endpoint.body is not None:
            wanted.append((endpoint.body, "validation"))
        wanted.extend((model, "serialization") for model in endpoint.responses.values() if model is not None)
        wanted.extend((model, "serialization") for model in endpoint.error_bodies.values())
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=_REF)

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": _operation_id(endpoint, operation_ids),
            "summary": endpoint.summary,
            "responses": {str(code): _response(model, ref) for code, model in sorted(endpoint.responses.items())},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
            for name in _PATH_PARAM.findall(endpoint.path)
        ]
        if endpoint.query is not None:
            schema = endpoint.query.model_json_schema(ref_template=_REF)
            required = set(schema.get("required", ()))
            for name, prop in schema["properties"].items():
                param = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if "description" in prop:
                    param["description"] = prop["description"]
                parameters.append(param)
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {"required": True, "content": _json(ref(endpoint.body, "validation"))}

        errors = set(endpoint.errors) | {500, 503}
        if not endpoint.public:
            errors.add(401)
            operation["security"] = [{"tenantJwt": []}] if endpoint.tenant else [{"bearerAuth": []}]
        if parameters:
            errors.add(422)
        if any(name.endswith("_id") for name in _PATH_PARAM.findall(endpoint.path)):
            errors.add(404)
        for code in sorted(errors - set(endpoint.responses)):
            model = ValidationErrorResponse if code == 422 else ErrorResponse
            schema = ref(model, "serialization")
            if code in endpoint.error_bodies:
                # The status also answers other refusals (a 409: being deleted) with the plain body.
                schema = {"anyOf": [ref(endpoint.error_bodies[code], "serialization"), schema]}
            operation["responses"][str(code)] = {"description": _ERROR_DESCRIPTIONS[code], "content": _json(schema)}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    _add_links(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The executor API's token (EXECUTOR_API_TOKEN), for the platform's backend.",
                },
                "tenantJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A user's JWT: HS256 under JWT_SECRET, `sub` = the user id, `exp` required.",
                },
            },
        },
    }


def _operation_id(endpoint: Endpoint, taken: set[str]) -> str:
    """The handler's name, unique in the document (generated clients name their methods by it): a name
    another API's handler took already is prefixed with its owner's name, e.g. `webhooks_delete`."""
    name = endpoint.handler.__name__
    if name in taken:
        owner = getattr(endpoint.handler, "__self__", None)
        prefix = type(owner).__name__ if owner is not None else endpoint.path.strip("/").split("/")[0]
        name = f"{re.sub(r'(?<!^)(?=[A-Z])', '_', prefix).lower()}_{name}"
    taken.add(name)
    return name


def _response(
    model: type[BaseModel] | None, ref: Callable[[type[BaseModel], JsonSchemaMode], dict[str, Any]]
) -> dict[str, Any]:
    if model is None:
        return {"description": "A JSON object", "content": _json({"type": "object"})}
    return {"description": (model.__doc__ or model.__name__).strip(), "content": _json(ref(model, "serialization"))}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# Which id a response carries, and the path parameter it fills: (producer, its success codes, the
# response field, the path parameter, the consumers' path prefix). A generated client and a stateful
# property-based run follow these OpenAPI links from a deploy to everything about that strategy, and
# from a run request to its execution.
_PRODUCERS = (
    (("post", "/strategies/deploy"), ("200", "201"), "strategy_id", "strategy_id", "/strategies/"),
    # 200 only: a 202's run request may have no execution yet (execution_id null).
    (("post", "/strategies/{strategy_id}/execute"), ("200",), "execution_id", "execution_id", "/executions/"),
)


def _add_links(paths: dict[str, dict[str, Any]]) -> None:
    for (method, path), codes, field, parameter, prefix in _PRODUCERS:
        producer = paths.get(path, {}).get(method)
        if producer is None:
            continue
        links = {
            operation["operationId"]: {
                "operationId": operation["operationId"],
                "parameters": {parameter: f"$response.body#/{field}"},
            }
            for consumer_path, operations in paths.items()
            if f"{{{parameter}}}" in consumer_path and consumer_path.startswith(prefix)
            for operation in operations.values()
        }
        for code in codes:
            if code in producer["responses"] and links:
                producer["responses"][code]["links"] = links
