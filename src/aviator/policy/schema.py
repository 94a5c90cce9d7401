"""The entity model and the Cedar schema every Policy is validated against.

Entities (ids in quotes; namespaced ones are ``namespace/name``)::

    Namespace::"team-a"                      groups the namespaced entities below
    Admin::"admin"                           the plane's administrator; never subject to policy
    Agent::"team-a/summarizer"       in Namespace   owner, purpose, namespace
    ApiKey::"<fingerprint>"                  a gateway API key
    Anonymous::"anonymous"                   an unauthenticated gateway caller (--insecure)
    ModelDeployment::"team-a/chat"   in Namespace   model, namespace, priority
    Replica::"team-a/chat-x7k2"      in Namespace, ModelDeployment   model, namespace, deployment
    Node::"gpu-1"                            region, zone
    DeviceClass::"gpu.nvidia.com"
    Policy::"baseline"
    Grant::"team-a/summarize-q3"     in Namespace   agent, actions, resources, kinds, namespaces,
                                                    purpose, durationSeconds, namespace

There is no ``Model`` entity: a served model name belongs to a deployment (two namespaces may serve
the same name differently), so it is the string ``resource.model`` (and ``context.model`` on
inference), matched with ``==`` or ``like "llama-*"``.

Actions: ``infer`` and ``embed`` (group ``inference``) on a ModelDeployment, with an inference
context; ``create``, ``update``, ``delete`` (group ``write``) on the object written; ``requestGrant``
and ``approve`` on a Grant. Reads (``get``/``list``/``watch``) are not policy actions: any
authenticated principal may read, as the Control API does today.

Besides the schema text this module holds the same facts as data (``APPLIES_TO``,
``INFERENCE_CONTEXT``) for fast checks in Python; a test holds the two equal.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import cedarpy

from aviator.api import grant as grant_api

SCHEMA = """\
// aviator's Cedar schema (aviator.policy.schema). Ids of namespaced entities are "namespace/name".

// A namespace: `resource in Namespace::"team-a"` holds for everything in it.
entity Namespace;

// The plane's administrator (the admin token). Never subject to policy.
entity Admin;

// An agent (kind Agent), the principal of an agent token.
entity Agent in [Namespace] = {
  namespace: String,
  owner: String,
  purpose: String,
};

// A gateway API key, identified by its fingerprint (never the key).
entity ApiKey;

// An unauthenticated gateway caller (a gateway started with --insecure).
entity Anonymous;

entity ModelDeployment in [Namespace] = {
  namespace: String,
  model: String,     // the served model name (the OpenAI `model` field)
  priority: String,  // critical | standard | sheddable
};

entity Replica in [Namespace, ModelDeployment] = {
  namespace: String,
  model: String,
  deployment: String,  // the owning ModelDeployment's name ("" if none)
};

entity Node = {
  region: String,
  zone: String,
};

entity DeviceClass;

entity Policy;

// A just-in-time grant, as requested (action requestGrant) or decided (action approve).
entity Grant in [Namespace] = {
  namespace: String,
  agent: Agent,              // who receives the rights
  actions: Set<String>,      // e.g. ["infer"]
  resources: Set<String>,    // canonical references, e.g. ["ModelDeployment::\\"team-a/chat\\""]
  kinds: Set<String>,        // entity types of the resources, e.g. ["ModelDeployment"]
  namespaces: Set<String>,   // namespaces the resources are in (Namespace references included)
  purpose: String,
  durationSeconds: Long,
};

// What a gateway request carries besides who and which deployment.
type InferenceContext = {
  model: String,            // the requested model name
  estimatedTokens: Long,    // prompt tokens plus the requested maximum output
  priority: String,         // critical | standard | sheddable
  hour: Long,               // 0-23, UTC
  intent: String,           // x-aviator-intent when it names a purpose ("" if none)
  grant: String,            // x-aviator-intent when it names a grant ("" if none)
};

action inference;  // group: infer, embed
action write;      // group: create, update, delete

action infer, embed in [inference] appliesTo {
  principal: [Agent, ApiKey, Anonymous, Admin],
  resource: [ModelDeployment],
  context: InferenceContext,
};

action create, update, delete in [write] appliesTo {
  principal: [Agent, Admin],
  resource: [ModelDeployment, Replica, Node, DeviceClass, Policy, Grant, Agent],
  context: {},
};

