"""One audit record: who asked to do what to which resource, and what was decided. Pure.

A record is immutable and always serialisable: everything is checked when it is built, so the
log's writer thread never meets a record it cannot encode. Structural mistakes (an unknown
source, a non-scalar ``extra`` value, too many ``extra`` keys) raise ``ValueError`` at the call
site; over-long text is cut to a bound and marked with ``…`` rather than refused, because a long
policy message must not make a decision unrecordable.

The canonical JSON (``to_json``) has sorted keys, no whitespace, snake_case names, and every
field present (``null`` for no tokens): it is what the chain hashes, byte for byte.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args

import orjson

from aviator.api.principal import Principal, PrincipalKind

__all__ = [
    "DECISIONS",
    "MAX_EXTRA_KEYS",
    "SOURCES",
    "AuditRecord",
    "Decision",
    "ExtraValue",
    "RecordTemplate",
    "Source",
    "Stamps",
    "Tokens",
    "audit_time",
    "encode_facts",
]

Source = Literal["controlapi", "gateway", "plane"]
Decision = Literal["allow", "deny"]
ExtraValue: TypeAlias = str | int | float | bool | None

SOURCES: Final = frozenset(get_args(Source))
DECISIONS: Final = frozenset(get_args(Decision))
_PRINCIPAL_KINDS: Final = frozenset(get_args(PrincipalKind))

MAX_EXTRA_KEYS: Final = 16
"""``extra`` is for a handful of facts (status code, grant, intent), not for payloads."""
_MAX_EXTRA_KEY = 64
_MAX_EXTRA_TEXT = 256
_MAX_ID = 256
"""Principal ids are SPIFFE IDs (up to 2048 bytes by the standard, ~100 in practice); names,
actions, request ids and policy names are short. Longer text is cut."""
_MAX_RESOURCE = 512
_MAX_REASON = 1024
_MAX_POLICIES = 32
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
"""What orjson can encode; a wider int would only fail later, on the writer thread."""

_TEXT_FIELDS: Final = (
    ("principal", _MAX_ID, False),
    ("principal_kind", _MAX_ID, False),
    ("action", _MAX_ID, False),
    ("resource", _MAX_RESOURCE, False),
    ("reason", _MAX_REASON, True),
    ("request_id", _MAX_ID, True),
)
"""Text fields: name, longest kept, whether empty is allowed."""
_NO_EXTRA: Final[Mapping[str, ExtraValue]] = MappingProxyType({})

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)
"""Matched whole (``fullmatch``): ASCII digits only, nothing after the ``Z``."""


def audit_time(when: datetime | None = None) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-27T10:15:30.123456Z`` (now by default)."""
    if when is not None:
        return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return Stamps()()  # now: cheaper than through a datetime (every record is stamped)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(name: str, value: object, limit: int, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"audit record: {name} must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise ValueError(f"audit record: {name} must not be empty")
    return _cut(value, limit)


