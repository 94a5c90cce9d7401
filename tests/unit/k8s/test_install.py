"""The install bundle: valid for every supported version, least privilege, options honoured."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.unit.k8s.validation import KUBERNETES_VERSIONS, admitted_md, validate_core
from typer.testing import CliRunner

from aviator.cli.main import app
from aviator.k8s.crds import CRD_KINDS
from aviator.k8s.install import IdentityConfig, InstallError, InstallOptions, bundle
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
        for verb in ("create", "patch", "delete", "list"):
            assert _allows(rules, group, plurals[obj["kind"]], verb), (obj["kind"], verb)
    for plural in ("modeldeployments", "grants"):
        assert _allows(rules, "aviator.dev", f"{plural}/status", "patch")
    # Leader election is confined to the operator's namespace.
    assert not _allows(rules, "coordination.k8s.io", "leases", "create")


# Every (apiGroup, resource, verb) the operator's ClusterRole may grant, and who needs it. A rule
# beyond this set fails test_the_operator_gets_exactly_what_its_code_calls: widen it here only
# with the code that makes the request.
OPERATOR_NEEDS: dict[tuple[str, str], set[str]] = {
    # kopf: list+watch the CRs it handles, patch its finalizer/annotations onto them;
    # reconciler.refresh_status: get.
    ("aviator.dev", "modeldeployments"): {"get", "list", "watch", "patch"},
    # reconciler._write_status / _reject: ObjectApi.patch_status.
    ("aviator.dev", "modeldeployments/status"): {"patch"},
    # No request: the OwnerReferencesPermissionEnforcement admission plugin requires it to set
    # blockOwnerDeletion on the rendered objects' ownerReference to the ModelDeployment.
    ("aviator.dev", "modeldeployments/finalizers"): {"update"},
    # The Grant expiry controller over KubeStore: reflector list+watch, status write get+patch.
    ("aviator.dev", "grants"): {"get", "list", "watch"},
    ("aviator.dev", "grants/status"): {"patch"},
    # reconciler: get (replica count), kopf on.event list+watch, _apply create+patch, prune
    # and cleanup list+delete.
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    # reconciler._apply (create, server-side apply), prune and cleanup (list, delete).
    ("", "services"): {"list", "create", "patch", "delete"},
    ("resource.k8s.io", "resourceclaimtemplates"): {"list", "create", "patch", "delete"},
    ("inference.networking.k8s.io", "inferencepools"): {"list", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"list", "create", "patch", "delete"},
    # reconciler._slices list; kopf on.event for EndpointSlices list+watch.
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    # reconciler._paths: the DRA fleet for capacity planning.
    ("resource.k8s.io", "resourceslices"): {"list"},
    ("resource.k8s.io", "deviceclasses"): {"list"},
    ("resource.k8s.io", "resourceclaims"): {"list"},
    # kopf's resource_observer (CRDs) and namespace_observer (with --namespace).
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    # kopf's post_event (core v1 Events).
    ("", "events"): {"create"},
}
LEADER_ELECTION_NEEDS = {
    # operator.leader.LeaderElector: get the Lease, create it, patch it (conditionally).
    ("coordination.k8s.io", "leases"): {"get", "create", "patch"},
}


def _granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_the_operator_gets_exactly_what_its_code_calls() -> None:
    objects = bundle()
    assert _granted(_rules(objects, "aviator-operator")) == OPERATOR_NEEDS
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert _granted(role["rules"]) == LEADER_ELECTION_NEEDS


def test_the_operators_declared_access_is_granted() -> None:
    # aviator.operator.resources states what the operator's code asks for; all of it must be
    # granted (the other direction is the test above).
    resources = pytest.importorskip("aviator.operator.resources")
    declared = getattr(resources, "OPERATOR_ACCESS", None)
    if declared is None:
        pytest.skip("aviator.operator.resources declares no OPERATOR_ACCESS")
    granted = _granted(_rules(bundle(), "aviator-operator"))
    for access in declared:
        assert set(access.verbs) <= granted.get((access.api_group, access.resource), set()), access
    role = next(o for o in bundle() if o["kind"] == "Role")
    for access in getattr(resources, "LEADER_ELECTION_ACCESS", ()):
        have = _granted(role["rules"]).get((access.api_group, access.resource), set())
        assert set(access.verbs) <= have, access


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _volumes(objects: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    )
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_the_operator_renders_pods_from_the_installed_images() -> None:
    objects = bundle(
        InstallOptions(image="reg/aviator:7", engine_images=("vllm@gpu.amd.com=reg/rocm:1",))
    )
    args = _container(objects, "aviator-operator")["args"]
    assert args[args.index("--image") + 1] == "reg/aviator:7"
    assert args[args.index("--engine-image") + 1] == "vllm@gpu.amd.com=reg/rocm:1"


def test_the_gateway_audits_to_a_writable_volume() -> None:
    container = _container(bundle(), "aviator-gateway")
    args = container["args"]
    # One SQLite file per Pod ($(POD_NAME) is expanded by the kubelet from the env).
    assert args[args.index("--audit-file") + 1] == "/var/lib/aviator/audit/$(POD_NAME).db"
    assert "POD_NAME" in {e["name"] for e in container["env"]}
    assert {"name": "audit", "mountPath": "/var/lib/aviator/audit"} in container["volumeMounts"]
    assert _volumes(bundle(), "aviator-gateway")["audit"] == {"name": "audit", "emptyDir": {}}
    kept = bundle(InstallOptions(audit_claim="gateway-audit"))
    assert _volumes(kept, "aviator-gateway")["audit"] == {
        "name": "audit", "persistentVolumeClaim": {"claimName": "gateway-audit"},
    }  # fmt: skip


IDENTITY = IdentityConfig(
    name="identity.yaml",
    files={"identity.yaml": "trustedIssuers: []\n", "k8s-jwks.json": '{"keys": []}'},
)


def test_the_gateway_trusts_the_issuers_of_a_mounted_identity_config() -> None:
    objects = bundle(InstallOptions(namespace="ai", identity=IDENTITY))
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert configmap["metadata"]["namespace"] == "ai"
    assert configmap["data"] == dict(IDENTITY.files)
    container = _container(objects, "aviator-gateway")
    args = container["args"]
    assert args[args.index("--identity-config") + 1] == "/etc/aviator/identity/identity.yaml"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "identity")
    assert mount == {"name": "identity", "mountPath": "/etc/aviator/identity", "readOnly": True}
    assert _volumes(objects, "aviator-gateway")["identity"]["configMap"] == {
        "name": configmap["metadata"]["name"]
    }
    # The ConfigMap comes before the Deployment that mounts it.
    kinds = [o["kind"] for o in objects]
    assert kinds.index("ConfigMap") < kinds.index("Deployment")
    assert "--identity-config" not in _container(bundle(), "aviator-gateway")["args"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_with_every_option(version: str) -> None:
    options = InstallOptions(
        identity=IDENTITY, audit_claim="audit", engine_images=("vllm=reg/v:1",)
    )
    for obj in bundle(options):
        assert validate_core(obj, version) == version, obj["kind"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (InstallOptions(namespace="Bad_NS"), "--namespace"),
        (InstallOptions(image="has space"), "--image"),
        (InstallOptions(gateway_replicas=0), "gateway replicas"),
        (InstallOptions(engine_images=("tgi=x",)), "unknown engine 'tgi'"),
        (InstallOptions(audit_claim="No"), "--audit-claim"),
        (InstallOptions(identity=IdentityConfig(name="a.yaml", files={})), "not among"),
        (
            InstallOptions(identity=IdentityConfig(name="a b", files={"a b": ""})),
            "ConfigMap key",
        ),
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


def test_install_print_reads_the_identity_files(tmp_path: Any) -> None:
    config = tmp_path / "identity.yaml"
    config.write_text("trustedIssuers: []\n")
    jwks = tmp_path / "k8s-jwks.json"
    jwks.write_text('{"keys": []}')
    result = CliRunner().invoke(
        app,
        ["install", "--print", "--identity-config", str(config), "--identity-file", str(jwks),
         "--audit-claim", "audit", "--image", "r/a:1", "--engine-image", "vllm=r/v:1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert objects == bundle(
        InstallOptions(
            image="r/a:1",
            engine_images=("vllm=r/v:1",),
            identity=IDENTITY,
            audit_claim="audit",
        )
    )
    missing = CliRunner().invoke(app, ["install", "--print", "--identity-file", str(jwks)])
    assert missing.exit_code == 2
    assert "--identity-file needs --identity-config" in missing.stderr
