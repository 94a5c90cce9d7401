"""Compile policies once per change; decide each request against the compiled handle.

**Compiling.** ``PolicyEngine.compile`` parses every Policy's Cedar text (refusing the whole set if
one fails: skipping a ``forbid`` would widen access), turns every grant that is ``Active`` at
``now`` into a generated ``permit`` (``grant_policy``), builds the entity graph, and returns an
immutable ``CompiledPolicies``. Cedar numbers statements ``policy0``… per parse and ignores ``@id``
for that; so each statement is compiled with an ``@id`` of ours — ``<policy-name>#<index>`` for a
Policy's statements, ``grant:<namespace>/<name>`` for a grant — and a decision maps Cedar's
``id_annotations_by_reason`` back to it (a Policy's own ``@id`` is kept for labels).

**Slicing.** Cedar evaluates every statement of the set it is given (about 1.5-3 µs each here),
so a request is evaluated against only the statements whose *scope* can match it: the action
(``action == …``, ``in [...]``, ``in Action::"inference"``), the principal and the resource
(``== X``, ``in X`` by the entity graph, ``is T``). Dropping a statement whose scope cannot match
changes no decision: its condition is never reached. The slice depends only on the action, which
scope entities the principal and resource are (or are in), and their types, so slices are built on
first use per such key and shared; every grant (``principal == Agent::"…"``) is seen by its agent
only, added to the shared slice with Cedar's cheap ``with_added_str``.

**Trimming the context.** Cedar's cost of building a request grows with the context it is given,
so each slice passes Cedar only the context attributes its statements read (``context.hour``,
``context has intent``); a statement that uses ``context`` whole gets all of it. An attribute no
statement reads cannot change a decision.

**Caching.** The engine remembers parsed Policy texts, validation results, the sliced policy sets
and the last entity graph across compiles, so a recompile after one grant or one Policy changed
re-parses only what changed.

**Deciding.** ``CompiledPolicies.decide``:

- The admin principal is allowed without evaluation: it is the plane's root credential, and a
  policy must not be able to lock it out of repairing policies.
- The context is checked against the action's context type in Python (``schema.context_problem``);
  a violation, like Cedar's ``NoDecision``, counts as deny and is reported (``no_decision``).
- Cedar decides: a satisfied ``forbid`` wins, else a satisfied ``permit`` allows, else default deny.
- Declared intent: on ``infer``/``embed``, a context naming a grant (``context.grant``), or a purpose
  (``context.intent``) that an active grant of the principal declares, scopes the request to that
  grant: it is allowed only if such a grant is among the permitting statements, even when a
  standing policy would allow it. A named grant that is not active denies.

**Remembering decisions.** A decision is a pure function of the compiled set, the principal, the
action, the resource and the context, so each compiled set remembers the decisions about entities
of its graph (bounded, oldest out first; a write's overlaid object is never remembered). The
context part of the key is its *class* for the slice: a Long only compared with literals counts by
its position among them (``estimatedTokens`` 200 and 1500 are alike for ``<= 16000``), a String
only compared by ``==``/``!=`` with literals by which one it equals, anything else by value; the
declared intent and grant always by value. Contexts of one class get the same answer from every
statement of the slice, errors included, so a remembered decision is the one Cedar would give
(``tests/unit/policy/test_decision_cache.py`` checks it against a set that remembers nothing).
Reading the memo takes no lock (one dict lookup); adding to it does.

Decisions pass pre-parsed handles and no schema to Cedar (the context check above stands in for
Cedar's request validation, which costs more than the decision), so the request path parses
nothing but the request.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, NamedTuple, TypeVar

import cedarpy
import orjson

from aviator.api import grant as grant_api
from aviator.api.principal import Principal
from aviator.policy import entities as ent
from aviator.policy import schema
from aviator.policy.lane import InferenceLane, among

__all__ = [
    "CompileError",
    "CompiledPolicies",
    "Decision",
    "PolicyEngine",
    "Statement",
    "grant_policy",
    "inference_context",
]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request."""

    allowed: bool
    decided_by: tuple[str, ...] = ()
    """Policy object names (and ``grant:<ns>/<name>`` for grants) whose statements decided: the
    permits that allowed, or the forbids that denied; empty for a default deny."""
    reason: str = ""
    """One line for humans and the audit log."""
    no_decision: bool = False
    """Cedar could not decide (a context that violates the schema, broken input): counted as deny."""
    statements: tuple[str, ...] = ()
    """The statement ids behind ``decided_by`` (``baseline#2``, ``grant:team-a/q3``)."""
    errors: tuple[str, ...] = ()
    """Evaluation errors Cedar reported (a statement that errors is skipped, as Cedar specifies)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a statement's principal or resource scope requires (``All`` requires nothing)."""

    eq: ent.EntityUid | None = None
    """``== E``."""
    within: ent.EntityUid | None = None
    """``in E`` (also ``is T in E``): E itself or a descendant."""
    type: str | None = None
    """``is T``."""

    def admits(self, uid: ent.EntityUid, within: frozenset[ent.EntityUid]) -> bool:
        """Whether ``uid`` can satisfy the scope; ``within`` holds the scope entities ``uid`` is or
        is in."""
        return (
            (self.eq is None or self.eq == uid)
            and (self.within is None or self.within in within)
            and (self.type is None or self.type == uid.type)
        )


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled Cedar statement and where it came from."""

    id: str
    """``<policy-name>#<index>`` or ``grant:<namespace>/<name>``."""
    source: str
    """The Policy object's name, or ``grant:<namespace>/<name>``."""
    index: int
    """Position within its Policy's text (0 for a grant)."""
    effect: str
    """``permit`` or ``forbid``."""
    annotations: Mapping[str, str]
    """As written (``@approval("auto")`` → ``{"approval": "auto"}``), the author's ``@id`` included."""
    text: str
    """The Cedar text compiled: the statement with ``@id("<id>")``."""
    actions: frozenset[str]
    """The actions its scope can match."""
    principal: Scope = field(default_factory=Scope)
    """What its scope requires of the principal."""
    resource: Scope = field(default_factory=Scope)
    """What its scope requires of the resource."""
    context: frozenset[str] | None = frozenset()
    """The context attributes its conditions read; None when it uses ``context`` whole."""
    context_values: Mapping[str, frozenset[int | str] | None] = field(default_factory=dict)
    """Per context attribute whose value its conditions read: the literals it is only ever
    compared with (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``), or None when it is read any other
    way (``like``, arithmetic, compared with another attribute). Attributes only tested with
    ``has`` are absent. This is what lets decisions be remembered per class of context values."""

    @property
    def label(self) -> str:
        """``baseline#2``, or ``baseline#2 (@id "allow-chat")`` when the author named it."""
        if (given := self.annotations.get("id")) is not None:
            return f'{self.id} (@id "{given}")'
        return self.id


