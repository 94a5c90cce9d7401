"""Kubernetes label selectors: parse once, match many. Pure.

Supported grammar (as ``kubectl -l``): ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist), joined by commas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aviator.api.errors import BadRequest

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case "=":
                return present and labels[self.key] in self.values
            case "!=":
                return not present or labels[self.key] not in self.values
            case "in":
                return present and labels[self.key] in self.values
            case "notin":
                return not present or labels[self.key] not in self.values
            case "exists":
                return present
            case "!":
                return not present
        return False  # pragma: no cover - exhaustive above


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in (s.strip() for s in parts) if p]


def parse(text: str | None) -> Selector:
    """Parse a selector string; raise ``BadRequest`` naming the bad clause."""
    if not text or not text.strip():
        return Selector()
    reqs: list[Requirement] = []
    for clause in _split_top_level(text):
        if m := _EQ_RE.match(clause):
            key, op, value = m.groups()
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", frozenset({value})))
            continue
        if m := _SET_RE.match(clause):
            bang, key, op, values = m.groups()
            if op:
                if bang:
                    raise BadRequest(
                        f"invalid label selector clause {clause!r}: '!' cannot be combined with {op}"
                    )
                vals = frozenset(v.strip() for v in values.split(",") if v.strip())
                reqs.append(Requirement(key, "in" if op == "in" else "notin", vals))
            else:
                reqs.append(Requirement(key, "!" if bang else "exists"))
            continue
        raise BadRequest(
            f"invalid label selector clause {clause!r}: expected key=value, key!=value, "
            "key in (a,b), key notin (a,b), key or !key"
        )
    return Selector(tuple(reqs))


def from_match_labels(labels: Mapping[str, str]) -> Selector:
    return Selector(tuple(Requirement(k, "=", frozenset({v})) for k, v in sorted(labels.items())))
