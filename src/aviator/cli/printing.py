"""What the CLI shows: kubectl-style tables, printer-column JSONPath, ages, YAML/JSON, describe.

Pure functions over wire dicts: no I/O and no clock (callers pass ``now``), so every line the
CLI prints can be tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from aviator.api import errors
from aviator.api.kinds import KindInfo, PrinterColumn

__all__ = [
    "NONE",
    "JsonPathError",
    "TableWriter",
    "age",
    "as_list",
    "cell",
    "column_values",
    "compile_jsonpath",
    "describe",
    "evaluate",
    "format_api_error",
    "human_duration",
    "object_ref",
    "parse_time",
    "render_table",
    "table",
    "to_json",
    "to_yaml",
]

NONE = "<none>"
"""What kubectl prints for a column with no value."""

MIN_WIDTH = 6
PADDING = 3
"""kubectl's tabwriter: cells at least 6 wide, 3 spaces between columns."""


# -- names and errors ----------------------------------------------------------------------------


def object_ref(kind: KindInfo, name: str) -> str:
    """``modeldeployment.aviator.dev/chat``, the way kubectl names an object in its output."""
    return f"{kind.singular}.{kind.group}/{name}"


def format_api_error(exc: errors.ApiError, *, context: str | None = None) -> str:
    """``Error from server (Reason): [context: ]message`` plus one ``  field: message`` line per cause."""
    head = f"Error from server ({exc.reason}): "
    if context:
        head += f"{context}: "
    return head + str(exc)


# -- JSONPath (the subset printer columns use) ---------------------------------------------------


class JsonPathError(ValueError):
    """An expression outside the supported subset."""


@dataclass(frozen=True, slots=True)
class _Key:
    name: str


@dataclass(frozen=True, slots=True)
class _All:
    pass


@dataclass(frozen=True, slots=True)
class _Index:
    index: int


@dataclass(frozen=True, slots=True)
class _Filter:
    path: tuple[_Key, ...]
    negate: bool
    value: str


_Step = _Key | _All | _Index | _Filter

_STEP = re.compile(
    r"""
      \.(?P<key>[A-Za-z0-9_-]+)
    | \[\s*(?P<qk>['"])(?P<qkey>.*?)(?P=qk)\s*\]
    | \[\s*(?P<star>\*)\s*\]
    | \[\s*(?P<index>-?\d+)\s*\]
    | \[\s*\?\(\s*@(?P<fpath>(?:\.[A-Za-z0-9_-]+)+)\s*(?P<op>==|!=)\s*(?P<fq>['"])(?P<value>.*?)(?P=fq)\s*\)\s*\]
    """,
    re.VERBOSE,
)


def compile_jsonpath(expr: str) -> tuple[_Step, ...]:
    """Parse ``.a.b``, ``.a[*].b``, ``.a[0]``, ``['k.with.dots']``, ``[?(@.t=='X')]`` (optionally in ``{}``)."""
    text = expr.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    steps: list[_Step] = []
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise JsonPathError(f"unsupported JSONPath {expr!r} at position {pos}: {text[pos:]!r}")
        if m["key"] is not None:
            steps.append(_Key(m["key"]))
        elif m["qkey"] is not None:
            steps.append(_Key(m["qkey"]))
        elif m["star"] is not None:
            steps.append(_All())
        elif m["index"] is not None:
            steps.append(_Index(int(m["index"])))
        else:
            path = tuple(_Key(part) for part in m["fpath"].split(".")[1:])
            steps.append(_Filter(path=path, negate=m["op"] == "!=", value=m["value"]))
        pos = m.end()
    if not steps:
        raise JsonPathError(f"empty JSONPath {expr!r}")
    return tuple(steps)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=False)
    return str(value)


def _walk(values: Iterable[Any], steps: Sequence[_Step]) -> list[Any]:
    current = list(values)
    for step in steps:
        nxt: list[Any] = []
        for value in current:
            if isinstance(step, _Key):
                if isinstance(value, dict) and step.name in value:
                    nxt.append(value[step.name])
            elif isinstance(step, _All):
                if isinstance(value, list):
                    nxt.extend(value)
                elif isinstance(value, dict):
                    nxt.extend(value.values())
            elif isinstance(step, _Index):
                if isinstance(value, list) and -len(value) <= step.index < len(value):
                    nxt.append(value[step.index])
            elif isinstance(value, list):
                for element in value:
                    found = _walk([element], step.path)
                    if not found:
                        continue
                    equal = _scalar_text(found[0]) == step.value
                    if equal != step.negate:
                        nxt.append(element)
        current = nxt
    return current


def evaluate(obj: Mapping[str, Any], expr: str) -> list[Any]:
    """Every value ``expr`` selects in ``obj`` (empty when the path is absent)."""
    return _walk([obj], compile_jsonpath(expr))