class CompileError(ValueError):
    """The policy set cannot be compiled; ``problems`` lists ``(policy name, message)``."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.problems))


_ACTION_UIDS: Final = {a: {"type": "Action", "id": a} for a in schema.ACTIONS}
_ALL_ACTIONS: Final = frozenset(schema.ACTIONS)
_ADMIN_DECISION: Final = Decision(allowed=True, reason="the administrator is not subject to policy")

# Decisions call the extension's single-request entry point directly when it has one: the public
# wrapper (``cedarpy.is_authorized``) batches, copies the request and re-encodes the context and
# the answer with the json module, which costs about a third of a decision (bench/policy.py).
# Same engine, same handles, same answer; the public path stays as the fallback.
_RAW_AUTHORIZE = getattr(getattr(cedarpy, "_internal", None), "is_authorized", None)


def _authorize(
    request: dict[str, Any], policies: cedarpy.PolicySet, entities: cedarpy.Entities
) -> dict[str, Any]:
    """Cedar's answer to ``request`` (principal, action, resource, and the context as JSON text)."""
    if _RAW_AUTHORIZE is not None:
        answer: dict[str, Any] = orjson.loads(
            _RAW_AUTHORIZE(request, policies, entities._inner, None, False)
        )
        return answer
    public = dict(request)
    if "context" in public:
        public["context"] = orjson.loads(public["context"])
    result = cedarpy.is_authorized(public, policies, entities)
    return {
        "decision": result.decision.value,
        "diagnostics": {
            "reason": list(result.diagnostics.reasons),
            "id_annotations_by_reason": dict(result.diagnostics.id_annotations_by_reason),
            "errors": list(result.diagnostics.errors),
        },
    }


_LONG_MAX: Final = 2**63 - 1
"""Cedar's Long."""


def inference_context(
    *,
    model: str,
    estimated_tokens: int,
    priority: str,
    now: datetime,
    intent: str = "",
    grant: str = "",
) -> dict[str, Any]:
    """The context of ``infer``/``embed`` (the schema's ``InferenceContext``) for a request at
    ``now``."""
    return {
        "model": model,
        "estimatedTokens": estimated_tokens,
        "priority": priority,
        "hour": now.astimezone(UTC).hour,
        "intent": intent,
        "grant": grant,
    }


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grant_policy(grant: Mapping[str, Any]) -> str:
    """The Cedar statement an active grant compiles to::

        @id("grant:team-a/q3-report")
        @grant("team-a/q3-report")
        permit (
          principal == Agent::"team-a/summarizer",
          action in [Action::"infer", Action::"embed"],
          resource
        ) when { resource in ModelDeployment::"team-a/chat" || resource in Namespace::"team-b" };

    ``resource in X`` holds for X itself and for everything in it, so a ModelDeployment reference
    allows exactly that deployment and a Namespace reference everything in the namespace. (One
    ``in`` per resource rather than ``in [set]``: a set of mixed entity types would not validate
    against the schema.)
    """
    entity = ent.grant_entity(grant)
    namespace, name = entity.uid.id.split("/", 1)
    agent = ent.object_uid("Agent", namespace, str((grant.get("spec") or {}).get("agent") or ""))
    actions = ", ".join(f"Action::{_quote(a)}" for a in entity.attrs["actions"])
    resources = " || ".join(f"resource in {r}" for r in entity.attrs["resources"])
    key = f"{namespace}/{name}"
    return (
        f"@id({_quote(f'grant:{key}')})\n@grant({_quote(key)})\n"
        f"permit (\n  principal == {agent},\n  action in [{actions}],\n  resource\n)"
        f" when {{ {resources} }};\n"
    )


def _scope_actions(scope: Mapping[str, Any]) -> frozenset[str]:
    """The actions an action scope can match (all of them when in doubt)."""
    op = scope.get("op")
    if op == "All":
        return _ALL_ACTIONS
    if op == "==":
        refs = [scope.get("entity")]
    elif op == "in":
        refs = list(scope["entities"]) if "entities" in scope else [scope.get("entity")]
    else:
        return _ALL_ACTIONS
    out: set[str] = set()
    for ref in refs:
        if not isinstance(ref, Mapping) or ref.get("type") != "Action":
            return _ALL_ACTIONS
        name = str(ref.get("id"))
        out.update(schema.ACTION_GROUPS.get(name, (name,)) if op == "in" else (name,))
    return frozenset(out & _ALL_ACTIONS)


