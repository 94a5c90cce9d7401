"""CustomResourceDefinitions generated from the kinds' pydantic models (never written by hand).

A CRD's ``openAPIV3Schema`` must be *structural* (Kubernetes rejects the CRD otherwise): every
node has a ``type``, there is no ``$ref``, no ``additionalProperties: false``, and unions appear
only as value validations. Pydantic emits JSON Schema 2020-12, so :func:`structural_schema`
rewrites it:

- ``$ref`` is inlined (the models have no recursion; a cycle is reported, not looped on);
- ``anyOf: [X, {type: null}]`` becomes ``X`` with ``nullable: true``;
- ``const`` becomes a one-value ``enum``; numeric ``exclusiveMinimum: N`` becomes
  ``minimum: N`` + ``exclusiveMinimum: true`` (OpenAPI 3.0 spelling);
- ``additionalProperties: false`` is dropped (the API server prunes unknown fields, and
  ``kubectl``'s strict field validation reports them); free-form maps get
  ``x-kubernetes-preserve-unknown-fields``;
- ``conditions`` lists become ``x-kubernetes-list-type: map`` keyed by ``type``, like
  ``metav1.Condition`` lists upstream;
- ``title`` and null defaults are dropped; other defaults stay, so the API server defaults what
  admission defaults in the embedded plane.

A few fields accept more on the wire than their model's schema says, because a ``before``
validator normalizes them (``spec.replicas: 2`` is stored as ``{min: 2, max: 2}``). They are
listed in :data:`WIDER_WIRE_SHAPES` and kept open in the CRD (``x-kubernetes-preserve-unknown-
fields``) rather than refusing what the embedded plane accepts; the operator validates them with
the model, as admission does.

Specs the embedded plane refuses to change after creation (:data:`IMMUTABLE_SPECS`: a Grant's,
``aviator.controlapi.grants``) carry the transition rule ``self == oldSelf``, so the API server
refuses the change too: in a cluster there is no Control API between a client and the CR.

Which kinds are CRDs: :data:`CRD_KINDS`. The others map onto upstream kinds in a cluster
(:data:`UPSTREAM_KINDS`), so that aviator does not shadow what Kubernetes already has.

Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from aviator.api.kinds import KINDS, KindInfo
from aviator.api.meta import API_VERSION

__all__ = [
    "CRD_KINDS",
    "IMMUTABLE_SPECS",
    "UPSTREAM_KINDS",
    "WIDER_WIRE_SHAPES",
    "SchemaError",
    "crd",
    "crd_name",
    "crds",
    "structural_schema",
]

CRD_KINDS: tuple[str, ...] = ("ModelDeployment", "Agent", "Policy", "Grant")
"""Kinds that are CustomResourceDefinitions in a cluster, in install order."""

UPSTREAM_KINDS: Mapping[str, str] = {
    "Replica": "Pods of the ModelDeployment's Deployment (one engine container per Pod)",
    "Node": "core/v1 Node plus the resource.k8s.io/v1 ResourceSlices its DRA drivers publish",
    "DeviceClass": "resource.k8s.io/v1 DeviceClass, installed by each DRA driver",
}
"""What each kind that is not a CRD becomes in a cluster."""

WIDER_WIRE_SHAPES: Mapping[tuple[str, str], str] = {
    ("ModelDeployment", "spec.replicas"): "An integer, or `{min, max}` bounds for autoscaling.",
}
"""(kind, dotted path) of fields whose wire form is wider than their model's JSON schema, with
the description the CRD gives them."""

IMMUTABLE_SPECS: Mapping[str, str] = {
    "Grant": "a Grant's spec is immutable once requested; request a new Grant instead "
    "(approve, deny and revoke change its status)",
}
"""Kinds whose ``spec`` may not change once created, with the API server's refusal message (the
embedded plane's wording)."""

_DROPPED_KEYS = frozenset({"title", "examples", "discriminator", "$schema", "$id"})
_SCALAR_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


class SchemaError(ValueError):
    """A model's schema cannot be expressed as a structural CRD schema; names the field."""


def crd_name(info: KindInfo) -> str:
    return f"{info.plural}.{info.group}"


def structural_schema(model: type[BaseModel], *, kind: str) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of ``model`` (a Resource of ``kind``)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})
    schema = _convert(raw, defs=defs, kind=kind, path=(), resolving=())
    properties = schema.setdefault("properties", {})
    # The envelope is the API server's: only these spellings are allowed at the root.
    properties["apiVersion"] = {"type": "string", "description": "aviator.dev/v1alpha1"}
    properties["kind"] = {"type": "string", "description": kind}
    properties["metadata"] = {"type": "object"}
    schema["required"] = sorted(set(schema.get("required", [])) - {"apiVersion", "kind"})
    return schema