def _int_ok(value: int) -> bool:
    return _INT_MIN <= value <= _INT_MAX


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of a gateway request (usage of a finished request, or the estimate)."""

    prompt: int
    completion: int

    def __post_init__(self) -> None:
        prompt, completion = self.prompt, self.completion
        if (
            type(prompt) is int
            and type(completion) is int
            and 0 <= prompt <= _INT_MAX
            and 0 <= completion <= _INT_MAX
        ):
            return
        for name in ("prompt", "completion"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
                raise ValueError(f"audit record: tokens.{name} must be a count, not {value!r}")

    def to_dict(self) -> dict[str, int]:
        return {"completion": self.completion, "prompt": self.prompt}


def _extra(values: Mapping[str, ExtraValue]) -> Mapping[str, ExtraValue]:
    return MappingProxyType(_extra_dict(values))


def _extra_dict(values: Mapping[str, ExtraValue]) -> dict[str, ExtraValue]:
    """``values`` checked and cut (see the module docstring), as a new dict in key order."""
    if type(values) is not dict and not isinstance(values, Mapping):
        raise ValueError(f"audit record: extra must be a mapping, not {type(values).__name__}")
    if len(values) > MAX_EXTRA_KEYS:
        raise ValueError(f"audit record: extra has {len(values)} keys, at most {MAX_EXTRA_KEYS}")
    clean: dict[str, ExtraValue] = {}
    for key in sorted(values):
        value = values[key]
        # The common case, checked cheaply: a short key and a short string or a plain int.
        if (
            type(key) is str
            and 0 < len(key) <= _MAX_EXTRA_KEY
            and (
                (type(value) is str and len(value) <= _MAX_EXTRA_TEXT)
                or (type(value) is int and _INT_MIN <= value <= _INT_MAX)
            )
        ):
            clean[key] = value
            continue
        if not isinstance(key, str) or not key or len(key) > _MAX_EXTRA_KEY:
            raise ValueError(
                f"audit record: extra key {key!r} must be a string of 1-{_MAX_EXTRA_KEY} characters"
            )
        if isinstance(value, str):
            value = _cut(value, _MAX_EXTRA_TEXT)
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if not _int_ok(value):
                raise ValueError(f"audit record: extra[{key!r}] = {value} is out of range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"audit record: extra[{key!r}] must be finite, not {value}")
        else:
            raise ValueError(
                f"audit record: extra[{key!r}] must be a string, number, boolean or null, "
                f"not {type(value).__name__}"
            )
        clean[key] = value
    return clean


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One admit/refuse decision. Build with keywords; ``time`` defaults to now."""

    source: Source
    """Which process decided: ``controlapi`` (writes), ``gateway`` (requests), ``plane``."""
    principal: str
    """``Principal.id``: ``admin``, an agent's SPIFFE ID, ``apikey:<fingerprint>``, ``anonymous``.
    Never a credential."""
    principal_kind: str
    """``Principal.kind``."""
    action: str
    """The Cedar action: ``infer``, ``embed``, ``create``, ``update``, ``delete``, ``approve``…"""
    resource: str
    """What was acted on: a Cedar entity (``ModelDeployment::"default/chat"``) or ``default/chat``."""
    decision: Decision
    policies: tuple[str, ...] = ()
    """Names of the policies that decided (empty: the default deny, or no policy involved)."""
    reason: str = ""
    """Why, for a human: the policy's message, ``no policy permits``, ``token expired``…"""
    request_id: str = ""
    tokens: Tokens | None = None
    extra: Mapping[str, ExtraValue] = field(default_factory=dict, hash=False)
    """At most 16 scalar facts, e.g. ``{"status": 403, "grant": "g-12", "intent": "summarise"}``."""
    time: str = field(default_factory=audit_time)
    """When the decision was made: RFC 3339, UTC, microseconds (``audit_time``)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"audit record: source must be one of {sorted(SOURCES)}")
        if self.decision not in DECISIONS:
            raise ValueError(f"audit record: decision must be one of {sorted(DECISIONS)}")
        if type(self.time) is not str or not _TIME.fullmatch(self.time):
            raise ValueError(
                f"audit record: time {self.time!r} must be RFC 3339 UTC with microseconds "
                "(use audit_time())"
            )
        # Fast paths first (every gateway request builds a record): the loops below touch a
        # field only when it needs fixing or refusing.
        principal, kind, action = self.principal, self.principal_kind, self.action
        resource, reason, request_id = self.resource, self.reason, self.request_id
        if not (
            type(principal) is str
            and 0 < len(principal) <= _MAX_ID
            and type(kind) is str
            and 0 < len(kind) <= _MAX_ID
            and type(action) is str
            and 0 < len(action) <= _MAX_ID
            and type(resource) is str
            and 0 < len(resource) <= _MAX_RESOURCE
            and type(reason) is str
            and len(reason) <= _MAX_REASON
            and type(request_id) is str
            and len(request_id) <= _MAX_ID
        ):
            for name, limit, empty in _TEXT_FIELDS:
                value = getattr(self, name)
                if type(value) is not str or len(value) > limit or not (value or empty):
                    object.__setattr__(self, name, _text(name, value, limit, empty=empty))
        policies = self.policies
        names_ok = type(policies) is tuple and len(policies) <= _MAX_POLICIES
        if names_ok:
            for name in policies:
                if type(name) is not str or len(name) > _MAX_ID:
                    names_ok = False
                    break
        if not names_ok:
            if isinstance(policies, str) or not isinstance(policies, Iterable):
                raise ValueError("audit record: policies must be a sequence of names")
            policies = tuple(policies)
            if len(policies) > _MAX_POLICIES:
                raise ValueError(f"audit record: at most {_MAX_POLICIES} policies")
            object.__setattr__(
                self, "policies", tuple(_text("policies[]", p, _MAX_ID) for p in policies)
            )
        if self.tokens is not None and not isinstance(self.tokens, Tokens):
            raise ValueError("audit record: tokens must be a Tokens or None")
        object.__setattr__(self, "extra", _extra(self.extra) if self.extra else _NO_EXTRA)

    @classmethod
    def of(
        cls,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str] = (),
        reason: str = "",
        request_id: str = "",
        tokens: Tokens | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
        time: str | None = None,
    ) -> AuditRecord:
        """A record about ``principal`` (its id and kind; never its credentials)."""
        return cls(
            source=source,
            principal=principal.id,
            principal_kind=principal.kind,
            action=action,
            resource=resource,
            decision=decision,
            policies=tuple(policies),
            reason=reason,
            request_id=request_id,
            tokens=tokens,
            extra={} if extra is None else extra,
            time=audit_time() if time is None else time,
        )

    @property
    def known_principal_kind(self) -> bool:
        """Whether ``principal_kind`` is one of ``aviator.api.principal.PrincipalKind``."""
        return self.principal_kind in _PRINCIPAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, keys in canonical (sorted) order."""
        return {
            "action": self.action,
            "decision": self.decision,
            "extra": dict(self.extra),
            "policies": list(self.policies),
            "principal": self.principal,
            "principal_kind": self.principal_kind,
            "reason": self.reason,
            "request_id": self.request_id,
            "resource": self.resource,
            "source": self.source,
            "time": self.time,
            "tokens": None if self.tokens is None else self.tokens.to_dict(),
        }

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys (nested too), no whitespace, UTF-8."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """The inverse of ``to_dict``; ``ValueError`` for anything that is not a record."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an audit record is an object, not {type(data).__name__}")
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"audit record: unknown field(s) {sorted(unknown)}")
        missing = _REQUIRED - set(data)
        if missing:
            raise ValueError(f"audit record: missing field(s) {sorted(missing)}")
        tokens = data.get("tokens")
        if tokens is not None:
            if not isinstance(tokens, Mapping) or set(tokens) != {"prompt", "completion"}:
                raise ValueError("audit record: tokens must be {prompt, completion} or null")
            tokens = Tokens(prompt=tokens["prompt"], completion=tokens["completion"])
        policies = data.get("policies", [])
        if not isinstance(policies, list):
            raise ValueError("audit record: policies must be a list")
        return cls(
            source=data["source"],
            principal=data["principal"],
            principal_kind=data["principal_kind"],
            action=data["action"],
            resource=data["resource"],
            decision=data["decision"],
            policies=tuple(policies),
            reason=data.get("reason", ""),
            request_id=data.get("request_id", ""),
            tokens=tokens,
            extra=data.get("extra") or {},
            time=data["time"],
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> AuditRecord:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"an audit record is JSON: {exc}") from exc
        return cls.from_dict(parsed)


