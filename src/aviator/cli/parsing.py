"""Pure parsing of command arguments: object references, durations, ``--for`` conditions.

Errors are ``UsageError`` (the command turns them into exit code 2) except an unknown kind,
which is ``NotFound`` from ``aviator.api.kinds.resolve`` (exit code 1, as kubectl does).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aviator.api.errors import AviatorError
from aviator.api.kinds import KindInfo, resolve

__all__ = [
    "ObjectRef",
    "UsageError",
    "WaitFor",
    "condition_met",
    "find_condition",
    "parse_duration",
    "parse_refs",
    "parse_wait_for",
]


class UsageError(AviatorError):
    """The command line itself is wrong (exit code 2)."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    kind: KindInfo
    name: str


def parse_refs(
    args: Sequence[str], *, names_required: bool
) -> tuple[list[KindInfo], list[ObjectRef]]:
    """``KIND [NAME...]`` or ``KIND/NAME...`` (kubectl's two forms).

    Returns the kinds involved (in order, without repeats) and the named objects (empty when
    only a kind was given). ``resolve`` raises ``NotFound`` for an unknown kind.
    """
    if not args:
        raise UsageError("specify a kind, e.g. `modeldeployment`, `md`, or KIND/NAME")
    if "/" in args[0]:
        refs = []
        for arg in args:
            kind_name, sep, name = arg.partition("/")
            if not sep or not kind_name or not name or "/" in name:
                raise UsageError(
                    f"{arg!r}: with the KIND/NAME form every argument must be KIND/NAME "
                    "(there is no need to give the kind separately)"
                )
            refs.append(ObjectRef(resolve(kind_name), name))
        kinds: list[KindInfo] = []
        for ref in refs:
            if ref.kind not in kinds:
                kinds.append(ref.kind)
        return kinds, refs
    kind = resolve(args[0])
    for name in args[1:]:
        if "/" in name or not name:
            raise UsageError(f"{name!r}: give either KIND NAME... or KIND/NAME..., not both")
    if names_required and len(args) < 2:
        raise UsageError(f"specify the name of the {kind.singular} (KIND NAME or KIND/NAME)")
    return [kind], [ObjectRef(kind, name) for name in args[1:]]


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``90s``, ``2m``, ``500ms``, ``1h``, ``1m30s`` or plain seconds (``45``, ``2.5``) → seconds."""
    value = text.strip().lower()
    if not value:
        raise UsageError("empty duration; use e.g. 90s, 2m, 500ms, 1h or plain seconds")
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        while pos < len(value):
            m = _DURATION_PART.match(value, pos)
            if m is None:
                raise UsageError(
                    f"invalid duration {text!r}; use e.g. 90s, 2m, 500ms, 1h, 1m30s or plain seconds"
                ) from None
            seconds += float(m[1]) * _UNIT_SECONDS[m[2]]
            pos = m.end()
    if seconds < 0 or not math.isfinite(seconds):
        raise UsageError(f"invalid duration {text!r}: must be a finite, non-negative time")
    return seconds


@dataclass(frozen=True, slots=True)
class WaitFor:
    """What ``aviator wait --for`` waits for: deletion, or a condition with a status."""

    delete: bool = False
    condition: str = ""
    status: str = "True"

    def describe(self) -> str:
        return "deletion" if self.delete else f"condition {self.condition}={self.status}"


def parse_wait_for(text: str) -> WaitFor:
    """``delete``, ``condition=Available``, ``condition=Available=False`` (status case-insensitive)."""
    value = text.strip()
    if value.lower() == "delete":
        return WaitFor(delete=True)
    head, sep, rest = value.partition("=")
    if head.lower() == "condition" and sep:
        condition, _, status = rest.partition("=")
        if condition:
            wanted = status or "True"
            canonical = {"true": "True", "false": "False", "unknown": "Unknown"}.get(
                wanted.lower(), wanted
            )
            return WaitFor(condition=condition, status=canonical)
    raise UsageError(
        f"invalid --for {text!r}: use `delete`, `condition=TYPE` or `condition=TYPE=True|False|Unknown`"
    )


def find_condition(obj: Mapping[str, Any], condition: str) -> Mapping[str, Any] | None:
    """The named condition of ``obj``'s status (type compared case-insensitively), if any."""
    status = obj.get("status") or {}
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and str(cond.get("type", "")).lower() == condition.lower():
            return cond
    return None


def condition_met(obj: Mapping[str, Any], *, condition: str, status: str) -> bool:
    """True when the condition has ``status`` and reflects the current spec.

    Like kubectl: the condition's ``observedGeneration`` (else ``status.observedGeneration``), when
    present, must have caught up with ``metadata.generation``, so a wait right after an apply
    does not succeed on the previous generation's status.
    """
    cond = find_condition(obj, condition)
    if cond is None or str(cond.get("status", "")).lower() != status.lower():
        return False
    observed = cond.get("observedGeneration")
    if observed is None:
        observed = (obj.get("status") or {}).get("observedGeneration")
    generation = (obj.get("metadata") or {}).get("generation")
    return observed is None or generation is None or int(observed) >= int(generation)