action requestGrant, approve appliesTo {
  principal: [Agent, Admin],
  resource: [Grant],
  context: {},
};
"""

INFERENCE_ACTIONS = ("infer", "embed")
WRITE_ACTIONS = ("create", "update", "delete")
GRANT_ACTIONS = ("requestGrant", "approve")
ACTIONS = (*INFERENCE_ACTIONS, *WRITE_ACTIONS, *GRANT_ACTIONS)
GRANTABLE_ACTIONS = (*INFERENCE_ACTIONS, *WRITE_ACTIONS)
"""What a Grant may carry (``aviator.api.grant.GrantAction``)."""
ACTION_GROUPS: Mapping[str, tuple[str, ...]] = {
    "inference": INFERENCE_ACTIONS,
    "write": WRITE_ACTIONS,
}
"""Action groups: ``action in Action::"write"`` matches create, update and delete."""

WRITE_TARGETS = ("ModelDeployment", "Replica", "Node", "DeviceClass", "Policy", "Grant", "Agent")

APPLIES_TO: Mapping[str, tuple[frozenset[str], frozenset[str]]] = {
    **{
        a: (frozenset({"Agent", "ApiKey", "Anonymous", "Admin"}), frozenset({"ModelDeployment"}))
        for a in INFERENCE_ACTIONS
    },
    **{a: (frozenset({"Agent", "Admin"}), frozenset(WRITE_TARGETS)) for a in WRITE_ACTIONS},
    **{a: (frozenset({"Agent", "Admin"}), frozenset({"Grant"})) for a in GRANT_ACTIONS},
}
"""Per action: the principal types and resource types it applies to (as in ``SCHEMA``)."""

INFERENCE_CONTEXT: Mapping[str, type] = {
    "model": str,
    "estimatedTokens": int,
    "priority": str,
    "hour": int,
    "intent": str,
    "grant": str,
}
"""The attributes of ``InferenceContext``: ``String`` is ``str``, ``Long`` is ``int``."""

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_CONTEXT_KEYS = frozenset(INFERENCE_CONTEXT)


@functools.cache
def schema_handle() -> cedarpy.Schema:
    """``SCHEMA`` parsed once (a constant; parsing costs milliseconds)."""
    return cedarpy.Schema.from_str(SCHEMA)


def _fits(context: Mapping[str, Any]) -> bool:
    # The common case, unrolled (a third of the generic loop below): exactly the attributes of
    # INFERENCE_CONTEXT, of exactly their types.
    return (
        context.keys() == _CONTEXT_KEYS
        and type(context["model"]) is str
        and type(context["estimatedTokens"]) is int
        and type(context["priority"]) is str
        and type(context["hour"]) is int
        and type(context["intent"]) is str
        and type(context["grant"]) is str
        and 0 <= context["hour"] <= 23
        and _LONG_MIN <= context["estimatedTokens"] <= _LONG_MAX
    )


def context_problem(action: str, context: Mapping[str, Any] | None) -> str | None:
    """Why ``context`` does not fit ``action``'s context type, or None when it does.

    The Python mirror of Cedar's request validation, so that decisions need not pass the schema to
    Cedar on every call (which costs more than the decision itself)."""
    if action not in APPLIES_TO:
        return f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}"
    if action not in INFERENCE_ACTIONS:
        if context:
            return f"action {action!r} takes an empty context (got {sorted(context)})"
        return None
    if context is None:
        return f"action {action!r} requires a context with {', '.join(INFERENCE_CONTEXT)}"
    if _fits(context):
        return None
    if missing := [k for k in INFERENCE_CONTEXT if k not in context]:
        return f"context is missing {', '.join(missing)}"
    if extra := sorted(k for k in context if k not in INFERENCE_CONTEXT):
        return f"context has unknown attributes {', '.join(extra)}"
    for key, expected in INFERENCE_CONTEXT.items():
        value = context[key]
        if expected is int:
            if not isinstance(value, int) or isinstance(value, bool):
                return f"context.{key} must be a Long (got {type(value).__name__})"
            if not _LONG_MIN <= value <= _LONG_MAX:
                return f"context.{key} is out of the Long range"
        elif not isinstance(value, str):
            return f"context.{key} must be a String (got {type(value).__name__})"
    if not 0 <= context["hour"] <= 23:
        return f"context.hour must be 0-23 (got {context['hour']})"
    return None


def grant_applies(action: str, entity_type: str) -> bool:
    """Whether a grant of ``action`` can name a resource of ``entity_type`` (a Namespace reference
    stands for what is in it, so it fits every action with a namespaced target)."""
    targets = APPLIES_TO[action][1]
    if entity_type == "Namespace":
        return any(grant_api.RESOURCE_TYPES.get(t, False) for t in targets)
    return entity_type in targets