# -- time ----------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime, or None when absent or unparseable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's ``HumanDuration``: 45s, 3m20s, 15m, 2h5m, 10h, 3d4h, 20d, 2y30d."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years, rest = divmod(days, 365)
    if years < 8:
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(value: Any, *, now: datetime) -> str:
    """How long ago ``value`` (an RFC 3339 timestamp) was, as kubectl prints it; ``<none>`` if absent."""
    when = parse_time(value)
    if when is None:
        return NONE if value in (None, "") else "<invalid>"
    return human_duration((now - when).total_seconds())


# -- tables --------------------------------------------------------------------------------------


def column_values(obj: Mapping[str, Any], column: PrinterColumn) -> list[Any]:
    return [v for v in evaluate(obj, column.json_path) if v is not None]


def cell(obj: Mapping[str, Any], column: PrinterColumn, *, now: datetime) -> str:
    """The text of one printer column for ``obj``."""
    values = column_values(obj, column)
    if not values:
        return NONE
    if column.type == "date":
        return age(values[0], now=now)
    return ",".join(_scalar_text(v) for v in values)


def table(
    kind: KindInfo,
    items: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    wide: bool = False,
    all_namespaces: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of ``aviator get``: [NAMESPACE,] NAME, then the kind's printer columns."""
    columns = [c for c in kind.columns if c.priority == 0 or wide]
    headers = (
        (["NAMESPACE"] if all_namespaces else []) + ["NAME"] + [c.name.upper() for c in columns]
    )
    rows: list[list[str]] = []
    for obj in items:
        meta = obj.get("metadata", {})
        row = [str(meta.get("namespace") or "")] if all_namespaces else []
        row.append(str(meta.get("name", "")))
        row.extend(cell(obj, c, now=now) for c in columns)
        rows.append(row)
    return headers, rows


@dataclass(slots=True)
class TableWriter:
    """Aligns rows like kubectl's tabwriter, remembering widths so streamed rows (``--watch``)
    stay aligned with those printed before."""

    widths: list[int] = field(default_factory=list)

    def render(self, rows: Sequence[Sequence[str]]) -> list[str]:
        for row in rows:
            for i, text in enumerate(row):
                need = max(len(text) + PADDING, MIN_WIDTH)
                if i < len(self.widths):
                    self.widths[i] = max(self.widths[i], need)
                else:
                    self.widths.append(need)
        lines = []
        for row in rows:
            padded = [text.ljust(self.widths[i]) for i, text in enumerate(row)]
            lines.append("".join(padded).rstrip())
        return lines


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The whole table as text (no trailing newline)."""
    return "\n".join(TableWriter().render([headers, *rows]))


# -- documents -----------------------------------------------------------------------------------


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(
        obj, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120
    )


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False)


def as_list(items: Sequence[Mapping[str, Any]], *, resource_version: str = "") -> dict[str, Any]:
    """The ``v1 List`` kubectl prints for several objects (``apply -f`` reads it back)."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": resource_version},
        "items": list(items),
    }


# -- describe ------------------------------------------------------------------------------------


def _fields(pairs: Sequence[tuple[str, list[str]]]) -> list[str]:
    """``Label:  value`` lines, labels aligned; extra value lines indented under the first."""
    width = max(len(label) for label, _ in pairs) + 3
    lines: list[str] = []
    for label, values in pairs:
        shown = values or [NONE]
        lines.append(f"{label}:".ljust(width) + shown[0])
        lines.extend(" " * width + more for more in shown[1:])
    return lines


def _block(title: str, data: Any) -> list[str]:
    if data in (None, {}, []):
        return [f"{title}:  {NONE}"]
    body = to_yaml(data).rstrip("\n").splitlines()
    return [f"{title}:", *("  " + line for line in body)]


