import json

import cedarpy
import pytest

from aviator.api.principal import ADMIN, ANONYMOUS, Principal
from aviator.policy import entities as ent
from aviator.policy import schema

from .world import grant_obj


def test_principals_map_to_entities() -> None:
    bot = Principal(
        kind="agent", id="spiffe://t/ns/team-a/agent/bot", namespace="team-a", name="bot"
    )
    assert str(ent.principal_uid(bot)) == 'Agent::"team-a/bot"'
    assert ent.principal_uid(ADMIN) == ent.ADMIN_UID == ent.EntityUid("Admin", "admin")
    assert ent.principal_uid(Principal(kind="apikey", id="apikey:ab12")) == ent.EntityUid(
        "ApiKey", "ab12"
    )
    assert ent.principal_uid(ANONYMOUS) == ent.ANONYMOUS_UID
    with pytest.raises(ValueError, match="no namespace/name"):
        ent.principal_uid(Principal(kind="agent", id="x"))


def test_uid_text_escapes() -> None:
    assert str(ent.EntityUid("Policy", 'a"b\\c')) == 'Policy::"a\\"b\\\\c"'


def test_objects_become_schema_valid_entities() -> None:
    built = [
        ent.agent_entity(
            {"metadata": {"namespace": "team-a", "name": "bot"},
             "spec": {"owner": "alice", "purpose": "summaries", "audiences": ["gateway"]}}
        ),
        ent.deployment_entity(
            {"metadata": {"namespace": "team-a", "name": "chat"}, "spec": {"model": {"name": "llama"}}}
        ),
        ent.object_entity(
            "Replica",
            {"metadata": {"namespace": "team-a", "name": "chat-x",
                          "labels": {"aviator.dev/model-deployment": "chat"}},
             "spec": {"model": {"name": "llama"}}},
        ),
        ent.object_entity("Node", {"metadata": {"name": "gpu-1"}, "spec": {"region": "eu"}}),
        ent.object_entity("DeviceClass", {"metadata": {"name": "gpu.nvidia.com"}, "spec": {}}),
        ent.object_entity("Policy", {"metadata": {"name": "baseline"}, "spec": {"cedar": "x"}}),
        ent.object_entity(
            "Grant",
            grant_obj("team-a", "g", agent="bot", actions=["infer", "embed"],
                      resources=["md/chat", "ns/team-b", "node/gpu-1"]),
        ),
        ent.namespace_entity("team-a"),
        ent.namespace_entity("team-b"),
    ]  # fmt: skip
    cedarpy.Entities.from_json_str(json.dumps([e.to_json() for e in built]), schema.schema_handle())
    agent, deployment, replica, node, *_ = built
    assert agent.attrs == {"namespace": "team-a", "owner": "alice", "purpose": "summaries"}
    assert deployment.attrs["priority"] == "standard"  # the default
    assert replica.parents == (
        ent.EntityUid("Namespace", "team-a"),
        ent.EntityUid("ModelDeployment", "team-a/chat"),
    )
    assert node.attrs == {"region": "eu", "zone": ""}


def test_grant_entity_summarises_its_resources() -> None:
    grant = ent.grant_entity(
        grant_obj("team-a", "g", agent="bot", actions=["infer"],
                  resources=["md/chat", "ns/team-b", "node/gpu-1"], duration=600)
    )  # fmt: skip
    assert grant.uid == ent.EntityUid("Grant", "team-a/g")
    assert grant.attrs["agent"] == {"__entity": {"type": "Agent", "id": "team-a/bot"}}
    assert grant.attrs["kinds"] == ["ModelDeployment", "Namespace", "Node"]
    assert grant.attrs["namespaces"] == ["team-a", "team-b"]
    assert grant.attrs["durationSeconds"] == 600
    assert set(grant.references()) == {
        ent.EntityUid("Namespace", "team-a"),
        ent.EntityUid("Agent", "team-a/bot"),
    }


def test_unknown_kinds_and_nameless_objects_are_refused() -> None:
    with pytest.raises(ValueError, match="not an entity type"):
        ent.object_entity("Pod", {})
    with pytest.raises(ValueError, match=r"metadata\.namespace"):
        ent.agent_entity({"metadata": {"name": "x"}})
