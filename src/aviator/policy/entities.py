"""Cedar entities built from objects (wire dicts, as the store and the watch deliver them) and from
the ``Principal`` authentication produced.

Every builder reads only what the schema declares (``aviator.policy.schema``) and tolerates absent
optional fields, so an object admitted by any version of its kind still yields a valid entity.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aviator.api import grant as grant_api
from aviator.api.principal import Principal
from aviator.api.replica import LABEL_DEPLOYMENT

__all__ = [
    "ADMIN_UID",
    "ANONYMOUS_UID",
    "Entity",
    "EntityUid",
    "agent_entity",
    "deployment_entity",
    "device_class_entity",
    "grant_entity",
    "namespace_entity",
    "node_entity",
    "object_entity",
    "object_uid",
    "policy_entity",
    "principal_uid",
    "ref_uid",
    "replica_entity",
]


class EntityUid(NamedTuple):
    """A Cedar entity reference: ``Type::"id"``. A tuple: cheap to build, hash and compare on the
    request path."""

    type: str
    id: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        escaped = self.id.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.type}::"{escaped}"'


@dataclass(frozen=True, slots=True, eq=False)
class Entity:
    """A Cedar entity: its uid, attributes (Cedar JSON values) and parents."""

    uid: EntityUid
    attrs: Mapping[str, Any] = field(default_factory=dict)
    """Strings, integers, booleans, lists (sets) and ``{"__entity": {"type", "id"}}`` references."""
    parents: tuple[EntityUid, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid.to_json(),
            "attrs": dict(self.attrs),
            "parents": [p.to_json() for p in self.parents],
        }

    def references(self) -> Iterator[EntityUid]:
        """Parents and entities named by attributes: what a decision about this entity may read."""
        yield from self.parents
        for value in self.attrs.values():
            if isinstance(value, Mapping) and isinstance(value.get("__entity"), Mapping):
                ref = value["__entity"]
                yield EntityUid(str(ref["type"]), str(ref["id"]))


ADMIN_UID = EntityUid("Admin", "admin")
ANONYMOUS_UID = EntityUid("Anonymous", "anonymous")


def principal_uid(principal: Principal) -> EntityUid:
    """``Agent::"ns/name"``, ``Admin::"admin"``, ``ApiKey::"<fingerprint>"`` or
    ``Anonymous::"anonymous"``."""
    if principal.kind == "agent":
        key = principal.agent_key
        if key is None:
            raise ValueError(f"agent principal {principal.id!r} has no namespace/name")
        return EntityUid("Agent", key)
    if principal.kind == "admin":
        return ADMIN_UID
    if principal.kind == "apikey":
        return EntityUid("ApiKey", principal.id.removeprefix("apikey:"))
    return ANONYMOUS_UID


def object_uid(kind: str, namespace: str | None, name: str) -> EntityUid:
    """The uid of an object of ``kind`` (a kind name, which is also its entity type)."""
    return EntityUid(kind, f"{namespace}/{name}" if namespace else name)


def ref_uid(ref: str, *, namespace: str | None) -> EntityUid:
    """The uid of a Grant resource reference (either spelling, see ``aviator.api.grant``)."""
    entity_type, entity_id = grant_api.parse_ref(ref, namespace=namespace)
    return EntityUid(entity_type, entity_id)


def namespace_entity(namespace: str) -> Entity:
    return Entity(EntityUid("Namespace", namespace))


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _namespaced(kind: str, obj: Mapping[str, Any]) -> tuple[EntityUid, str, tuple[EntityUid, ...]]:
    namespace, name = _meta(obj)
    if not namespace or not name:
        raise ValueError(f"{kind} needs metadata.namespace and metadata.name")
    return object_uid(kind, namespace, name), namespace, (EntityUid("Namespace", namespace),)


def agent_entity(obj: Mapping[str, Any]) -> Entity:
    """An Agent object → ``Agent::"ns/name"`` (owner, purpose, namespace) in its Namespace."""
    uid, namespace, parents = _namespaced("Agent", obj)
    spec = _spec(obj)
    attrs = {
        "namespace": namespace,
        "owner": _text(spec.get("owner")),
        "purpose": _text(spec.get("purpose")),
    }
    return Entity(uid, attrs, parents)


def deployment_entity(obj: Mapping[str, Any]) -> Entity:
    """A ModelDeployment → ``ModelDeployment::"ns/name"`` (model, namespace, priority)."""
    uid, namespace, parents = _namespaced("ModelDeployment", obj)
    spec = _spec(obj)
    model = spec.get("model")
    attrs = {
        "namespace": namespace,
        "model": _text(model.get("name")) if isinstance(model, Mapping) else "",
        "priority": _text(spec.get("priority")) or "standard",
    }
    return Entity(uid, attrs, parents)


def replica_entity(obj: Mapping[str, Any]) -> Entity:
    """A Replica → ``Replica::"ns/name"`` in its Namespace and its ModelDeployment."""
    uid, namespace, parents = _namespaced("Replica", obj)
    spec = _spec(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    deployment = _text(labels.get(LABEL_DEPLOYMENT))
    model = spec.get("model")
    attrs = {
        "namespace": namespace,
        "model": _text(model.get("name")) if isinstance(model, Mapping) else "",
        "deployment": deployment,
    }
    if deployment:
        parents = (*parents, object_uid("ModelDeployment", namespace, deployment))
    return Entity(uid, attrs, parents)


def node_entity(obj: Mapping[str, Any]) -> Entity:
    _, name = _meta(obj)
    spec = _spec(obj)
    attrs = {"region": _text(spec.get("region")), "zone": _text(spec.get("zone"))}
    return Entity(EntityUid("Node", name), attrs)


def device_class_entity(obj: Mapping[str, Any]) -> Entity:
    return Entity(EntityUid("DeviceClass", _meta(obj)[1]))


def policy_entity(obj: Mapping[str, Any]) -> Entity:
    return Entity(EntityUid("Policy", _meta(obj)[1]))


def grant_entity(obj: Mapping[str, Any]) -> Entity:
    """A Grant → ``Grant::"ns/name"`` with what it asks for (see the schema's ``Grant``).

    ``kinds`` and ``namespaces`` summarise ``resources`` so that a policy can bound a request
    without quantifiers: ``["ModelDeployment"].containsAll(resource.kinds)``,
    ``[principal.namespace].containsAll(resource.namespaces)``."""
    uid, namespace, parents = _namespaced("Grant", obj)
    spec = _spec(obj)
    refs = [ref_uid(str(r), namespace=namespace) for r in spec.get("resources") or ()]
    namespaces = {
        r.id if r.type == "Namespace" else r.id.partition("/")[0]
        for r in refs
        if r.type == "Namespace" or grant_api.RESOURCE_TYPES.get(r.type, False)
    }
    duration = spec.get("durationSeconds")
    attrs = {
        "namespace": namespace,
        "agent": {"__entity": {"type": "Agent", "id": f"{namespace}/{_text(spec.get('agent'))}"}},
        "actions": sorted({str(a) for a in spec.get("actions") or ()}),
        "resources": sorted({str(r) for r in refs}),
        "kinds": sorted({r.type for r in refs}),
        "namespaces": sorted(namespaces),
        "purpose": _text(spec.get("purpose")),
        "durationSeconds": duration if isinstance(duration, int) else 0,
    }
    return Entity(uid, attrs, parents)


_BUILDERS = {
    "Agent": agent_entity,
    "ModelDeployment": deployment_entity,
    "Replica": replica_entity,
    "Node": node_entity,
    "DeviceClass": device_class_entity,
    "Policy": policy_entity,
    "Grant": grant_entity,
}


def object_entity(kind: str, obj: Mapping[str, Any]) -> Entity:
    """The entity of an object of ``kind`` (any kind the schema knows as a write target), e.g. the
    resource of a Control API write."""
    try:
        build = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"kind {kind!r} is not an entity type of the policy schema") from None
    return build(obj)