class Stamps:
    """``audit_time()`` for a caller that stamps many records: the date and time to the second
    are formatted once per second, the microseconds per call. Not thread-safe: one per thread
    (the gateway's event loop owns one)."""

    __slots__ = ("_prefix", "_quoted", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._quoted = b""

    def __call__(self) -> str:
        return self.at(time.time_ns() // 1000)

    def at(self, micros: int) -> str:
        """The stamp of ``micros`` microseconds since the epoch (fastest for times in order)."""
        second = micros // 1_000_000
        if second != self._second:
            self._start(second)
        return "%s.%06dZ" % (self._prefix, micros % 1_000_000)  # noqa: UP031 (cheaper here)

    def quoted(self, micros: int) -> bytes:
        """``at(micros)`` as a JSON string (the stamp holds nothing JSON would escape)."""
        second = micros // 1_000_000
        if second != self._second:
            self._start(second)
        return b'%s.%06dZ"' % (self._quoted, micros % 1_000_000)

    def _start(self, second: int) -> None:
        self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        self._quoted = b'"' + self._prefix.encode()
        self._second = second


class RecordTemplate:
    """What repeats from one record to the next — source, principal, action, resource, decision,
    policies, reason — checked and cut once, so that ``encode`` only adds what changes per
    request. ``encode`` returns exactly the bytes ``AuditRecord.to_json`` would for the same
    fields (the tests prove it), for a caller that records every request of a hot path (the
    gateway) and must not pay for a whole ``AuditRecord`` each time."""

    __slots__ = ("_parts",)

    def __init__(
        self,
        principal: Principal,
        *,
        source: Source,
        action: str,
        resource: str,
        decision: Decision,
        policies: Iterable[str] = (),
        reason: str = "",
    ) -> None:
        """``ValueError`` as ``AuditRecord`` raises it, for the same fields."""
        checked = AuditRecord.of(
            principal,
            source=source,
            action=action,
            resource=resource,
            decision=decision,
            policies=policies,
            reason=reason,
        ).to_dict()
        # The canonical JSON, cut where the fields that change go: in key order (extra,
        # request_id, time, tokens), each fixed value encoded as to_json would.
        parts: list[bytes] = []
        part = b"{"
        for key in sorted(checked):
            part += (b"," if part != b"{" else b"") + orjson.dumps(key) + b":"
            if key in _PER_REQUEST:
                parts.append(part)
                part = b""
            else:
                part += orjson.dumps(checked[key], option=orjson.OPT_SORT_KEYS)
        parts.append(part + b"}")
        self._parts = tuple(parts)

    def encode(
        self,
        *,
        request_id: str,
        time: str,
        tokens: tuple[int, int] | None = None,
        extra: Mapping[str, ExtraValue] | None = None,
    ) -> bytes:
        """The canonical JSON of the record this template makes with these fields: ``time``
        from ``audit_time`` or ``Stamps``, ``tokens`` as ``(prompt, completion)`` (a ``Tokens``
        each time would cost more than the rest). ``ValueError`` for what ``AuditRecord``
        refuses."""
        if type(time) is not str or not _TIME.fullmatch(time):
            raise ValueError(
                f"audit record: time {time!r} must be RFC 3339 UTC with microseconds "
                "(use audit_time())"
            )
        if type(request_id) is not str or len(request_id) > _MAX_ID:
            request_id = _text("request_id", request_id, _MAX_ID)
        if tokens is None:
            counts = b"null"
        else:
            prompt, completion = tokens
            if not (
                type(prompt) is int
                and type(completion) is int
                and 0 <= prompt <= _INT_MAX
                and 0 <= completion <= _INT_MAX
            ):
                Tokens(prompt=prompt, completion=completion)  # raises, saying which and why
            counts = b'{"completion":%d,"prompt":%d}' % (completion, prompt)
        head, after_extra, after_id, after_time, tail = self._parts
        return b"".join(
            (
                head,
                orjson.dumps(_extra_dict(extra), option=orjson.OPT_SORT_KEYS) if extra else b"{}",
                after_extra,
                orjson.dumps(request_id),
                after_id,
                b'"' + time.encode() + b'"',  # _TIME allows nothing JSON would escape
                after_time,
                counts,
                tail,
            )
        )


_STAMPABLE: Final = 253_402_300_800_000_000
"""Microseconds since the epoch before year 10000 (``Stamps`` then gives four year digits)."""


def encode_facts(
    templates: Mapping[int, RecordTemplate] | Sequence[RecordTemplate],
    facts: Iterable[Sequence[Any]],
    *,
    stamps: Stamps,
    rejected: Callable[[Sequence[Any], ValueError], None],
) -> list[bytes]:
    """The records of ``facts``, each ``(template number, request_id, time in µs, prompt tokens
    or None (then no tokens), completion tokens, extra or None)``: for each, exactly the bytes
    ``templates[number].encode`` gives with ``time=stamps.at(µs)`` (the tests prove it), in
    about half the time — the audit writer process renders every request a gateway admits.
    A fact ``encode`` refuses (or that is not one) goes to ``rejected`` and is left out."""
    out: list[bytes] = []
    dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
    for fact in facts:
        try:
            number, request_id, micros, prompt, completion, extra = fact
            head, after_extra, after_id, after_time, tail = templates[number]._parts
        except (ValueError, TypeError, LookupError) as exc:
            rejected(fact, ValueError(f"not the facts of a record (unknown template?): {exc!r}"))
            continue
        # What a gateway sends, checked as cheaply as encode would check it; anything else is
        # left to encode, with its cuts and messages.
        if (
            type(request_id) is str
            and len(request_id) <= _MAX_ID
            and type(micros) is int
            and 0 <= micros < _STAMPABLE
            and (
                extra is None
                or (type(extra) is dict and len(extra) <= MAX_EXTRA_KEYS and _plain(extra))
            )
        ):
            if prompt is None:
                counts = b"null"
            elif (
                type(prompt) is int
                and type(completion) is int
                and 0 <= prompt <= _INT_MAX
                and 0 <= completion <= _INT_MAX
            ):
                counts = b'{"completion":%d,"prompt":%d}' % (completion, prompt)
            else:
                counts = b""
            if counts:
                out.append(
                    b"%s%s%s%s%s%s%s%s%s"
                    % (
                        head,
                        dumps(extra, option=sort_keys) if extra else b"{}",
                        after_extra,
                        dumps(request_id),
                        after_id,
                        stamps.quoted(micros),
                        after_time,
                        counts,
                        tail,
                    )
                )
                continue
        try:
            out.append(
                templates[number].encode(
                    request_id=request_id,
                    time=stamps.at(micros),
                    tokens=None if prompt is None else (prompt, completion),
                    extra=extra,
                )
            )
        except (TypeError, ValueError, OverflowError) as exc:
            rejected(fact, exc if isinstance(exc, ValueError) else ValueError(str(exc)))
    return out


def _plain(extra: dict[Any, Any]) -> bool:
    """Whether ``_extra_dict`` would keep ``extra`` as it is: short keys, each with a short
    string or an int orjson encodes (then ``orjson.dumps`` sorting the keys is its JSON)."""
    for key, value in extra.items():
        if not (
            type(key) is str
            and 0 < len(key) <= _MAX_EXTRA_KEY
            and (
                (type(value) is str and len(value) <= _MAX_EXTRA_TEXT)
                or (type(value) is int and _INT_MIN <= value <= _INT_MAX)
            )
        ):
            return False
    return True


_PER_REQUEST: Final = ("extra", "request_id", "time", "tokens")
"""The fields a ``RecordTemplate`` leaves to ``encode``, in canonical (sorted) order."""
_FIELDS: Final = frozenset(
    {
        "action",
        "decision",
        "extra",
        "policies",
        "principal",
        "principal_kind",
        "reason",
        "request_id",
        "resource",
        "source",
        "time",
        "tokens",
    }
)
_REQUIRED: Final = frozenset(
    {"action", "decision", "principal", "principal_kind", "resource", "source", "time"}
)
