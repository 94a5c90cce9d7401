"""The API door's pure helpers and its configuration loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio.config import kube_config
from tests.unit.kube.kubeconfig import write_kubeconfig

from aviator.api import errors, labels
from aviator.kube.api import (
    NoCredentials,
    Resource,
    error_of,
    load_configuration,
    resource_path,
    selector_text,
)

SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", namespaced=True, kind="EndpointSlice")
PODS = Resource("", "v1", "pods", namespaced=True, kind="Pod")
POLICIES = Resource("aviator.dev", "v1alpha1", "policies", namespaced=False, kind="Policy")


def test_paths() -> None:
    assert resource_path(SLICES) == "/apis/discovery.k8s.io/v1/endpointslices"
    assert (
        resource_path(SLICES, namespace="ns")
        == "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"
    )
    assert resource_path(PODS, namespace="ns", name="p") == "/api/v1/namespaces/ns/pods/p"
    assert (
        resource_path(POLICIES, namespace="ignored", name="p", subresource="status")
        == "/apis/aviator.dev/v1alpha1/policies/p/status"
    )


keys = st.sampled_from(["app", "aviator.dev/model-deployment", "tier"])
words = st.text(alphabet="abcxyz019-", min_size=1, max_size=6)
clauses = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", keys, words),
    st.builds(lambda k, v: f"{k}!={v}", keys, words),
    st.builds(
        lambda k, vs: f"{k} in ({','.join(vs)})", keys, st.lists(words, min_size=1, max_size=3)
    ),
    st.builds(
        lambda k, vs: f"{k} notin ({','.join(vs)})", keys, st.lists(words, min_size=1, max_size=3)
    ),
    keys,
    st.builds(lambda k: f"!{k}", keys),
)


@given(st.lists(clauses, min_size=1, max_size=4))
def test_selector_text_parses_back_to_the_same_selector(parts: list[str]) -> None:
    selector = labels.parse(",".join(parts))
    text = selector_text(selector)
    assert text is not None
    assert labels.parse(text) == selector


def test_an_empty_selector_is_no_query() -> None:
    assert selector_text(None) is None
    assert selector_text(labels.parse("")) is None


@pytest.mark.parametrize(
    ("code", "verb", "reason", "expected"),
    [
        (400, "get", "BadRequest", errors.BadRequest),
        (401, "list", "Unauthorized", errors.Unauthorized),
        (403, "list", "Forbidden", errors.Forbidden),
        (404, "get", "NotFound", errors.NotFound),
        (409, "create", "AlreadyExists", errors.AlreadyExists),
        (409, "create", "Object Already Exists", errors.AlreadyExists),
        (409, "patch", "Conflict", errors.Conflict),
        (409, "delete", "Conflict", errors.Conflict),
        (410, "watch", "Expired", errors.Gone),
        (422, "create", "Invalid", errors.Invalid),
        (429, "list", "TooManyRequests", errors.TooManyRequests),
        (500, "get", "InternalError", errors.InternalError),
        (503, "get", "ServiceUnavailable", errors.ServiceUnavailable),
        (504, "get", "Timeout", errors.ServiceUnavailable),
        (418, "get", "Teapot", errors.BadRequest),
    ],
)
def test_status_codes_map_to_aviator_errors(
    code: int, verb: str, reason: str, expected: type[errors.ApiError]
) -> None:
    error = error_of(
        code, {"kind": "Status", "code": code, "reason": reason, "message": "m"}, verb=verb
    )
    assert type(error) is expected
    assert error.message == "m"


def test_a_status_body_keeps_its_details() -> None:
    error = error_of(
        429,
        {"message": "slow down", "details": {"name": "a", "kind": "Agent", "retryAfterSeconds": 3}},
        verb="list",
    )
    assert (error.name, error.kind, error.retry_after) == ("a", "Agent", 3.0)
    bare = error_of(502, b"<html>bad gateway</html>", verb="get")
    assert isinstance(bare, errors.ServiceUnavailable)
    assert bare.message == "the Kubernetes API answered 502 to a get"


async def test_a_kubeconfig_names_the_server(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kubeconfig", "http://127.0.0.1:6443", contexts=("one", "two"), namespace="x"
    )
    before = path.read_text()
    configuration = await load_configuration(kubeconfig=path, context="two", environ={})
    assert configuration.host == "http://127.0.0.1:6443"
    assert path.read_text() == before  # never written back


async def test_a_context_picks_the_kubeconfig_even_in_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kubeconfig(
        tmp_path / "kubeconfig", "http://127.0.0.1:6443", contexts=("one", "two"), namespace="x"
    )
    # The library reads $KUBECONFIG once, at import: point its default at our file instead.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    in_a_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    # No service account files here: taking the Pod's path would fail instead.
    configuration = await load_configuration(context="two", environ=in_a_pod)
    assert configuration.host == "http://127.0.0.1:6443"


async def test_missing_credentials_are_service_unavailable(tmp_path: Path) -> None:
    with pytest.raises(NoCredentials, match="no Kubernetes credentials"):
        await load_configuration(kubeconfig=tmp_path / "nope", environ={})
    with pytest.raises(errors.ServiceUnavailable, match="no Kubernetes credentials"):
        # "in a cluster" but without the service account's files (this is no Pod)
        await load_configuration(
            environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        )
    path = write_kubeconfig(
        tmp_path / "kubeconfig", "http://127.0.0.1:6443", contexts=("one", "two"), namespace="x"
    )
    with pytest.raises(errors.ServiceUnavailable, match="no Kubernetes credentials"):
        await load_configuration(kubeconfig=path, context="three", environ={})
