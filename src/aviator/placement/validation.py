"""Admission checks that need placement knowledge: every CEL selector must compile.

The Control API runs these after the schema check, so an invalid expression is refused with its
field path and CEL's message, and selectors are compiled once, before anything is stored.
"""

from __future__ import annotations

from typing import Any

from aviator.api import kinds
from aviator.api.errors import FieldError
from aviator.placement.cel import SelectorError, compile_selector


def _check(expression: str, field: str, out: list[FieldError]) -> None:
    try:
        compile_selector(expression)
    except SelectorError as exc:
        out.append(exc.to_field_error(field))


def selector_errors(kind: kinds.KindInfo, obj: dict[str, Any]) -> list[FieldError]:
    """Field errors for selectors of ``obj`` (already schema-valid) that do not compile."""
    out: list[FieldError] = []
    spec = obj.get("spec") or {}
    if kind is kinds.DEVICE_CLASS:
        for i, selector in enumerate(spec.get("selectors") or ()):
            _check(selector["cel"]["expression"], f"spec.selectors[{i}].cel.expression", out)
    elif kind is kinds.MODEL_DEPLOYMENT and spec.get("accelerators"):
        claim = spec["accelerators"]
        for i, expression in enumerate(claim.get("selectors") or ()):
            _check(expression, f"spec.accelerators.selectors[{i}]", out)
        for j, alternative in enumerate(claim.get("firstAvailable") or ()):
            for i, expression in enumerate(alternative.get("selectors") or ()):
                _check(expression, f"spec.accelerators.firstAvailable[{j}].selectors[{i}]", out)
    return out
