"""The pure metadata rules."""

from __future__ import annotations

import copy

import pytest

from aviator.api import errors
from aviator.api.kinds import MODEL_DEPLOYMENT
from aviator.store import objects

from .helpers import md


def stored() -> dict[str, object]:
    return objects.created(
        MODEL_DEPLOYMENT,
        md("chat", labels={"a": "b"}),
        uid="u1",
        revision=5,
        now="2026-01-01T00:00:00Z",
    )


def test_created_orders_the_envelope_and_sets_server_fields() -> None:
    obj = stored()
    assert list(obj) == ["apiVersion", "kind", "metadata", "spec"]
    assert obj["metadata"] == {
        "name": "chat",
        "namespace": "default",
        "labels": {"a": "b"},
        "uid": "u1",
        "resourceVersion": "5",
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }


def test_functions_do_not_mutate_their_inputs() -> None:
    current = stored()
    body = md("chat", labels={"x": "y"}, finalizers=["f/g"])
    body["spec"]["engine"] = "vllm"
    snapshot = copy.deepcopy((current, body))
    objects.replaced(MODEL_DEPLOYMENT, current, body)
    objects.status_replaced(current, {"status": {"s": 1}})
    objects.marked_for_deletion(current, now="2026-01-01T00:00:01Z")
    objects.with_revision(current, 9)
    assert (current, body) == snapshot


def test_replaced_takes_identity_and_server_fields_from_the_stored_object() -> None:
    current = {**stored(), "status": {"ready": True}}
    body = md("chat", namespace="elsewhere", uid="forged", generation=9)
    body["status"] = {"ready": False}
    new = objects.replaced(MODEL_DEPLOYMENT, current, body)
    assert new["metadata"]["namespace"] == "default"
    assert new["metadata"]["uid"] == "u1"
    assert new["metadata"]["generation"] == 1
    assert new["status"] == {"ready": True}
    assert "labels" not in new["metadata"]


def test_canonical_ignores_key_order_but_not_types() -> None:
    assert objects.canonical({"a": 1, "b": 2}) == objects.canonical({"b": 2, "a": 1})
    assert objects.canonical({"a": 1}) != objects.canonical({"a": 1.0})
    assert objects.canonical({"a": True}) != objects.canonical({"a": 1})


def test_owner_uids_are_distinct_and_tolerate_junk() -> None:
    refs = [{"uid": "a"}, {"uid": "b"}, {"uid": "a"}, {"name": "no-uid"}, "junk", {"uid": ""}]
    assert objects.owner_uids({"metadata": {"ownerReferences": refs}}) == ["a", "b"]
    assert objects.owner_uids({"metadata": {"ownerReferences": "junk"}}) == []
    assert objects.owner_uids({}) == []


def test_preconditions() -> None:
    current = stored()
    objects.check_preconditions(MODEL_DEPLOYMENT, current, resource_version=None)
    objects.check_preconditions(MODEL_DEPLOYMENT, current, resource_version="5", uid="u1")
    with pytest.raises(errors.Conflict) as caught:
        objects.check_preconditions(MODEL_DEPLOYMENT, current, resource_version="4")
    assert caught.value.to_status()["details"] == {"name": "chat", "kind": "modeldeployments"}
    with pytest.raises(errors.Conflict, match="uid"):
        objects.check_preconditions(MODEL_DEPLOYMENT, current, resource_version="5", uid="u2")
