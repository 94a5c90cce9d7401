"""A small world for the policy tests: namespaces, agents, deployments, grants."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aviator.api import admission, kinds
from aviator.api.principal import Principal
from aviator.policy import engine
from aviator.policy.entities import EntityUid

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def agent_obj(
    namespace: str, name: str, *, owner: str = "alice", purpose: str = "summaries"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"owner": owner, "purpose": purpose},
    }


def md_obj(
    namespace: str, name: str, *, model: str = "llama", priority: str = "standard"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"model": {"name": model}, "priority": priority},
    }


def agent(namespace: str, name: str) -> Principal:
    return Principal(
        kind="agent",
        id=f"spiffe://aviator.test/ns/{namespace}/agent/{name}",
        namespace=namespace,
        name=name,
    )


def md(namespace: str, name: str) -> EntityUid:
    return EntityUid("ModelDeployment", f"{namespace}/{name}")


def ctx(**overrides: Any) -> dict[str, Any]:
    base = engine.inference_context(
        model="llama", estimated_tokens=100, priority="standard", now=NOW
    )
    return {**base, **overrides}


def grant_obj(
    namespace: str,
    name: str,
    *,
    agent: str,
    actions: Sequence[str],
    resources: Sequence[str],
    purpose: str = "a purpose",
    duration: int = 900,
    phase: str | None = "Active",
    expires: str | None = "2026-11-27T12:15:00Z",
) -> dict[str, Any]:
    obj = admission.admit(
        {
            "metadata": {"name": name},
            "spec": {
                "agent": agent,
                "actions": list(actions),
                "resources": list(resources),
                "purpose": purpose,
                "durationSeconds": duration,
            },
        },
        kind=kinds.GRANT,
        namespace=namespace,
    )
    if phase is not None:
        obj["status"] = {"phase": phase}
        if expires is not None:
            obj["status"]["expiresAt"] = expires
    return obj


AGENTS = [
    agent_obj("team-a", "bot"),
    agent_obj("team-a", "helper", owner="bob"),
    agent_obj("team-b", "bot"),
]
DEPLOYMENTS = [
    md_obj("team-a", "chat"),
    md_obj("team-a", "big", model="llama-70b", priority="critical"),
    md_obj("team-b", "chat"),
]


def compile_with(
    policy_engine: engine.PolicyEngine,
    *policies: tuple[str, str],
    grants: Sequence[dict[str, Any]] = (),
) -> engine.CompiledPolicies:
    return policy_engine.compile(
        list(policies), now=NOW, grants=grants, agents=AGENTS, deployments=DEPLOYMENTS
    )
