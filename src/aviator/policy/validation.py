"""Admission checks for governance objects, in the Control API's ``checks`` signature
(``(KindInfo, admitted object) -> field errors``; see ``aviator.placement.validation``).

- ``policy_errors``: ``spec.cedar`` must parse, hold no templates, validate against the schema
  (Cedar's own messages), and use ``@approval`` only with ``"auto"`` or ``"human"``.
- ``grant_errors``: every action must apply to every resource named (``infer`` on a Node is
  refused, with the path of the resource). Unknown actions, malformed references and duration
  bounds are refused earlier, by the Grant model itself, with their field paths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cedarpy

from aviator.api import kinds
from aviator.api.errors import FieldError
from aviator.api.grant import parse_ref
from aviator.policy import grants, schema

__all__ = ["CHECKS", "grant_errors", "policy_errors", "policy_problems"]

FIELD = "spec.cedar"


def policy_problems(text: str) -> list[str]:
    """Why Cedar ``text`` cannot be a Policy (empty when it can): Cedar's messages, prefixed with
    the statement (``policy #2``, and its ``@id`` when it has one) where Cedar names one."""
    try:
        est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        return [f"Cedar could not parse the policy: {exc}"]
    statements = est.get("staticPolicies") or {}
    if not statements:
        return ["contains no Cedar statement"]
    if est.get("templates"):
        return ["templates (?principal, ?resource) are not supported; write static policies"]
    problems: list[str] = []
    for pid, body in statements.items():
        value = (body.get("annotations") or {}).get(grants.APPROVAL)
        if value is not None and value not in grants.APPROVAL_VALUES:
            problems.append(
                f'{_where(pid, body)}: @approval must be "auto" or "human" (got {value!r})'
            )
    result = cedarpy.validate_policies(text, schema.schema_handle())
    for error in result.errors:
        body = statements.get(error.policy_id)
        where = _where(error.policy_id, body) if body is not None else ""
        problems.append(f"{where}: {error.error}" if where else error.error)
    return problems


def _where(pid: str, body: dict[str, Any]) -> str:
    number = int(pid.removeprefix("policy")) + 1
    given = (body.get("annotations") or {}).get("id")
    return f'policy #{number} (@id "{given}")' if given is not None else f"policy #{number}"


def policy_errors(kind: kinds.KindInfo, obj: dict[str, Any]) -> list[FieldError]:
    """Field errors for a Policy whose Cedar text does not parse or validate."""
    if kind.kind != "Policy":
        return []
    text = (obj.get("spec") or {}).get("cedar")
    if not isinstance(text, str):
        return []
    return [FieldError(FIELD, problem) for problem in policy_problems(text)]


def grant_errors(kind: kinds.KindInfo, obj: dict[str, Any]) -> list[FieldError]:
    """Field errors for a Grant whose actions do not apply to its resources."""
    if kind.kind != "Grant":
        return []
    spec = obj.get("spec") or {}
    namespace = (obj.get("metadata") or {}).get("namespace")
    actions: Sequence[str] = spec.get("actions") or ()
    out: list[FieldError] = []
    for i, ref in enumerate(spec.get("resources") or ()):
        try:
            entity_type, _ = parse_ref(str(ref), namespace=namespace)
        except ValueError as exc:
            out.append(FieldError(f"spec.resources[{i}]", str(exc)))
            continue
        misfits = [a for a in actions if not schema.grant_applies(a, entity_type)]
        if misfits:
            fits = sorted(
                {t for a in misfits for t in schema.APPLIES_TO[a][1]}
                | ({"Namespace"} if entity_type != "Namespace" else set())
            )
            out.append(
                FieldError(
                    f"spec.resources[{i}]",
                    f"{', '.join(misfits)} does not apply to {entity_type} (applies to "
                    f"{', '.join(fits)})",
                )
            )
    return out


CHECKS = (policy_errors, grant_errors)
"""Both checks, for ``build_app(checks=(..., *CHECKS))``."""