def _uid(value: Any) -> ent.EntityUid | None:
    if isinstance(value, Mapping) and "type" in value and "id" in value:
        return ent.EntityUid(str(value["type"]), str(value["id"]))
    return None


def _scope(scope: Mapping[str, Any]) -> Scope:
    """A principal or resource scope in Cedar's JSON form; anything unrecognised requires nothing
    (the statement is then evaluated for every request, which is always correct)."""
    op = scope.get("op")
    if op == "==":
        return Scope(eq=_uid(scope.get("entity")))
    if op == "in":
        return Scope(within=_uid(scope.get("entity")))
    if op == "is":
        inner = scope.get("in")
        within = _uid(inner.get("entity")) if isinstance(inner, Mapping) else None
        return Scope(within=within, type=str(scope.get("entity_type") or "") or None)
    return Scope()


_CONTEXT_VAR: Final = {"Var": "context"}


def _context_reads(conditions: Any) -> frozenset[str] | None:
    """The context attributes conditions (Cedar's JSON form) read, or None when they use
    ``context`` other than through ``context.attr`` and ``context has attr``."""
    found: set[str] = set()
    pending = [conditions]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if node == _CONTEXT_VAR:
                return None
            if len(node) == 1:
                ((op, inner),) = node.items()
                if (
                    op in (".", "has")
                    and isinstance(inner, dict)
                    and inner.get("left") == _CONTEXT_VAR
                ):
                    found.add(str(inner.get("attr")))
                    continue
            pending.extend(node.values())
    return frozenset(found)


_COMPARISONS: Final = frozenset(("==", "!=", "<", "<=", ">", ">="))


def _context_attr(node: Any) -> str | None:
    """``X`` when ``node`` is ``context.X`` (or ``context["X"]``) in Cedar's JSON form."""
    if isinstance(node, dict) and len(node) == 1:
        inner = node.get(".")
        if isinstance(inner, dict) and inner.get("left") == _CONTEXT_VAR:
            return str(inner.get("attr"))
    return None


def _literal(node: Any) -> int | str | None:
    """The value of a Long or String literal (``{"Value": 3}``), else None (booleans too)."""
    if isinstance(node, dict) and len(node) == 1 and "Value" in node:
        value = node["Value"]
        if type(value) is int or type(value) is str:
            return value
    return None


def _context_values(conditions: Any) -> dict[str, frozenset[int | str] | None]:
    """Per context attribute whose value conditions (Cedar's JSON form) read: the literals it is
    compared with, or None when it is read in any other way (see ``Statement.context_values``)."""
    literals: dict[str, set[int | str]] = {}
    exact: set[str] = set()
    pending = [conditions]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if (attr := _context_attr(node)) is not None:
            exact.add(attr)  # reached other than as one side of a comparison with a literal
            continue
        if len(node) == 1:
            ((op, inner),) = node.items()
            if op in _COMPARISONS and isinstance(inner, dict):
                left, right = inner.get("left"), inner.get("right")
                for side, other in ((left, right), (right, left)):
                    attr, value = _context_attr(side), _literal(other)
                    if op not in ("==", "!=") and type(value) is not int:
                        value = None  # ``<`` on a String is an error: leave it to Cedar
                    if attr is not None and value is not None:
                        literals.setdefault(attr, set()).add(value)
                        break
                else:
                    pending.extend(inner.values())
                continue
            if op == "has" and isinstance(inner, dict) and inner.get("left") == _CONTEXT_VAR:
                continue  # ``context has X``: the context's attributes are fixed by the schema
        pending.extend(node.values())
    return {
        attr: None if attr in exact else frozenset(literals.get(attr, ()))
        for attr in exact | set(literals)
    }


def _statement_text(sid: str, body: Mapping[str, Any]) -> str:
    annotations = {k: v for k, v in (body.get("annotations") or {}).items() if k != "id"}
    tagged = {**body, "annotations": {"id": sid, **annotations}}
    document = {"staticPolicies": {"policy0": tagged}, "templates": {}, "templateLinks": []}
    return cedarpy.policies_from_json_str(json.dumps(document)).strip() + "\n"


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A bounded memo (least recently used out first)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            return value


class _ValueClass(NamedTuple):
    """How a decision depends on one context attribute, for the slice that reads it."""

    attr: str
    cuts: tuple[int, ...] | None = None
    """A Long only compared with these literals (sorted): only its position among them matters."""
    literals: frozenset[str] | None = None
    """A String only compared with these literals by ``==``/``!=``: only which one it is (if any)
    matters. Neither ``cuts`` nor ``literals``: its exact value matters."""


_OTHER: Final = None
"""The class of a String equal to none of the literals it is compared with."""


def value_plan(statements: Iterable[Statement]) -> tuple[_ValueClass, ...] | None:
    """What of the context the decisions of a slice (``statements``) depend on: per attribute
    whose value some statement reads, its ``_ValueClass``; None when a statement uses ``context``
    whole (then every value matters)."""
    uses: dict[str, set[int | str] | None] = {}
    for statement in statements:
        if statement.context is None:
            return None
        for attr, literals in statement.context_values.items():
            if literals is None:
                uses[attr] = None
            elif (seen := uses.setdefault(attr, set())) is not None:
                seen.update(literals)
    plan = []
    for attr in sorted(uses):
        kind, seen = schema.INFERENCE_CONTEXT.get(attr), uses[attr]
        if kind is None:
            continue  # not an attribute of the context: reading it fails whatever the values
        longs = [v for v in seen or () if type(v) is int]
        strings = frozenset(v for v in seen or () if type(v) is str)
        if seen is not None and kind is int and len(longs) == len(seen):
            plan.append(_ValueClass(attr, cuts=tuple(sorted(longs))))
        elif seen is not None and kind is str and len(strings) == len(seen):
            plan.append(_ValueClass(attr, literals=strings))
        else:  # read otherwise, or compared with a literal of another type: by value
            plan.append(_ValueClass(attr))
    return tuple(plan)