def _sub_table(title: str, *, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return [f"{title}:  {NONE}"]
    return [f"{title}:", *("  " + line for line in render_table(headers, rows).splitlines())]


def _when(value: Any, *, now: datetime) -> str:
    if parse_time(value) is None:
        return NONE
    return f"{value} ({age(value, now=now)} ago)"


def _condition_rows(conditions: Sequence[Mapping[str, Any]], *, now: datetime) -> list[list[str]]:
    return [
        [
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason") or ""),
            str(c.get("message") or ""),
            age(c.get("lastTransitionTime"), now=now),
        ]
        for c in conditions
    ]


def _condition_status(obj: Mapping[str, Any], condition: str) -> str:
    found = evaluate(obj, f".status.conditions[?(@.type=='{condition}')].status")
    return str(found[0]) if found else NONE


def _last_exit(last: Mapping[str, Any] | None, *, now: datetime) -> list[str]:
    if not last:
        return []
    parts = []
    if last.get("code") is not None:
        parts.append(f"code {last['code']}")
    if last.get("signal") is not None:
        parts.append(f"signal {last['signal']}")
    if last.get("reason"):
        parts.append(str(last["reason"]))
    if parse_time(last.get("finishedAt")) is not None:
        parts.append(f"{age(last['finishedAt'], now=now)} ago")
    return [", ".join(parts) or "unknown"]


def describe(
    kind: KindInfo,
    obj: Mapping[str, Any],
    *,
    now: datetime,
    replicas: Sequence[Mapping[str, Any]] | None = None,
    log_path: str | None = None,
    log_exists: bool = False,
) -> str:
    """The human-readable page of ``aviator describe``.

    ``replicas`` (for a ModelDeployment) are listed with phase, readiness, restarts and endpoint;
    ``log_path`` (for a Replica) is shown with whether the file exists yet.
    """
    meta: Mapping[str, Any] = obj.get("metadata", {})
    status: dict[str, Any] = dict(obj.get("status") or {})
    conditions = list(status.pop("conditions", None) or [])
    last_exit = status.pop("lastExit", None)
    # Shown as tables of their own below, not as YAML.
    endpoints = status.pop("endpoints", None) if replicas is not None else None
    placement = status.pop("placement", None) or []
    paths = status.pop("alternatives", None) or []
    capacity = status.pop("capacity", None)
    labels = [f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())]
    annotations = [f"{k}: {v}" for k, v in sorted((meta.get("annotations") or {}).items())]
    owners = [
        f"{ref.get('kind')}/{ref.get('name')}" + (" (controller)" if ref.get("controller") else "")
        for ref in meta.get("ownerReferences") or []
    ]
    generation = str(meta.get("generation", NONE))
    observed = status.get("observedGeneration")
    if observed is not None:
        generation += f" (observed {observed})"
    pairs: list[tuple[str, list[str]]] = [("Name", [str(meta.get("name", ""))])]
    if kind.namespaced:
        pairs.append(("Namespace", [str(meta.get("namespace") or "")]))
    pairs += [
        ("Kind", [kind.kind]),
        ("API Version", [str(obj.get("apiVersion", kind.api_version))]),
        ("Labels", labels),
        ("Annotations", annotations),
        ("Owner", owners),
        ("Created", [_when(meta.get("creationTimestamp"), now=now)]),
    ]
    if meta.get("deletionTimestamp"):
        pairs.append(("Terminating", [f"since {_when(meta['deletionTimestamp'], now=now)}"]))
    pairs += [
        ("Finalizers", [str(f) for f in meta.get("finalizers") or []]),
        ("Generation", [generation]),
        ("Resource Version", [str(meta.get("resourceVersion", NONE))]),
        ("UID", [str(meta.get("uid", NONE))]),
    ]
    lines = _fields(pairs)
    lines += _block("Spec", obj.get("spec"))
    lines += _block("Status", status)
    if log_path is not None or last_exit is not None:
        extra: list[tuple[str, list[str]]] = [("Last Exit", _last_exit(last_exit, now=now))]
        if log_path is not None:
            extra.append(("Log", [log_path if log_exists else f"{log_path} (not written yet)"]))
        lines += _fields(extra)
    lines += _sub_table(
        "Conditions",
        headers=["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION"],
        rows=_condition_rows(conditions, now=now),
    )
    if capacity:
        lines.append(
            f"Capacity Plan:  {capacity.get('replicas', NONE)} replica(s); {capacity.get('message', '')}"
        )
        rows = [
            [str(p.get("request", "")), str(p.get("driver") or NONE), str(p.get("product") or NONE),
             f"{float(p.get('replicaRps', 0.0)):.3g}", str(p.get("replicas", 0))]
            for p in capacity.get("paths") or []
        ]  # fmt: skip
        headers = ["REQUEST", "DRIVER", "PRODUCT", "REQ/S PER REPLICA", "REPLICAS"]
        lines += ["  " + line for line in render_table(headers, rows).splitlines()] if rows else []
    if paths:
        lines += _sub_table(
            "Execution Paths",
            headers=["REQUEST", "DRIVER", "PRODUCT", "COUNT", "DEVICES", "FREE", "FITS NOW", "ENGINES"],
            rows=[
                [str(p.get("request", "")), str(p.get("driver", "")), str(p.get("product") or NONE),
                 str(p.get("count", "")), str(p.get("devices", "")), str(p.get("free", "")),
                 str(p.get("fitsNow", "")), ",".join(p.get("engines") or []) or NONE]
                for p in paths
            ],
        )  # fmt: skip
    if replicas is not None:
        where = {str(p.get("replica")): p for p in placement}
        rows = [
            [
                str(r.get("metadata", {}).get("name", "")),
                str((r.get("status") or {}).get("phase") or NONE),
                _condition_status(r, "Ready"),
                str((r.get("status") or {}).get("restarts", 0)),
                str((r.get("spec") or {}).get("node") or NONE),
                ",".join(where.get(str(r.get("metadata", {}).get("name")), {}).get("devices") or [])
                or NONE,
                str((r.get("spec") or {}).get("engine") or NONE),
                str((r.get("status") or {}).get("endpoint") or NONE),
                age(r.get("metadata", {}).get("creationTimestamp"), now=now),
            ]
            for r in replicas
        ]
        lines += _sub_table(
            "Replicas",
            headers=[
                "NAME",
                "PHASE",
                "READY",
                "RESTARTS",
                "NODE",
                "DEVICES",
                "ENGINE",
                "ENDPOINT",
                "AGE",
            ],
            rows=rows,
        )
    elif endpoints:
        lines += _block("Endpoints", endpoints)
    return "\n".join(lines)
