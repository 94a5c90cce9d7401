"""The OpenAPI 3 document of the Control API, generated from the kinds' models (never by hand)."""

from __future__ import annotations

from typing import Any

from aviator import __version__
from aviator.api.kinds import GRANT, KINDS, KindInfo

_STATUS_REF = {"$ref": "#/components/schemas/Status"}

_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Kubernetes-style failure: `reason`, `message`, `code`, and field `causes`.",
    "properties": {
        "kind": {"type": "string", "enum": ["Status"]},
        "apiVersion": {"type": "string"},
        "status": {"type": "string"},
        "message": {"type": "string"},
        "reason": {"type": "string"},
        "code": {"type": "integer"},
        "details": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string"},
                "causes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "message": {"type": "string"},
                            "reason": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": desc, "content": {"application/json": {"schema": _STATUS_REF}}}
        for code, desc in (
            (400, "Malformed body or query"),
            (401, "Missing or invalid token (the admin token or an agent token for control-api)"),
            (403, "Forbidden by policy (the reason names the deciding statements), or admin only"),
            (404, "Not found"),
            (409, "Already exists, or stale resourceVersion"),
            (410, "Watch resourceVersion too old; relist"),
            (413, "Body too large"),
            (415, "Unsupported content type"),
            (422, "Invalid: field causes say where and what was expected"),
            (503, "The decision could not be audited, so nothing was done: retry (Retry-After)"),
        )
        if code in codes
    }


def _kind_paths(info: KindInfo) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{info.kind}"}
    list_ref = {"$ref": f"#/components/schemas/{info.list_kind}"}
    body = {
        "required": True,
        "content": {"application/json": {"schema": ref}, "application/yaml": {"schema": ref}},
    }
    patch_body = {
        "required": True,
        "content": {"application/merge-patch+json": {"schema": {"type": "object"}}},
    }
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
    ns_param = {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    list_params = [
        {"name": "labelSelector", "in": "query", "schema": {"type": "string"}},
        {
            "name": "watch",
            "in": "query",
            "schema": {"type": "boolean"},
            "description": "Stream ADDED/MODIFIED/DELETED/BOOKMARK events as JSON lines.",
        },
        {
            "name": "resourceVersion",
            "in": "query",
            "schema": {"type": "string"},
            "description": "With watch: deliver events after this version (410 if too old).",
        },
    ]
    tag = [info.kind]
    base = f"/apis/{info.api_version}"
    scoped = (
        f"{base}/namespaces/{{namespace}}/{info.plural}"
        if info.namespaced
        else f"{base}/{info.plural}"
    )
    scope_params = [ns_param] if info.namespaced else []
    list_op = {
        "tags": tag,
        "summary": f"List or watch {info.plural}",
        "parameters": [*scope_params, *list_params],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": list_ref}}},
            **_errors(400, 401, 410),
        },
    }
    paths: dict[str, Any] = {
        scoped: {
            "get": {**list_op, "operationId": f"list{info.kind}"},
            "post": {
                "tags": tag,
                "summary": f"Create a {info.kind}",
                "operationId": f"create{info.kind}",
                "parameters": scope_params,
                "requestBody": body,
                "responses": {"201": ok["200"], **_errors(400, 401, 403, 409, 413, 415, 422, 503)},
            },
        },
        f"{scoped}/{{name}}": {
            "get": {
                "tags": tag,
                "summary": f"Read a {info.kind}",
                "operationId": f"read{info.kind}",
                "parameters": [*scope_params, name_param],
                "responses": {**ok, **_errors(401, 404)},
            },
            "put": {
                "tags": tag,
                "summary": f"Replace a {info.kind}",
                "operationId": f"replace{info.kind}",
                "parameters": [*scope_params, name_param],
                "requestBody": body,
                "responses": {**ok, **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)},
            },
            "patch": {
                "tags": tag,
                "summary": f"Merge-patch a {info.kind}",
                "operationId": f"patch{info.kind}",
                "parameters": [*scope_params, name_param],
                "requestBody": patch_body,
                "responses": {**ok, **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)},
            },
            "delete": {
                "tags": tag,
                "summary": f"Delete a {info.kind}",
                "operationId": f"delete{info.kind}",
                "parameters": [*scope_params, name_param],
                "responses": {**ok, **_errors(401, 403, 404, 409, 503)},
            },
        },
    }
    if info.status_subresource:
        paths[f"{scoped}/{{name}}/status"] = {
            "get": {
                "tags": tag,
                "summary": f"Read the status of a {info.kind}",
                "operationId": f"read{info.kind}Status",
                "parameters": [*scope_params, name_param],
                "responses": {**ok, **_errors(401, 404)},
            },
            "put": {
                "tags": tag,
                "summary": f"Replace the status of a {info.kind}",
                "operationId": f"replace{info.kind}Status",
                "parameters": [*scope_params, name_param],
                "requestBody": body,
                "responses": {**ok, **_errors(400, 401, 404, 409, 413, 422)},
            },
        }
    if info.namespaced:
        paths[f"{base}/{info.plural}"] = {
            "get": {
                **list_op,
                "operationId": f"list{info.kind}ForAllNamespaces",
                "parameters": list_params,
            }
        }
    return paths


def _grant_verb_paths() -> dict[str, Any]:
    """``approve``, ``deny`` and ``revoke`` on a Grant (``aviator.controlapi.grants``)."""
    info = GRANT
    ref = {"$ref": f"#/components/schemas/{info.kind}"}
    params = [
        {"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "maxLength": 512}},
                }
            }
        },
    }
    summaries = {
        "approve": "Approve a Pending grant (never by its requester or its agent)",
        "deny": "Deny a Pending grant (never by its requester or its agent)",
        "revoke": "Revoke an Active or Pending grant",
    }
    base = f"/apis/{info.api_version}/namespaces/{{namespace}}/{info.plural}/{{name}}"
    return {
        f"{base}/{verb}": {
            "post": {
                "tags": [info.kind],
                "summary": summary,
                "operationId": f"{verb}{info.kind}",
                "parameters": params,
                "requestBody": body,
                "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": ref}}},
                    **_errors(400, 401, 403, 404, 409, 503),
                },
            }
        }
        for verb, summary in summaries.items()
    }


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Status": _STATUS_SCHEMA}
    paths: dict[str, Any] = {}
    for info in KINDS.values():
        schema = info.model.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        )
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schema["title"] = info.kind
        schemas[info.kind] = schema
        schemas[info.list_kind] = {
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string", "enum": [info.list_kind]},
                "metadata": {
                    "type": "object",
                    "properties": {"resourceVersion": {"type": "string"}},
                },
                "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{info.kind}"}},
            },
        }
        paths.update(_kind_paths(info))
    paths.update(_grant_verb_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aviator Control API",
            "version": __version__,
            "description": "Kubernetes-shaped REST API of the aviator plane (group aviator.dev/v1alpha1).",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "agentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT-SVID of an Agent for the audience control-api; its "
                    "writes are decided by Cedar policy.",
                },
            },
        },
        "security": [{"adminToken": []}, {"agentToken": []}],
        "paths": paths,
    }