def context_class(plan: tuple[_ValueClass, ...] | None, context: Mapping[str, Any]) -> Hashable:
    """The class of ``context`` under ``plan`` (``value_plan``): two contexts (valid for the
    action) of the same class get the same decision from the slice, for every statement in it
    compares each attribute only as the plan says.

    For a Long compared with literals ``t``, the position ``bisect_left(cuts, v)`` and whether
    ``v`` equals the cut there fix the sign of ``v - t`` for every ``t``, hence every comparison."""
    if plan is None:
        return tuple(sorted(context.items()))
    out: list[Any] = []
    for attr, cuts, literals in plan:
        value = context[attr]
        if cuts is not None:
            out.append(among(cuts, value))
        elif literals is not None:
            out.append(value if value in literals else _OTHER)
        else:
            out.append(value)
    return tuple(out)


class _Slice(NamedTuple):
    """The compiled form of one slice."""

    policies: cedarpy.PolicySet
    reads: tuple[str, ...] | None
    """The context attributes to pass Cedar (None: all)."""
    plan: tuple[_ValueClass, ...] | None
    """What of the context its decisions depend on (``value_plan``)."""


_Builder = Callable[[tuple[str, ...], tuple[str, ...]], cedarpy.PolicySet]
"""``(shared statement texts, a principal's own) -> policy set``: the engine's cached builder."""

DECISION_CACHE_SIZE = 32_768
"""Decisions remembered per compiled set by default (about 0.6 KiB each: some 20 MiB full)."""

MAX_SLICES = 65_536
"""Slice keys remembered per compiled set; past it, slices are still found in the engine's cache
but their key is recomputed per request (a few tens of µs)."""


def _reading(value_class: _ValueClass | None) -> tuple[int, ...] | None:
    """How an ``InferenceLane`` reads a value of ``value_class``: ``()`` when no statement reads
    it, its cuts when only compared with literals, None when its exact value decides."""
    if value_class is None:
        return ()
    return value_class.cuts


