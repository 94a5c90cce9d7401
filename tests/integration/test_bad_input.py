"""Bad input gets a precise 4xx and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.plane import PlaneProcess

MD_PATH = "/apis/aviator.dev/v1alpha1/namespaces/default/modeldeployments"


def valid(name: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "m"},
            "engine": "external",
            "external": {"url": "http://127.0.0.1:9"},
        },
    }


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneProcess]:
    """One plane for the module: every test leaves it as it found it (``api`` cleans up)."""
    handle = PlaneProcess(data_dir=tmp_path_factory.mktemp("bad-input") / "aviator")
    handle.start("--no-gateway")
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def api(plane: PlaneProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=plane.api_url, headers={"Authorization": f"Bearer {plane.admin_token}"}
    ) as c:
        yield c
        for name in stored(c):  # what a test stored on purpose goes, so the next starts empty
            c.delete(f"{MD_PATH}/{name}")
        deadline = time.monotonic() + 10
        while stored(c):
            assert time.monotonic() < deadline, "deployments were not deleted in time"
            time.sleep(0.05)


def stored(api: httpx.Client) -> list[str]:
    return [i["metadata"]["name"] for i in api.get(MD_PATH).json()["items"]]


def test_missing_or_wrong_token_is_401(plane: PlaneProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        resp = httpx.post(plane.api_url + MD_PATH, json=valid(), headers=headers)
        assert resp.status_code == 401
        assert resp.json()["reason"] == "Unauthorized"
        assert plane.admin_token not in resp.text


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["spec"].update(bogus=1), "spec.bogus"),
        (lambda b: b["spec"].update(replicas="two"), "spec.replicas"),
        (lambda b: b["metadata"].update(name="Not_A_Name"), "metadata.name"),
        (lambda b: b["spec"]["model"].pop("name"), "spec.model.name"),
        (lambda b: b.update(kind="Pod"), "kind"),
    ],
)
def test_invalid_objects_are_422_with_the_field_path(
    api: httpx.Client, mutate: Any, field: str
) -> None:
    body = valid()
    mutate(body)
    resp = api.post(MD_PATH, json=body)
    assert resp.status_code == 422, resp.text
    status = resp.json()
    assert status["reason"] == "Invalid"
    assert field in [c["field"] for c in status["details"]["causes"]]
    assert stored(api) == []


def test_malformed_bodies_and_wrong_media_types(api: httpx.Client) -> None:
    resp = api.post(MD_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["message"]
    resp = api.post(
        MD_PATH, content=b"a: [1, 2\nb: c", headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 400 and "line" in resp.json()["message"]
    resp = api.post(MD_PATH, content=b"x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415
    resp = api.patch(MD_PATH + "/chat", json={"spec": {}})
    assert resp.status_code == 415
    assert stored(api) == []


def test_oversized_bodies_are_413(api: httpx.Client) -> None:
    body = valid()
    body["metadata"]["annotations"] = {"big": "x" * (2 * 1024 * 1024)}
    resp = api.post(
        MD_PATH, content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413
    assert resp.json()["reason"] == "RequestEntityTooLarge"
    assert stored(api) == []


def test_stale_resource_version_is_409_and_changes_nothing(api: httpx.Client) -> None:
    created = api.post(MD_PATH, json=valid()).json()
    # The controllers write status concurrently (each write is a new resourceVersion), so a
    # read-modify-write may itself meet a 409 and is retried, exactly as a client should.
    for _ in range(20):
        current = api.get(MD_PATH + "/chat").json()
        current["spec"]["priority"] = "critical"
        if api.put(MD_PATH + "/chat", json=current).status_code == 200:
            break
    else:
        raise AssertionError("could not update chat")
    stale = dict(created)
    stale["spec"] = {**created["spec"], "priority": "sheddable"}
    resp = api.put(MD_PATH + "/chat", json=stale)
    assert resp.status_code == 409
    assert resp.json()["reason"] == "Conflict"
    assert api.get(MD_PATH + "/chat").json()["spec"]["priority"] == "critical"


def test_cli_apply_of_malformed_yaml_stores_nothing(plane: PlaneProcess, api: httpx.Client) -> None:
    doc = "apiVersion: aviator.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: ok}\n---\nspec: [unclosed\n"
    result = plane.cli("apply", "-f", "-", input=doc)
    assert result.returncode == 1
    assert "line" in result.stderr
    assert stored(api) == []


def test_unknown_paths_and_kinds_are_404(api: httpx.Client) -> None:
    assert api.get("/apis/aviator.dev/v1alpha1/namespaces/default/pods").status_code == 404
    assert api.get("/nope").json()["kind"] == "Status"
    assert api.get(MD_PATH + "/missing").status_code == 404


def test_a_selector_that_does_not_compile_is_refused_with_cel_s_message(api: httpx.Client) -> None:
    body = valid()
    body["spec"]["accelerators"] = {
        "deviceClassName": "gpu.nvidia.com",
        "selectors": ["device.driver =="],
    }
    resp = api.post(MD_PATH, json=body)
    assert resp.status_code == 422, resp.text
    [cause] = resp.json()["details"]["causes"]
    assert cause["field"] == "spec.accelerators.selectors[0]"
    assert "1:" in cause["message"]  # CEL's line:column
    assert stored(api) == []