def _convert(
    node: Mapping[str, Any],
    *,
    defs: Mapping[str, Any],
    kind: str,
    path: tuple[str, ...],
    resolving: tuple[str, ...],
) -> dict[str, Any]:
    dotted = ".".join(path)
    if (kind, dotted) in WIDER_WIRE_SHAPES:
        return {
            "description": WIDER_WIRE_SHAPES[(kind, dotted)],
            "x-kubernetes-preserve-unknown-fields": True,
        }
    node = dict(node)
    if "$ref" in node:
        name = str(node.pop("$ref")).rsplit("/", 1)[-1]
        if name in resolving:
            raise SchemaError(f"{kind} {dotted or '<root>'}: recursive type {name!r}")
        target = _convert(defs[name], defs=defs, kind=kind, path=path, resolving=(*resolving, name))
        # Keys next to the $ref (the field's own description, default) win over the type's.
        merged = {
            **target,
            **_convert_keywords(node, defs=defs, kind=kind, path=path, resolving=resolving),
        }
        return _finish(merged, kind=kind, path=path)
    for union in ("anyOf", "oneOf"):
        if union in node:
            return _convert_union(node, union, defs=defs, kind=kind, path=path, resolving=resolving)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise SchemaError(f"{kind} {dotted}: allOf of {len(parts)} schemas is not structural")
        inner = _convert(parts[0], defs=defs, kind=kind, path=path, resolving=resolving)
        merged = {
            **inner,
            **_convert_keywords(node, defs=defs, kind=kind, path=path, resolving=resolving),
        }
        return _finish(merged, kind=kind, path=path)
    return _finish(
        _convert_keywords(node, defs=defs, kind=kind, path=path, resolving=resolving),
        kind=kind,
        path=path,
    )


def _convert_union(
    node: dict[str, Any],
    union: str,
    *,
    defs: Mapping[str, Any],
    kind: str,
    path: tuple[str, ...],
    resolving: tuple[str, ...],
) -> dict[str, Any]:
    branches = node.pop(union)
    non_null = [b for b in branches if b.get("type") != "null"]
    nullable = len(non_null) < len(branches)
    converted = [
        _convert(b, defs=defs, kind=kind, path=path, resolving=resolving) for b in non_null
    ]
    if len(converted) == 1:
        out = converted[0]
    elif converted and all(
        "enum" in b and b.get("type") == converted[0].get("type") for b in converted
    ):
        out = {"type": converted[0]["type"], "enum": [v for b in converted for v in b["enum"]]}
    else:
        types = sorted({str(b.get("type")) for b in converted})
        raise SchemaError(
            f"{kind} {'.'.join(path)}: a union of {', '.join(types)} has no structural form; "
            "list the field in WIDER_WIRE_SHAPES"
        )
    out = {**out, **_convert_keywords(node, defs=defs, kind=kind, path=path, resolving=resolving)}
    if nullable:
        out["nullable"] = True
    return _finish(out, kind=kind, path=path)


def _convert_keywords(
    node: Mapping[str, Any],
    *,
    defs: Mapping[str, Any],
    kind: str,
    path: tuple[str, ...],
    resolving: tuple[str, ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "default" and value is None):
            continue
        if key == "properties":
            out["properties"] = {
                name: _convert(sub, defs=defs, kind=kind, path=(*path, name), resolving=resolving)
                for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = _convert(value, defs=defs, kind=kind, path=path, resolving=resolving)
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out["additionalProperties"] = _convert(
                    value, defs=defs, kind=kind, path=(*path, "*"), resolving=resolving
                )
            elif value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # False: unknown fields are pruned by the API server; the key itself is not structural.
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    return out


def _finish(out: dict[str, Any], *, kind: str, path: tuple[str, ...]) -> dict[str, Any]:
    """Complete a merged node: infer enum types, open free-form maps, key condition lists."""
    if "enum" in out and "type" not in out:
        types = {_SCALAR_TYPES.get(type(v)) for v in out["enum"]}
        if len(types) != 1 or None in types:
            raise SchemaError(f"{kind} {'.'.join(path)}: enum of mixed types {out['enum']!r}")
        out["type"] = types.pop()
    if (
        out.get("type") == "object"
        and not out.get("properties")
        and "additionalProperties" not in out
    ):
        # A map with no declared shape (``dict[str, Any]``): keep what clients send.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if path and path[-1] == "conditions" and out.get("type") == "array":
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = ["type"]
    if "type" not in out and "properties" not in out:
        # ``Any``: any JSON value, which structural schemas allow only this way.
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _printer_columns(info: KindInfo) -> list[dict[str, Any]]:
    columns = []
    for column in info.columns:
        entry: dict[str, Any] = {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
        }
        if column.priority:
            entry["priority"] = column.priority
        if column.description:
            entry["description"] = column.description
        columns.append(entry)
    return columns


def crd(info: KindInfo) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    schema = structural_schema(info.model, kind=info.kind)
    if info.kind in IMMUTABLE_SPECS:
        # A transition rule: evaluated on update only (oldSelf is the stored spec). The spec
        # node sits at a fixed path, so the API server can correlate old and new.
        schema["properties"]["spec"]["x-kubernetes-validations"] = [
            {"rule": "self == oldSelf", "message": IMMUTABLE_SPECS[info.kind]}
        ]
    version: dict[str, Any] = {
        "name": API_VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": _printer_columns(info),
    }
    if info.status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd_name(info),
            "labels": {"app.kubernetes.io/part-of": "aviator"},
        },
        "spec": {
            "group": info.group,
            "names": {
                "kind": info.kind,
                "listKind": info.list_kind,
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced" if info.namespaced else "Cluster",
            "versions": [version],
        },
    }


def crds() -> list[dict[str, Any]]:
    """The CRD of every kind in :data:`CRD_KINDS`, in that order."""
    return [crd(KINDS[kind]) for kind in CRD_KINDS]