class PolicyEngine:
    """Compiles policy sets against aviator's Cedar schema (parsed once, shared by every compile).

    Long-lived: it keeps what it parsed for the next compile. Not for concurrent ``compile`` calls
    from several threads (decisions on the handles it returns are)."""

    def __init__(
        self,
        *,
        validate: bool = True,
        cache_size: int = 4096,
        decision_cache_size: int = DECISION_CACHE_SIZE,
    ) -> None:
        self._schema = schema.schema_handle()
        self._validate = validate
        self._decision_cache_size = decision_cache_size
        """Decisions each compiled set remembers (0: none; see ``CompiledPolicies.decide``)."""
        """Validate every Policy against the schema on compile (admission did already; this
        catches policies stored before a schema change). Cached per text."""
        self._policies: _Lru[tuple[str, str], tuple[Statement, ...] | list[str]] = _Lru(cache_size)
        self._grant_texts: _Lru[str, str] = _Lru(cache_size)
        self._sets: _Lru[tuple[tuple[str, ...], tuple[str, ...]], cedarpy.PolicySet] = _Lru(
            cache_size
        )
        self._graph: tuple[str, cedarpy.Entities] | None = None

    def compile(
        self,
        policies: Sequence[tuple[str, str]],
        *,
        now: datetime,
        grants: Iterable[Mapping[str, Any]] = (),
        agents: Iterable[Mapping[str, Any]] = (),
        deployments: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[str] = (),
    ) -> CompiledPolicies:
        """Compile ``policies`` (``(Policy name, Cedar text)`` pairs) with the grants active at
        ``now`` and the entity graph of ``agents`` and ``deployments`` (wire dicts) and
        ``namespaces`` (those of the objects are added).

        Pass every Grant: the ones ``Active`` at ``now`` become statements. The result's
        ``valid_until`` is the earliest expiry among them; compile again by then. A grant that
        cannot be compiled is left out (it could only have allowed more) and listed in
        ``problems``. Raises ``CompileError`` when a Policy does not parse or validate, or two
        Policies share a name.
        """
        problems: list[tuple[str, str]] = []
        statements: dict[str, Statement] = {}
        seen: set[str] = set()
        for name, text in policies:
            if name in seen:
                problems.append((name, "duplicate Policy name"))
                continue
            seen.add(name)
            parsed = self._policy(name, text)
            if isinstance(parsed, list):
                problems.extend((name, p) for p in parsed)
                continue
            statements.update((s.id, s) for s in parsed)
        if problems:
            raise CompileError(problems)

        skipped: list[str] = []
        by_agent: dict[str, list[tuple[str, str]]] = {}
        expiries: list[datetime] = []
        known: set[str] = set()
        for grant in grants:
            meta, spec = grant.get("metadata") or {}, grant.get("spec") or {}
            key = f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"
            known.add(key)
            if grant_api.phase_at(grant, now) != "Active":
                continue
            try:
                statement = self._grant(key, grant)
            except ValueError as exc:
                skipped.append(f"grant {key}: {exc}")
                continue
            statements[statement.id] = statement
            agent = f"{meta.get('namespace')}/{spec.get('agent')}"
            by_agent.setdefault(agent, []).append((statement.id, str(spec.get("purpose") or "")))
            if (expiry := grant_api.expiry_of(grant)) is not None:
                expiries.append(expiry)

        graph: dict[ent.EntityUid, ent.Entity] = {}
        for agent_obj in agents:
            entity = ent.agent_entity(agent_obj)
            graph[entity.uid] = entity
        for deployment in deployments:
            entity = ent.deployment_entity(deployment)
            graph[entity.uid] = entity
        names = set(namespaces) | {
            p.id for e in graph.values() for p in e.parents if p.type == "Namespace"
        }
        for namespace in sorted(names):
            entity = ent.namespace_entity(namespace)
            graph[entity.uid] = entity
        return CompiledPolicies(
            entities=self._entities(graph),
            schema=self._schema,
            statements=statements,
            index=graph,
            build=self._policy_set,
            grants_by_agent={k: tuple(v) for k, v in by_agent.items()},
            grant_names=frozenset(known),
            valid_until=min(expiries, default=None),
            problems=tuple(skipped),
            decision_cache_size=self._decision_cache_size,
        )

    def _policy(self, name: str, text: str) -> tuple[Statement, ...] | list[str]:
        cached = self._policies.get((name, text))
        if cached is not None:
            return cached
        try:
            est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            return self._policies.put((name, text), [f"Cedar: {exc}"])
        if self._validate:
            result = cedarpy.validate_policies(text, self._schema)
            if not result.validation_passed:
                return self._policies.put((name, text), [f"Cedar: {e}" for e in result.errors])
        out = []
        for pid, body in sorted(
            est["staticPolicies"].items(), key=lambda kv: int(kv[0].removeprefix("policy"))
        ):
            index = int(pid.removeprefix("policy"))
            sid = f"{name}#{index}"
            out.append(
                Statement(
                    id=sid,
                    source=name,
                    index=index,
                    effect=str(body["effect"]),
                    annotations=dict(body.get("annotations") or {}),
                    text=_statement_text(sid, body),
                    actions=_scope_actions(body.get("action") or {}),
                    principal=_scope(body.get("principal") or {}),
                    resource=_scope(body.get("resource") or {}),
                    context=_context_reads(body.get("conditions") or []),
                    context_values=_context_values(body.get("conditions") or []),
                )
            )
        return self._policies.put((name, text), tuple(out))

    def _grant(self, key: str, grant: Mapping[str, Any]) -> Statement:
        text = grant_policy(grant)
        if self._grant_texts.get(text) is None:
            cedarpy.PolicySet.from_str(text)  # ValueError if it does not parse
            self._grant_texts.put(text, text)
        spec = grant.get("spec") or {}
        namespace = key.partition("/")[0]
        sid = f"grant:{key}"
        return Statement(
            id=sid,
            source=sid,
            index=0,
            effect="permit",
            annotations={"grant": key},
            text=text,
            actions=frozenset(str(a) for a in spec.get("actions") or ()) & _ALL_ACTIONS,
            principal=Scope(eq=ent.object_uid("Agent", namespace, str(spec.get("agent") or ""))),
        )

    def _policy_set(self, shared: tuple[str, ...], own: tuple[str, ...]) -> cedarpy.PolicySet:
        cached = self._sets.get((shared, own))
        if cached is not None:
            return cached
        base = self._sets.get((shared, ()))
        if base is None:
            base = self._sets.put((shared, ()), cedarpy.PolicySet.from_str("".join(shared)))
        if not own:
            return base
        # Cedar clones the parsed base and parses only the fragment.
        return self._sets.put((shared, own), base.with_added_str("".join(own)))

    def _entities(self, graph: Mapping[ent.EntityUid, ent.Entity]) -> cedarpy.Entities:
        text = orjson.dumps([e.to_json() for e in graph.values()]).decode()
        if self._graph is not None and self._graph[0] == text:
            return self._graph[1]
        try:
            entities = cedarpy.Entities.from_json_str(text, self._schema)
        except ValueError as exc:
            raise CompileError([("(entities)", f"Cedar: {exc}")]) from exc
        self._graph = (text, entities)
        return entities


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPolicies:
    """An immutable, shareable compiled policy set with its entity graph. Build it with
    ``PolicyEngine.compile``; replace it (never mutate it) when anything changes."""

    entities: cedarpy.Entities
    schema: cedarpy.Schema
    statements: Mapping[str, Statement]
    """Every statement by id, in compile order."""
    index: Mapping[ent.EntityUid, ent.Entity]
    """Every entity of the graph by uid."""
    build: _Builder = field(repr=False)
    """Builds (or finds) the policy set of a slice."""
    grants_by_agent: Mapping[str, tuple[tuple[str, str], ...]]
    """Per agent (``namespace/name``): its active grants' statement ids and purposes."""
    grant_names: frozenset[str] = frozenset()
    """``namespace/name`` of every grant passed to compile, whatever its phase."""
    valid_until: datetime | None = None
    """The earliest expiry among the compiled grants: compile again by then."""
    problems: tuple[str, ...] = ()
    """Grants left out of the set, and why."""
    decision_cache_size: int = DECISION_CACHE_SIZE
    """Decisions remembered (0: none)."""
    _order: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _labels: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _sources: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _within: dict[str, frozenset[ent.EntityUid]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Per role (``principal``, ``resource``): the entities some scope requires to be ``in``."""
    _eq: dict[str, frozenset[ent.EntityUid]] = field(default_factory=dict, init=False, repr=False)
    """Per role: the entities some scope requires to be ``==``."""
    _signatures: dict[tuple[str, ent.EntityUid], frozenset[ent.EntityUid]] = field(
        default_factory=dict, init=False, repr=False
    )
    """Per role and uid: the scope entities it is or is in (filled on first use)."""
    _slices: dict[tuple[Any, ...], _Slice] = field(default_factory=dict, init=False, repr=False)
    """Per slice key (``_key``): its policy set, the context attributes its statements read and
    what of their values decides, filled on first use."""
    _direct: dict[tuple[str, ent.EntityUid, ent.EntityUid], _Slice] = field(
        default_factory=dict, init=False, repr=False
    )
    """The same by ``(action, principal, resource)``: one lookup on the request path."""
    _decisions: dict[tuple[Any, ...], Decision] = field(
        default_factory=dict, init=False, repr=False
    )
    """Decisions by ``(action, principal, resource, context class, grant, intent)``, oldest
    first."""
    _remembering: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    """Held to add to ``_decisions`` (reading needs no lock: one dict lookup is atomic)."""

    def __post_init__(self) -> None:
        self._order.update((sid, n) for n, sid in enumerate(self.statements))
        self._labels.update((sid, s.label) for sid, s in self.statements.items())
        self._sources.update((sid, s.source) for sid, s in self.statements.items())
        for role in ("principal", "resource"):
            scopes = [getattr(s, role) for s in self.statements.values()]
            self._within[role] = frozenset(x.within for x in scopes if x.within is not None)
            self._eq[role] = frozenset(x.eq for x in scopes if x.eq is not None)

    @property
    def policy_names(self) -> tuple[str, ...]:
        """The Policy objects compiled in (grants excluded), in order."""
        return tuple(
            dict.fromkeys(s.source for s in self.statements.values() if ":" not in s.source)
        )

    @property
    def active_grants(self) -> tuple[str, ...]:
        """``namespace/name`` of every grant compiled in."""
        return tuple(
            s.source.removeprefix("grant:")
            for s in self.statements.values()
            if s.source.startswith("grant:")
        )

    def declared_intent(self, principal: Principal, value: str) -> dict[str, str]:
        """``{"intent": …, "grant": …}`` for the context, from an ``x-aviator-intent`` value:
        the name of a Grant in the principal's namespace (``q3`` or ``team-a/q3``, in any phase:
        naming a revoked grant must refuse, not fall back to standing policy) goes to ``grant``,
        anything else to ``intent``."""
        value = value.strip()
        if value and principal.namespace:
            key = value if "/" in value else f"{principal.namespace}/{value}"
            if key in self.grant_names:
                return {"intent": "", "grant": key}
        return {"intent": value, "grant": ""}

    def annotations(self, statement_id: str) -> Mapping[str, str]:
        """The annotations of a compiled statement, as its author wrote them."""
        return self.statements[statement_id].annotations

    def decide(
        self,
        principal: Principal | ent.EntityUid,
        action: str,
        resource: ent.EntityUid | ent.Entity,
        context: Mapping[str, Any] | None = None,
        *,
        entities: Sequence[ent.Entity] = (),
    ) -> Decision:
        """May ``principal`` do ``action`` on ``resource``?

        ``resource`` is a uid of an entity in the graph (a ModelDeployment on the request path), or
        an ``Entity`` when it is not (the object a write would store, a Grant being requested); an
        ``Entity`` and ``entities`` overlay the graph for this decision only, which is then
        evaluated over the principal, the resource, the overlay and what they reach through parents
        and entity attributes. ``context`` is required for ``infer``/``embed``
        (``inference_context``) and empty otherwise.

        Decisions about entities of the graph (no overlay) are remembered, per principal, action,
        resource and the *class* of the context its slice can tell apart (``context_class``): a
        decision is a pure function of those for a compiled set, so a remembered one is the one
        Cedar would give.
        """
        if isinstance(principal, Principal):
            if principal.kind == "admin":
                return _ADMIN_DECISION
            try:
                p_uid = ent.principal_uid(principal)
            except ValueError as exc:
                return _no_decision(str(exc))
        else:
            if principal == ent.ADMIN_UID:
                return _ADMIN_DECISION
            p_uid = principal
        if problem := schema.context_problem(action, context):
            return _no_decision(problem)
        if isinstance(resource, ent.Entity) or entities:
            overlay: Sequence[ent.Entity] = entities
            if isinstance(resource, ent.Entity):
                overlay = (*entities, resource)
                resource = resource.uid
            return self._evaluate(p_uid, action, resource, context, overlay)
        return self._remembered(p_uid, action, resource, context)

    def decide_inference(
        self,
        principal: Principal,
        action: str,
        resource: ent.EntityUid,
        *,
        model: str,
        estimated_tokens: int,
        priority: str,
        hour: int,
        intent: str = "",
        grant: str = "",
    ) -> Decision:
        """``decide`` for a gateway request (``infer`` or ``embed`` on an entity of the graph),
        given the context's values rather than the context: the same decision (the tests prove
        it) without building and checking a context that is well-formed by construction."""
        context = {
            "model": model,
            "estimatedTokens": estimated_tokens,
            "priority": priority,
            "hour": hour,
            "intent": intent,
            "grant": grant,
        }
        key = principal.agent_key
        if (
            key is None
            or principal.kind != "agent"
            or action not in schema.INFERENCE_ACTIONS
            or type(estimated_tokens) is not int
            or not 0 <= estimated_tokens <= _LONG_MAX
            or type(hour) is not int
            or not 0 <= hour <= 23
            or type(model) is not str
            or type(priority) is not str
            or type(intent) is not str
            or type(grant) is not str
        ):  # anything unusual takes the general path, with its checks and messages
            return self.decide(principal, action, resource, context)
        return self._remembered(ent.EntityUid("Agent", key), action, resource, context)

    def inference_lane(
        self,
        principal: Principal,
        action: str,
        resource: ent.EntityUid,
        *,
        model: str,
        priority: str,
        intent: str = "",
        grant: str = "",
    ) -> InferenceLane[Decision] | None:
        """``decide_inference`` for the requests that differ only in ``estimated_tokens`` and
        ``hour``, or None when it would not remember their decisions (then call it each time)."""
        key = principal.agent_key
        if (
            key is None
            or principal.kind != "agent"
            or action not in schema.INFERENCE_ACTIONS
            or self.decision_cache_size <= 0
            or type(model) is not str
            or type(priority) is not str
            or type(intent) is not str
            or type(grant) is not str
        ):
            return None
        try:
            plan = self._policy_set(action, ent.EntityUid("Agent", key), resource, ()).plan
        except ValueError:
            return None
        if plan is None:  # a statement reads the context whole: every value is its own class
            return None
        reads = {value_class.attr: value_class for value_class in plan}

        def decide(estimated_tokens: int, hour: int) -> Decision:
            return self.decide_inference(
                principal,
                action,
                resource,
                model=model,
                estimated_tokens=estimated_tokens,
                priority=priority,
                hour=hour,
                intent=intent,
                grant=grant,
            )

        return InferenceLane(
            self,
            decide=decide,
            tokens=_reading(reads.get("estimatedTokens")),
            hour=_reading(reads.get("hour")),
        )

    def _remembered(
        self,
        p_uid: ent.EntityUid,
        action: str,
        r_uid: ent.EntityUid,
        context: Mapping[str, Any] | None,
    ) -> Decision:
        """The decision about entities of the graph, remembered (see ``decide``)."""
        if self.decision_cache_size <= 0:
            return self._evaluate(p_uid, action, r_uid, context, ())
        try:
            found = self._policy_set(action, p_uid, r_uid, ())
        except ValueError as exc:  # a compiled statement Cedar would not parse: never expected
            return _no_decision(f"policy set: {exc}")
        if context is not None and action in schema.INFERENCE_ACTIONS:
            key: tuple[Any, ...] = (
                action,
                p_uid,
                r_uid,
                context_class(found.plan, context),
                context["grant"],
                context["intent"],
            )
        else:
            key = (action, p_uid, r_uid)
        if (remembered := self._decisions.get(key)) is not None:
            return remembered
        decision = self._evaluate(p_uid, action, r_uid, context, (), found)
        with self._remembering:
            decisions = self._decisions
            while len(decisions) >= self.decision_cache_size:
                del decisions[next(iter(decisions))]  # the oldest
            decisions[key] = decision
        return decision

    def _evaluate(
        self,
        p_uid: ent.EntityUid,
        action: str,
        r_uid: ent.EntityUid,
        context: Mapping[str, Any] | None,
        overlay: Sequence[ent.Entity],
        found: _Slice | None = None,
    ) -> Decision:
        """The decision Cedar gives for a request whose context was checked."""
        scope: frozenset[str] = frozenset()
        if context is not None and action in schema.INFERENCE_ACTIONS:
            named, intent = context["grant"], context["intent"]
            if named:
                key = named if "/" in named else f"{p_uid.id.partition('/')[0]}/{named}"
                if f"grant:{key}" not in self.statements:
                    return Decision(
                        allowed=False,
                        reason=f"grant {key!r} named by the request is not active "
                        "(unknown, pending, denied, expired or revoked)",
                    )
                scope = frozenset({f"grant:{key}"})
            elif intent:
                scope = frozenset(
                    sid
                    for sid, purpose in self.grants_by_agent.get(p_uid.id, ())
                    if purpose == intent
                )

        if overlay:
            try:
                cedar_entities = self._overlaid(p_uid, r_uid, overlay)
            except ValueError as exc:
                return _no_decision(f"entities violate the schema: {exc}")
        else:
            cedar_entities = self.entities
        request: dict[str, Any] = {
            "principal": p_uid.to_json(),
            "action": _ACTION_UIDS[action],
            "resource": r_uid.to_json(),
        }
        if found is None:
            try:
                found = self._policy_set(action, p_uid, r_uid, overlay)
            except ValueError as exc:  # a compiled statement Cedar would not parse: never expected
                return _no_decision(f"policy set: {exc}")
        policy_set, reads = found.policies, found.reads
        if context is not None and action in schema.INFERENCE_ACTIONS:
            if reads is None:
                request["context"] = orjson.dumps(context).decode()
            elif reads:
                # ``context has X`` of an attribute the context lacks reads nothing to pass.
                trimmed = {k: context[k] for k in reads if k in context}
                request["context"] = orjson.dumps(trimmed).decode()
        answer = _authorize(request, policy_set, cedar_entities)
        diagnostics = answer.get("diagnostics") or {}
        errors = tuple(str(e) for e in diagnostics.get("errors") or ())
        if answer.get("decision") not in ("Allow", "Deny"):
            detail = "; ".join(errors) or "Cedar returned no decision"
            return _no_decision(detail, errors=errors)
        named_ids = diagnostics.get("id_annotations_by_reason") or {}
        ids = self._ordered([named_ids.get(r, r) for r in diagnostics.get("reason") or ()])
        sources: tuple[str, ...]
        if len(ids) == 1:  # the common case
            sources, labels = (self._sources[ids[0]],), self._labels[ids[0]]
        else:
            sources = tuple(dict.fromkeys(self._sources[i] for i in ids))
            labels = ", ".join(self._labels[i] for i in ids)
        if answer["decision"] == "Allow":
            if scope and not scope.intersection(ids):
                granted = ", ".join(sorted(s.removeprefix("grant:") for s in scope))
                return Decision(
                    allowed=False,
                    reason=f"outside the declared intent: {action} on {r_uid} by {p_uid} is not "
                    f"covered by grant {granted}",
                    errors=errors,
                )
            return Decision(True, sources, f"permitted by {labels}", False, ids, errors)
        if ids:
            return Decision(False, sources, f"forbidden by {labels}", False, ids, errors)
        reason = f"no policy permits {action} on {r_uid} by {p_uid} (default deny)"
        if errors:
            reason += f"; {len(errors)} statement(s) failed to evaluate"
        return Decision(False, (), reason, False, (), errors)

    def statements_for(
        self,
        principal: Principal | ent.EntityUid,
        action: str,
        resource: ent.EntityUid | ent.Entity,
        *,
        entities: Sequence[ent.Entity] = (),
    ) -> tuple[str, ...]:
        """The ids of the statements a request evaluates (its slice), in compile order."""
        p_uid = ent.principal_uid(principal) if isinstance(principal, Principal) else principal
        overlay = (*entities, resource) if isinstance(resource, ent.Entity) else tuple(entities)
        r_uid = resource.uid if isinstance(resource, ent.Entity) else resource
        shared, own = self._slice(action, p_uid, r_uid, overlay)
        return self._ordered([*shared, *own])

    def _policy_set(
        self,
        action: str,
        p_uid: ent.EntityUid,
        r_uid: ent.EntityUid,
        overlay: Sequence[ent.Entity],
    ) -> _Slice:
        if not overlay and (hit := self._direct.get((action, p_uid, r_uid))) is not None:
            return hit
        key = self._key(action, p_uid, r_uid, overlay)
        found = self._slices.get(key)
        if found is None:
            shared, own = self._slice(action, p_uid, r_uid, overlay)
            chosen = [self.statements[i] for i in (*shared, *own)]
            reads: tuple[str, ...] | None = None
            if all(s.context is not None for s in chosen):
                reads = tuple(sorted({a for s in chosen for a in s.context or ()}))
            policy_set = self.build(
                tuple(self.statements[i].text for i in shared),
                tuple(self.statements[i].text for i in own),
            )
            found = _Slice(policy_set, reads, value_plan(chosen))
            if len(self._slices) < MAX_SLICES:
                self._slices[key] = found
        if not overlay and len(self._direct) < MAX_SLICES:
            self._direct[(action, p_uid, r_uid)] = found
        return found

    def _key(
        self,
        action: str,
        p_uid: ent.EntityUid,
        r_uid: ent.EntityUid,
        overlay: Sequence[ent.Entity],
    ) -> tuple[Any, ...]:
        # What decides which statements a request evaluates, and nothing else, so that requests
        # alike share a slice: the action; each side's uid if some scope names it with ``==``,
        # else its type; and the scope entities it is (or is in).
        return (
            action,
            p_uid if p_uid in self._eq["principal"] else p_uid.type,
            self._signature("principal", p_uid, overlay),
            r_uid if r_uid in self._eq["resource"] else r_uid.type,
            self._signature("resource", r_uid, overlay),
        )

    def _signature(
        self, role: str, uid: ent.EntityUid, overlay: Sequence[ent.Entity]
    ) -> frozenset[ent.EntityUid]:
        within = self._within[role]
        if not within:
            return frozenset()
        if not overlay and (found := self._signatures.get((role, uid))) is not None:
            return found
        # The uid and its ancestors through parents: overlay first (a new object's parents), then
        # the graph.
        pool = {e.uid: e for e in overlay}
        seen: set[ent.EntityUid] = set()
        pending = [uid]
        while pending:
            here = pending.pop()
            if here in seen:
                continue
            seen.add(here)
            node = pool.get(here) or self.index.get(here)
            if node is not None:
                pending.extend(node.parents)
        signature = frozenset(seen & within)
        if not overlay and len(self._signatures) < MAX_SLICES:
            self._signatures[(role, uid)] = signature
        return signature

    def _slice(
        self,
        action: str,
        p_uid: ent.EntityUid,
        r_uid: ent.EntityUid,
        overlay: Sequence[ent.Entity],
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(shared, own)`` statement ids of a request: own are those scoped ``principal == it``."""
        p_sig = self._signature("principal", p_uid, overlay)
        r_sig = self._signature("resource", r_uid, overlay)
        shared: list[str] = []
        own: list[str] = []
        for sid, statement in self.statements.items():
            if (
                action in statement.actions
                and statement.principal.admits(p_uid, p_sig)
                and statement.resource.admits(r_uid, r_sig)
            ):
                (own if statement.principal.eq is not None else shared).append(sid)
        return tuple(shared), tuple(own)

    def _ordered(self, ids: Sequence[str]) -> tuple[str, ...]:
        order = self._order
        if len(ids) == 1:
            return tuple(ids) if ids[0] in order else ()
        return tuple(sorted((i for i in ids if i in order), key=order.__getitem__))

    def _overlaid(
        self, p_uid: ent.EntityUid, r_uid: ent.EntityUid, overlay: Sequence[ent.Entity]
    ) -> cedarpy.Entities:
        pool = {e.uid: e for e in overlay}
        selected: dict[ent.EntityUid, ent.Entity] = {}
        pending = [p_uid, r_uid, *pool]
        while pending:
            uid = pending.pop()
            if uid in selected:
                continue
            entity = pool.get(uid) or self.index.get(uid)
            if entity is None:
                continue
            selected[uid] = entity
            pending.extend(entity.references())
        return cedarpy.Entities.from_json_str(
            orjson.dumps([e.to_json() for e in selected.values()]).decode(), self.schema
        )


def _no_decision(detail: str, *, errors: tuple[str, ...] = ()) -> Decision:
    return Decision(
        allowed=False,
        reason=f"no decision (counts as deny): {detail}",
        no_decision=True,
        errors=errors,
    )
