"""Admission: turn an untrusted body into a valid, defaulted object, or say precisely why not.

Pure functions. The store owns server-managed metadata (uid, resourceVersion, generation,
timestamps); admission checks what the user may write and applies defaults.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from aviator.api.errors import BadRequest, FieldError, Invalid
from aviator.api.kinds import KindInfo
from aviator.api.meta import GROUP_VERSION, dns1123_label_problem, dns1123_subdomain_problem


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "engineArgs", 2)`` → ``spec.engineArgs[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "constrained-")) or "[" in part:
            continue  # pydantic's internal validator steps, not user-facing fields
        else:
            out += f".{part}" if out else part
    return out


def _describe_input(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def errors_from_pydantic(
    exc: ValidationError, *, prefix: tuple[str, ...] = ()
) -> tuple[FieldError, ...]:
    causes: list[FieldError] = []
    for err in exc.errors(include_url=False):
        path = field_path((*prefix, *err["loc"]))
        kind = err["type"]
        if kind == "extra_forbidden":
            causes.append(FieldError(path, "unknown field", "FieldValueNotSupported"))
        elif kind == "missing":
            causes.append(FieldError(path, "required value", "FieldValueRequired"))
        elif kind in ("value_error", "assertion_error"):
            msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
            causes.append(FieldError(path, msg))
        else:
            causes.append(FieldError(path, f"{err['msg']} (got {_describe_input(err['input'])})"))
    return tuple(causes)


def validate_name(name: str, *, kind: KindInfo) -> FieldError | None:
    problem = dns1123_label_problem(name) if kind.name_is_label else dns1123_subdomain_problem(name)
    return FieldError("metadata.name", problem) if problem else None


def admit(
    body: Any,
    *,
    kind: KindInfo,
    namespace: str | None,
    name: str | None = None,
) -> dict[str, Any]:
    """Validate and default ``body`` for a create or replace of ``kind``.

    ``namespace`` and ``name`` come from the request path (``name`` only for replace); the body
    must agree with them. Returns the normalized object (camelCase, defaults applied, status
    reset — status is written only through the status subresource).
    Raises ``BadRequest`` for a body that is not an object and ``Invalid`` with field causes
    for everything else.
    """
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object for {kind.kind}, got {type(body).__name__}")
    causes: list[FieldError] = []
    if body.get("apiVersion", GROUP_VERSION) != GROUP_VERSION:
        causes.append(
            FieldError("apiVersion", f"expected {GROUP_VERSION!r}, got {body.get('apiVersion')!r}")
        )
    if body.get("kind", kind.kind) != kind.kind:
        causes.append(FieldError("kind", f"expected {kind.kind!r}, got {body.get('kind')!r}"))
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        raise Invalid(
            f"{kind.kind} is invalid",
            kind=kind.kind,
            causes=(
                FieldError(
                    "metadata",
                    "required value: an object with at least `name`",
                    "FieldValueRequired",
                ),
            ),
        )
    obj_name = metadata.get("name")
    if not isinstance(obj_name, str) or not obj_name:
        causes.append(FieldError("metadata.name", "required value", "FieldValueRequired"))
        obj_name = None
    elif (bad := validate_name(obj_name, kind=kind)) is not None:
        causes.append(bad)
    if name is not None and obj_name is not None and obj_name != name:
        causes.append(
            FieldError(
                "metadata.name", f"must match the name in the path ({name!r}), got {obj_name!r}"
            )
        )
    obj_ns = metadata.get("namespace")
    if kind.namespaced:
        if obj_ns is not None and obj_ns != namespace:
            causes.append(
                FieldError(
                    "metadata.namespace",
                    f"must match the namespace in the path ({namespace!r}), got {obj_ns!r}",
                )
            )
    elif obj_ns:
        causes.append(
            FieldError(
                "metadata.namespace", f"{kind.kind} is cluster-scoped and takes no namespace"
            )
        )

    candidate = {**body, "apiVersion": GROUP_VERSION, "kind": kind.kind}
    candidate["metadata"] = {**metadata, "namespace": namespace if kind.namespaced else None}
    candidate.pop("status", None)
    try:
        model = kind.model.model_validate(candidate)
    except ValidationError as exc:
        causes.extend(
            c
            for c in errors_from_pydantic(exc)
            if c.field != "metadata.name" or obj_name is not None
        )
        model = None
    if causes or model is None:
        raise Invalid(
            f"{kind.kind} {obj_name or '(unnamed)'!r} is invalid",
            kind=kind.kind,
            name=obj_name,
            causes=tuple(causes),
        )
    return model.to_raw()


def admit_status(body: Any, *, kind: KindInfo, current: dict[str, Any]) -> dict[str, Any]:
    """Validate a status write: returns ``current`` with only its status replaced."""
    if not isinstance(body, dict):
        raise BadRequest(
            f"expected a JSON object for {kind.kind} status, got {type(body).__name__}"
        )
    status = body.get("status", {})
    candidate = {**current, "status": status}
    try:
        model = kind.model.model_validate(candidate)
    except ValidationError as exc:
        raise Invalid(
            f"{kind.kind} {current['metadata']['name']!r} status is invalid",
            kind=kind.kind,
            name=current["metadata"]["name"],
            causes=errors_from_pydantic(exc),
        ) from None
    return model.to_raw()
