"""The OpenAPI 3.1 document of the HTTP API, generated from `OPS` and the models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from .. import __version__
from .models import PATH_PARAMS, ErrorOut, Health, InvalidBodyOut
from .ops import Op

API = "/api/v1"


def _schema(t: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(t).json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    components.update(schema.pop("$defs", {}))
    if schema.get("type") == "object" and "title" in schema and isinstance(t, type):
        components[schema["title"]] = schema
        return {"$ref": f"#/components/schemas/{schema['title']}"}
    return schema


def openapi(ops: list[Op]) -> dict[str, Any]:
    components: dict[str, Any] = {}
    error_ref = _schema(ErrorOut, components)
    paths: dict[str, Any] = {
        f"{API}/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness (no token needed)",
                "tags": ["meta"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {"application/json": {"schema": _schema(Health, components)}},
                    }
                },
            }
        }
    }
    for op in ops:
        params: list[dict[str, Any]] = []
        for name in re.findall(r"{(\w+)}", op.path):
            pattern, what = PATH_PARAMS[name]
            params.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "description": what,
                    "schema": {"type": "string", "pattern": pattern.pattern.replace("\\Z", "$")},
                }
            )
        for q in op.query:
            schema: dict[str, Any] = {"type": q.kind}
            if q.pattern:
                schema["pattern"] = q.pattern.replace("\\Z", "$")
            if q.maximum:
                schema.update(minimum=1, maximum=q.maximum)
            params.append(
                {"name": q.name, "in": "query", "required": False, "description": q.doc,
                 "schema": schema}
            )  # fmt: skip
        errors = {
            str(code): {"description": why, "content": {"application/json": {"schema": error_ref}}}
            for code, why in (
                (400, "bad input"),
                (401, "no or unknown token"),
                (403, f"the token's role is below {op.role.value}"),
                (404, "not found"),
                (409, "conflict"),
            )
        }
        entry: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.tag],
            "x-tristage-role": op.role.value,
            "parameters": params,
            "responses": {
                str(op.status): {
                    "description": "ok",
                    "content": {"application/json": {"schema": _schema(op.response, components)}},
                },
                **errors,
            },
        }
        if op.body is not None:
            entry["responses"]["422"] = {
                "description": "the body is not valid JSON or does not match its schema",
                "content": {"application/json": {"schema": _schema(InvalidBodyOut, components)}},
            }
            entry["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _schema(op.body, components)}},
            }
        paths.setdefault(API + op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tristage",
            "version": __version__,
            "description": "Deployments, environments, variables, data and webhooks of a "
            "tristage platform. Roles: viewer < deployer < admin.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
