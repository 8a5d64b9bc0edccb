"""GET /docs: the OpenAPI document rendered as one HTML page on the server (no script, no CDN)."""

from __future__ import annotations

from typing import Any

_METHOD_ORDER = {"get": 0, "post": 1, "put": 2, "patch": 3, "delete": 4}


def _type(schema: dict[str, Any]) -> str:
    """A short human form of a JSON schema: `Deployment`, `list of Order`, `string | null`."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type(schema['additionalProperties'])}"
    return str(kind or "any")


def view(document: dict[str, Any]) -> dict[str, Any]:
    """What the template shows: operations grouped by their first path segment, then every schema."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, operations in document["paths"].items():
        for method, op in sorted(operations.items(), key=lambda item: _METHOD_ORDER.get(item[0], 9)):
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            security = [name for requirement in op.get("security", []) for name in requirement]
            groups.setdefault(_group(path), []).append(
                {
                    "id": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "security": security,
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "type": _type(p.get("schema", {})),
                            "description": p.get("description", ""),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": _type(body) if body else None,
                    "responses": [
                        {
                            "code": code,
                            "description": response.get("description", ""),
                            "type": _type(response.get("content", {}).get("application/json", {}).get("schema", {})),
                        }
                        for code, response in op["responses"].items()
                    ],
                }
            )
    schemas = []
    for name, schema in sorted(document["components"]["schemas"].items()):
        required = set(schema.get("required", ()))
        schemas.append(
            {
                "name": name,
                "description": schema.get("description", ""),
                "properties": [
                    {
                        "name": prop_name,
                        "type": _type(prop),
                        "required": prop_name in required,
                        "description": prop.get("description", ""),
                    }
                    for prop_name, prop in schema.get("properties", {}).items()
                ],
                "enum": schema.get("enum"),
            }
        )
    return {
        "info": document["info"],
        "groups": groups,
        "schemas": schemas,
        "security": document["components"].get("securitySchemes", {}),
    }


def _group(path: str) -> str:
    if path.startswith("/api/bot"):
        return "Tenant API (a user's own bots, JWT)"
    if path in ("/health", "/openapi.json", "/docs"):
        return "Service"
    return "Executor API (the platform's backend, API token)"
