"""The install bundle: valid for every supported version, least privilege, options honoured."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.unit.k8s.validation import KUBERNETES_VERSIONS, admitted_md, validate_core
from typer.testing import CliRunner

from aviator.cli.main import app
from aviator.k8s.crds import CRD_KINDS
from aviator.k8s.install import InstallError, InstallOptions, bundle
from aviator.k8s.render import RenderOptions, render

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def _rules(objects: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == role)[
        "rules"
    ]


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates(version: str) -> None:
    for obj in bundle():
        assert validate_core(obj, version) == version, obj["kind"]


def test_order_and_contents() -> None:
    objects = bundle(InstallOptions(namespace="ai", image="registry.example/aviator:1.2.3"))
    kinds = [o["kind"] for o in objects]
    assert kinds[: len(CRD_KINDS)] == ["CustomResourceDefinition"] * len(CRD_KINDS)
    assert kinds[len(CRD_KINDS)] == "Namespace"
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("ServiceAccount", "aviator-operator"), ("ServiceAccount", "aviator-gateway"),
        ("Deployment", "aviator-operator"), ("Deployment", "aviator-gateway"),
        ("Service", "aviator-gateway"), ("Role", "aviator-operator-leader-election"),
    } <= names  # fmt: skip
    for obj in objects:
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] == "ai"
        if obj["kind"] == "Deployment":
            (container,) = obj["spec"]["template"]["spec"]["containers"]
            assert container["image"] == "registry.example/aviator:1.2.3"
            assert obj["spec"]["template"]["spec"]["serviceAccountName"] == obj["metadata"]["name"]
    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert all(s["namespace"] == "ai" for s in binding["subjects"])


def test_the_gateway_only_reads() -> None:
    rules = _rules(bundle(), "aviator-gateway")
    assert all(not (set(r["verbs"]) & WRITE_VERBS) for r in rules)
    for plural in ("agents", "policies", "grants", "modeldeployments"):
        assert _allows(rules, "aviator.dev", plural, "watch")
    assert _allows(rules, "discovery.k8s.io", "endpointslices", "list")


def test_no_one_reads_secrets_or_holds_wildcards() -> None:
    objects = bundle()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"]
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]


def test_the_operator_may_manage_everything_it_renders() -> None:
    rules = _rules(bundle(), "aviator-operator")
    deployment = admitted_md(
        {
            "metadata": {"name": "m", "namespace": "default"},
            "spec": {
                "model": {"name": "m"},
                "engine": "vllm",
                "accelerators": {"deviceClassName": "gpu.nvidia.com"},
                "replicas": {"min": 1, "max": 3},
            },
        }
    )
    rendered = render(deployment, options=RenderOptions()).objects
    assert {o["kind"] for o in rendered} >= {"ResourceClaimTemplate", "HorizontalPodAutoscaler"}
    plurals = {
        "ResourceClaimTemplate": "resourceclaimtemplates", "Deployment": "deployments",
        "Service": "services", "InferencePool": "inferencepools",
        "HorizontalPodAutoscaler": "horizontalpodautoscalers",
        "PodDisruptionBudget": "poddisruptionbudgets",
    }  # fmt: skip
    for obj in rendered:
        group = obj["apiVersion"].rpartition("/")[0]
        for verb in ("create", "patch", "delete", "watch"):
            assert _allows(rules, group, plurals[obj["kind"]], verb), (obj["kind"], verb)
    for plural in ("modeldeployments", "agents", "policies", "grants"):
        assert _allows(rules, "aviator.dev", f"{plural}/status", "patch")
    # Leader election is confined to the operator's namespace.
    assert not _allows(rules, "coordination.k8s.io", "leases", "create")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (InstallOptions(namespace="Bad_NS"), "--namespace"),
        (InstallOptions(image="has space"), "--image"),
        (InstallOptions(gateway_replicas=0), "gateway replicas"),
    ],
)
def test_bad_options_are_refused(options: InstallOptions, message: str) -> None:
    with pytest.raises(InstallError, match=message):
        bundle(options)


def test_install_print_is_one_multi_document_stream() -> None:
    result = CliRunner().invoke(app, ["install", "--print", "-n", "ai", "--image", "x/aviator:1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("---\n")
    assert list(yaml.safe_load_all(result.stdout)) == bundle(
        InstallOptions(namespace="ai", image="x/aviator:1")
    )


def test_install_requires_print_and_valid_options() -> None:
    result = CliRunner().invoke(app, ["install"])
    assert result.exit_code == 2
    assert "--print" in result.stderr
    assert result.stdout == ""
    bad = CliRunner().invoke(app, ["install", "--print", "-n", "NO"])
    assert bad.exit_code == 2
    assert "--namespace 'NO'" in bad.stderr
