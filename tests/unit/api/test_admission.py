from typing import Any

import pytest

from aviator.api import admission, errors, kinds


def md(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **spec},
    }


def causes(exc: errors.ApiError) -> dict[str, str]:
    return {c.field: c.message for c in exc.causes}


def test_defaults_are_applied_and_replicas_shorthand_is_canonical() -> None:
    obj = admission.admit(md(replicas=2), kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert obj["metadata"]["namespace"] == "default"
    assert obj["spec"]["replicas"] == {"min": 2, "max": 2}
    assert obj["spec"]["engine"] == "auto"
    assert obj["spec"]["priority"] == "standard"
    assert obj["spec"]["simulator"] == {
        "ttftMs": 40.0,
        "itlMs": 8.0,
        "maxNumSeqs": 64,
        "maxWaiting": 1000,
    }


def test_status_in_the_body_is_ignored() -> None:
    body = md()
    body["status"] = {"readyReplicas": 99}
    obj = admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert obj["status"]["readyReplicas"] == 0


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (md(replicas="two"), "spec.replicas", "got str 'two'"),
        (md(replicas=True), "spec.replicas", "expected an integer"),
        (
            md(replicas={"min": 3, "max": 1}),
            "spec.replicas",
            "max (1) must be greater than or equal to min (3)",
        ),
        (md(replicas={"min": -1}), "spec.replicas.min", "greater than or equal to 0"),
        (
            md(engine="tgi"),
            "spec.engine",
            "'auto', 'sim', 'vllm', 'sglang', 'llamacpp' or 'external'",
        ),
        (md(engine="external"), "spec", "requires `external.url`"),
        (md(bogus=1), "spec.bogus", "unknown field"),
        (md(engineArgs=["--x", 3]), "spec.engineArgs[1]", "valid string"),
        (md(env={"1BAD": "x"}), "spec.env", "invalid environment variable name"),
        (md(external={"url": "ftp://x"}, engine="external"), "spec.external.url", "pattern"),
        ({**md(), "kind": "Replica"}, "kind", "expected 'ModelDeployment'"),
        ({**md(), "apiVersion": "v1"}, "apiVersion", "expected 'aviator.dev/v1alpha1'"),
    ],
)
def test_invalid_fields_are_named_with_what_was_expected(
    body: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(errors.Invalid) as info:
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    found = causes(info.value)
    assert field in found, found
    assert fragment in found[field]


def test_missing_model_name_is_required() -> None:
    body = md()
    body["spec"]["model"] = {}
    with pytest.raises(errors.Invalid) as info:
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert causes(info.value) == {"spec.model.name": "required value"}


@pytest.mark.parametrize("name", ["Chat", "chat_1", "-chat", "chat-", "a" * 64, "chat.v1"])
def test_model_deployment_names_must_be_dns1123_labels(name: str) -> None:
    body = md()
    body["metadata"]["name"] = name
    with pytest.raises(errors.Invalid) as info:
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert "metadata.name" in causes(info.value)


def test_replica_names_may_be_subdomains() -> None:
    assert admission.validate_name("chat.v1", kind=kinds.REPLICA) is None
    assert admission.validate_name("chat.v1", kind=kinds.MODEL_DEPLOYMENT) is not None


def test_path_and_body_must_agree() -> None:
    body = md()
    body["metadata"]["namespace"] = "other"
    with pytest.raises(errors.Invalid) as info:
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default", name="else")
    found = causes(info.value)
    assert "must match the namespace in the path" in found["metadata.namespace"]
    assert "must match the name in the path" in found["metadata.name"]


def test_labels_are_validated() -> None:
    body = md()
    body["metadata"]["labels"] = {"ok/key": "fine", "bad key": "x"}
    with pytest.raises(errors.Invalid) as info:
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert "invalid label key 'bad key'" in causes(info.value)["metadata.labels"]


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_a_body_that_is_not_an_object_is_a_bad_request(body: Any) -> None:
    with pytest.raises(errors.BadRequest):
        admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")


def test_missing_metadata_is_invalid() -> None:
    with pytest.raises(errors.Invalid) as info:
        admission.admit({"spec": {}}, kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    assert "metadata" in causes(info.value)


def test_status_admission_replaces_only_status() -> None:
    current = admission.admit(md(), kind=kinds.MODEL_DEPLOYMENT, namespace="default")
    out = admission.admit_status(
        {"status": {"readyReplicas": 2}, "spec": {"model": {"name": "other"}}},
        kind=kinds.MODEL_DEPLOYMENT,
        current=current,
    )
    assert out["status"]["readyReplicas"] == 2
    assert out["spec"] == current["spec"]
    with pytest.raises(errors.Invalid) as info:
        admission.admit_status(
            {"status": {"readyReplicas": "x"}}, kind=kinds.MODEL_DEPLOYMENT, current=current
        )
    assert "status.readyReplicas" in causes(info.value)
