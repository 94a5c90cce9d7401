"""Rendering a ModelDeployment into upstream objects: the mapping, rule by rule, and validity."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.k8s.validation import (
    KUBERNETES_VERSIONS,
    MISSING_PICKER,
    admitted_md,
    bundled_versions,
    pool_errors,
    validate_core,
)

from aviator.k8s.render import (
    CLAIM_NAME,
    DEFAULT_ENGINE_IMAGES,
    UNVERIFIED_ENGINE_IMAGES,
    EndpointPicker,
    RenderError,
    RenderOptions,
    _quantity,
    engine_image,
    image_key,
    parse_engine_images,
    parse_kubernetes_version,
    render,
)
from aviator.placement.engines import MATRIX
from aviator.placement.quantity import parse_quantity


def md(spec: dict[str, Any], *, name: str = "chat", **meta: Any) -> Any:
    return admitted_md(
        {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "team-a", **meta},
            "spec": {"model": {"name": "m", "source": "hf://org/m"}, **spec},
        }
    )


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(set(kinds)) == len(kinds)
    return {o["kind"]: o for o in objects}


GPU_CLAIM = {
    "firstAvailable": [
        {
            "deviceClassName": "gpu.nvidia.com",
            "count": 2,
            "selectors": ["device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"],
        },
        {"deviceClassName": "gpu.amd.com", "name": "mi300"},
    ],
    "constraints": [{"matchAttribute": "resource.kubernetes.io/pcieRoot"}],
}

SOVEREIGN = {"allowedRegions": ["eu-west"], "excludedDrivers": ["gpu.intel.com"]}

CASES: dict[str, dict[str, Any]] = {
    "sim": {"engine": "sim", "replicas": 2},
    "auto-no-devices": {"replicas": {"min": 1, "max": 4}},
    "vllm-short-claim": {
        "engine": "vllm",
        "accelerators": {"deviceClassName": "gpu.nvidia.com", "count": 1, "selectors": ["true"]},
    },
    "auto-alternatives": {
        "accelerators": GPU_CLAIM,
        "replicas": {"min": 2, "max": 8},
        "sovereignty": SOVEREIGN,
    },
    "sglang": {
        "engine": "sglang",
        "accelerators": {"deviceClassName": "gpu.amd.com", "strategy": "spread"},
    },
    "llamacpp-autoscaled": {
        "engine": "llamacpp",
        "accelerators": {"deviceClassName": "cpu"},
        "replicas": {"min": 1, "max": 3},
    },
    "scale-from-zero": {"engine": "sim", "replicas": {"min": 0, "max": 2}},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_object_validates_strictly(case: str, version: str) -> None:
    rendered = render(md(CASES[case], uid="4f1c9a57-0000-4000-8000-000000000001"))
    for obj in rendered.objects:
        if obj["apiVersion"] == "inference.networking.k8s.io/v1":
            continue  # a CRD: validated against the upstream CRD below
        assert validate_core(obj, version) == version, obj["kind"]


def test_the_supported_versions_are_bundled() -> None:
    assert set(KUBERNETES_VERSIONS) <= bundled_versions()


@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_pools_validate_against_the_upstream_crd(case: str) -> None:
    picker = RenderOptions(endpoint_picker=EndpointPicker(name="epp"))
    pool = by_kind(render(md(CASES[case]), options=picker).objects)["InferencePool"]
    assert pool_errors(pool) == []
    # The vendored CRD is v1.0.0's, before v1.5.0 made endpointPickerRef optional: without a
    # picker, that is the one thing it objects to (see src/aviator/k8s/schemas/README.md).
    plain = by_kind(render(md(CASES[case])).objects)["InferencePool"]
    assert pool_errors(plain) == MISSING_PICKER


def test_the_pool_validator_is_not_vacuous() -> None:
    pool = by_kind(
        render(
            md({"engine": "sim"}), options=RenderOptions(endpoint_picker=EndpointPicker(name="epp"))
        ).objects
    )["InferencePool"]
    pool["spec"]["targetPorts"] = [{"number": 70000}]
    pool["spec"]["endpointPickerRef"]["failureMode"] = "Maybe"
    assert len(pool_errors(pool)) == 2


def test_objects_come_in_apply_order_with_one_selector() -> None:
    objects = render(md(CASES["auto-alternatives"])).objects
    assert [o["kind"] for o in objects] == [
        "ResourceClaimTemplate", "Deployment", "Service", "InferencePool",
        "HorizontalPodAutoscaler", "PodDisruptionBudget",
    ]  # fmt: skip
    selector = {"aviator.dev/model-deployment": "chat"}
    kinds = by_kind(objects)
    assert kinds["Deployment"]["spec"]["selector"] == {"matchLabels": selector}
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["InferencePool"]["spec"]["selector"] == {"matchLabels": selector}
    assert kinds["PodDisruptionBudget"]["spec"]["selector"] == {"matchLabels": selector}
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


def test_owner_references_only_for_live_objects() -> None:
    live = render(md(CASES["auto-alternatives"], uid="abc-123"))
    for obj in live.objects:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "aviator.dev/v1alpha1", "kind": "ModelDeployment", "name": "chat",
            "uid": "abc-123", "controller": True, "blockOwnerDeletion": True,
        }  # fmt: skip
        assert obj["metadata"]["namespace"] == "team-a"
    offline = render(md(CASES["auto-alternatives"]))
    assert all("ownerReferences" not in o["metadata"] for o in offline.objects)
    assert any("ownerReferences" in n for n in offline.notes)


def test_labels_carry_the_deployments_own_but_ours_win() -> None:
    rendered = render(md({"engine": "sim"}, labels={"team": "a", "app.kubernetes.io/name": "x"}))
    labels = by_kind(rendered.objects)["Deployment"]["metadata"]["labels"]
    assert labels["team"] == "a"
    assert labels["app.kubernetes.io/name"] == "chat"
    assert labels["app.kubernetes.io/managed-by"] == "aviator"


ONE_VLLM_IMAGE = RenderOptions(
    # One image for NVIDIA and AMD, so that no alternative is dropped for its image.
    engine_images=parse_engine_images(["vllm@gpu.nvidia.com=r/v:1", "vllm@gpu.amd.com=r/v:1"])
)


def test_first_available_alternatives_become_subrequests() -> None:
    rendered = render(md(CASES["auto-alternatives"]), options=ONE_VLLM_IMAGE)
    claim = by_kind(rendered.objects)["ResourceClaimTemplate"]
    assert claim["metadata"]["name"] == "chat-accelerators"
    devices = claim["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    assert request["name"] == CLAIM_NAME
    nvidia, amd = request["firstAvailable"]
    assert nvidia == {
        "name": "gpu-nvidia-com",
        "deviceClassName": "gpu.nvidia.com",
        "allocationMode": "ExactCount",
        "count": 2,
        "selectors": [
            {"cel": {"expression": "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"}},
            {"cel": {"expression": "device.driver != 'gpu.intel.com'"}},
        ],
    }
    assert (amd["name"], amd["count"]) == ("mi300", 1)
    assert devices["constraints"] == [
        {"requests": [CLAIM_NAME], "matchAttribute": "resource.kubernetes.io/pcieRoot"}
    ]


def test_the_short_form_is_an_exact_request_referenced_from_the_pod() -> None:
    objects = by_kind(render(md(CASES["vllm-short-claim"])).objects)
    (request,) = objects["ResourceClaimTemplate"]["spec"]["spec"]["devices"]["requests"]
    assert request == {
        "name": CLAIM_NAME,
        "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "allocationMode": "ExactCount",
            "count": 1,
            "selectors": [{"cel": {"expression": "true"}}],
        },
    }
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [
        {"name": CLAIM_NAME, "resourceClaimTemplateName": "chat-accelerators"}
    ]
    assert pod["containers"][0]["resources"]["claims"] == [{"name": CLAIM_NAME}]


def test_request_names_stay_distinct_dns_labels() -> None:
    claim = {
        "firstAvailable": [
            {"deviceClassName": "gpu.nvidia.com"},
            {"deviceClassName": "gpu.nvidia.com", "selectors": ["true"]},
        ]
    }
    template = by_kind(render(md({"engine": "vllm", "accelerators": claim})).objects)[
        "ResourceClaimTemplate"
    ]
    names = [
        s["name"] for s in template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
    ]
    assert names == ["gpu-nvidia-com", "gpu-nvidia-com-2"]


def test_engine_commands_come_from_the_adapters() -> None:
    def container(spec: dict[str, Any]) -> dict[str, Any]:
        deployment = by_kind(render(md(spec)).objects)["Deployment"]
        return deployment["spec"]["template"]["spec"]["containers"][0]

    sim = container({"engine": "sim", "engineArgs": ["--seed", "1"]})
    assert sim["image"] == RenderOptions().aviator_image
    assert sim["command"][:3] == ["python3", "-m", "aviator.sim"]
    assert sim["command"][3:7] == ["--host", "0.0.0.0", "--port", "8000"]
    assert sim["command"][-2:] == ["--seed", "1"]
    vllm = container(CASES["vllm-short-claim"])
    assert vllm["command"][:3] == ["vllm", "serve", "org/m"]
    sglang = container(CASES["sglang"])
    assert sglang["command"][:3] == ["python3", "-m", "sglang.launch_server"]
    llama = container(CASES["llamacpp-autoscaled"])
    # llama.cpp's server image has the server as its entrypoint: arguments only.
    assert "command" not in llama
    assert llama["args"][:2] == ["-hf", "org/m"]
    for c in (sim, vllm, sglang, llama):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}


def _image(rendered: Any) -> str:
    deployment = by_kind(rendered.objects)["Deployment"]
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.mark.parametrize(
    ("device_class", "image"),
    [
        ("gpu.nvidia.com", "vllm/vllm-openai:latest"),
        ("gpu.amd.com", "rocm/vllm:latest"),
        ("cpu", "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:latest"),
        ("example.com-own-class", "vllm/vllm-openai:latest"),  # not in the matrix: engine-wide
    ],
)
def test_the_engine_image_follows_the_driver(device_class: str, image: str) -> None:
    rendered = render(md({"engine": "vllm", "accelerators": {"deviceClassName": device_class}}))
    assert _image(rendered) == image


def test_every_matrix_row_has_a_default_image() -> None:
    # A new engine/driver row must not silently fall back to another platform's build.
    for row in MATRIX:
        if row.engine != "sim":  # the simulator runs from aviator's image
            assert image_key(row.engine, row.driver) in DEFAULT_ENGINE_IMAGES, row
    assert set(DEFAULT_ENGINE_IMAGES) >= UNVERIFIED_ENGINE_IMAGES


def test_alternatives_needing_another_image_are_dropped_with_a_note() -> None:
    spec = {
        "engine": "vllm",
        "accelerators": {
            "firstAvailable": [
                {"deviceClassName": "gpu.amd.com"},
                {"deviceClassName": "gpu.nvidia.com"},
                {"deviceClassName": "gpu.amd.com", "name": "big", "count": 2},
            ]
        },
    }
    rendered = render(md(spec))
    objects = by_kind(rendered.objects)
    assert _image(rendered) == "rocm/vllm:latest"
    (request,) = objects["ResourceClaimTemplate"]["spec"]["spec"]["devices"]["requests"]
    assert [r["deviceClassName"] for r in request["firstAvailable"]] == ["gpu.amd.com"] * 2
    (note,) = [n for n in rendered.notes if "dropped" in n]
    assert "spec.accelerators.firstAvailable" in note
    assert "'gpu.nvidia.com' (needs vllm/vllm-openai:latest)" in note
    # One image for every driver keeps every alternative.
    same = RenderOptions(
        engine_images=parse_engine_images(
            ["vllm@gpu.nvidia.com=reg/all:1", "vllm@gpu.amd.com=reg/all:1"]
        )
    )
    kept = render(md(spec), options=same)
    assert _image(kept) == "reg/all:1"
    template = by_kind(kept.objects)["ResourceClaimTemplate"]
    assert len(template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]) == 3
    assert not [n for n in kept.notes if "dropped" in n]


def test_engine_images_parse_over_the_defaults() -> None:
    images = parse_engine_images(["vllm=a/cuda:1", "vllm@cpu=a/cpu:1", "sglang@gpu.amd.com=a/s:1"])
    assert images["vllm"] == "a/cuda:1"
    assert images["vllm@dra.cpu"] == "a/cpu:1"  # the class alias names its driver
    assert images["sglang@gpu.amd.com"] == "a/s:1"
    assert images["vllm@gpu.amd.com"] == DEFAULT_ENGINE_IMAGES["vllm@gpu.amd.com"]
    # The per-driver entry wins over the engine-wide one; an unknown driver falls back.
    assert engine_image(images, engine="vllm", driver="cpu") == "a/cpu:1"
    assert engine_image(images, engine="vllm", driver="other.example.com") == "a/cuda:1"
    for bad, message in (
        ("vllm", "ENGINE[@DRIVER]=IMAGE"),
        ("sim=x", "unknown engine 'sim'"),
        ("vllm@Gpu=x", "lower case"),
        ("vllm@gpu..amd=x", "DNS subdomain"),
    ):
        with pytest.raises(RenderError, match=re.escape(message)):
            parse_engine_images([bad])


def test_an_unverified_default_image_asks_to_be_pinned() -> None:
    spec = {"engine": "vllm", "accelerators": {"deviceClassName": "gaudi.intel.com"}}
    (note,) = [n for n in render(md(spec)).notes if "unverified" in n]
    assert "--engine-image vllm@gaudi.intel.com=REF" in note
    pinned = RenderOptions(engine_images=parse_engine_images(["vllm@gaudi.intel.com=r/g:1"]))
    assert not [n for n in render(md(spec), options=pinned).notes if "unverified" in n]


def test_spec_env_overrides_the_adapters() -> None:
    deployment = by_kind(
        render(md({"engine": "vllm", "env": {"PYTHONUNBUFFERED": "0", "HF_TOKEN": "t"}})).objects
    )["Deployment"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PYTHONUNBUFFERED", "value": "0"} in env
    assert {"name": "HF_TOKEN", "value": "t"} in env
    assert [e["name"] for e in env] == sorted(e["name"] for e in env)


def test_auto_picks_the_first_engine_every_alternative_supports() -> None:
    rendered = by_kind(render(md(CASES["auto-alternatives"])).objects)
    assert rendered["Deployment"]["metadata"]["labels"]["aviator.dev/engine"] == "vllm"
    no_devices = by_kind(render(md(CASES["auto-no-devices"])).objects)
    assert no_devices["Deployment"]["metadata"]["labels"]["aviator.dev/engine"] == "sim"


def test_an_engine_drops_alternatives_it_cannot_run_on() -> None:
    claim = {"firstAvailable": [{"deviceClassName": "gpu.nvidia.com"}, {"deviceClassName": "cpu"}]}
    rendered = render(md({"engine": "sglang", "accelerators": claim}))
    template = by_kind(rendered.objects)["ResourceClaimTemplate"]
    classes = [
        s["deviceClassName"]
        for s in template["spec"]["spec"]["devices"]["requests"][0]["firstAvailable"]
    ]
    assert classes == ["gpu.nvidia.com"]
    assert any("'cpu' dropped" in n for n in rendered.notes)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"accelerators": {"deviceClassName": "my-own-class"}}, "set spec.engine"),
        ({"engine": "sglang", "accelerators": {"deviceClassName": "cpu"}}, "runs on none"),
    ],
)
def test_unrenderable_engines_are_precise_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(md(spec))


def test_an_explicit_engine_keeps_classes_the_matrix_does_not_know() -> None:
    rendered = render(md({"engine": "vllm", "accelerators": {"deviceClassName": "my-own-class"}}))
    assert by_kind(rendered.objects)["ResourceClaimTemplate"]


def test_external_renders_nothing() -> None:
    rendered = render(md({"engine": "external", "external": {"url": "http://10.0.0.5:8000"}}))
    assert rendered.objects == []
    assert "external" in rendered.notes[0]


def test_autoscaling_becomes_an_hpa_that_owns_the_count() -> None:
    spec = {
        "accelerators": GPU_CLAIM,
        "replicas": {"min": 2, "max": 8},
        "autoscaling": {"targetQueueDepth": 3, "targetKvCacheUsage": 0.75, "scaleDownStabilizationSeconds": 120.5},
    }  # fmt: skip
    objects = by_kind(render(md(spec)).objects)
    assert "replicas" not in objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert [
        (m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"]) for m in hpa["metrics"]
    ] == [
        ("vllm:num_requests_waiting", "3"),
        ("vllm:kv_cache_usage_perc", "750m"),
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 121


def test_fixed_replicas_without_an_hpa() -> None:
    objects = by_kind(render(md({"engine": "sim", "replicas": 3})).objects)
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in objects
    decided = by_kind(
        render(
            md({"engine": "sim", "replicas": 3}), options=RenderOptions(desired_replicas=5)
        ).objects
    )
    assert decided["Deployment"]["spec"]["replicas"] == 5


def test_llamacpp_is_not_autoscaled_and_says_why() -> None:
    rendered = render(md(CASES["llamacpp-autoscaled"]))
    objects = by_kind(rendered.objects)
    assert "HorizontalPodAutoscaler" not in objects
    assert objects["Deployment"]["spec"]["replicas"] == 1
    assert any("no HorizontalPodAutoscaler" in n for n in rendered.notes)


def test_scale_from_zero_keeps_one_replica_in_the_hpa() -> None:
    rendered = render(md(CASES["scale-from-zero"]))
    assert by_kind(rendered.objects)["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1
    assert any("at least 1 replica" in n for n in rendered.notes)


def test_sovereignty_and_spread() -> None:
    pod = by_kind(render(md(CASES["auto-alternatives"])).objects)["Deployment"]["spec"]["template"][
        "spec"
    ]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west"]}
            ]
        }
    ]
    assert "topologySpreadConstraints" not in pod
    spread = by_kind(render(md(CASES["sglang"])).objects)["Deployment"]["spec"]["template"]["spec"]
    (constraint,) = spread["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"


def test_endpoint_picker_reference() -> None:
    options = RenderOptions(
        endpoint_picker=EndpointPicker(name="epp", port=9003, failure_mode="FailOpen")
    )
    pool = by_kind(render(md({"engine": "sim"}), options=options).objects)["InferencePool"]
    assert pool["spec"] == {
        "selector": {"matchLabels": {"aviator.dev/model-deployment": "chat"}},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {
            "kind": "Service",
            "name": "epp",
            "port": {"number": 9003},
            "failureMode": "FailOpen",
        },
    }
    plain = by_kind(render(md({"engine": "sim"})).objects)["InferencePool"]
    assert "endpointPickerRef" not in plain["spec"]


def test_kubernetes_versions() -> None:
    assert parse_kubernetes_version("1.34") == (1, 34)
    assert parse_kubernetes_version("v1.37.2") == (1, 37)
    for bad, message in (("1.33", "too old"), ("one", "MAJOR.MINOR"), ("1", "MAJOR.MINOR")):
        with pytest.raises(RenderError, match=message):
            parse_kubernetes_version(bad)
    with pytest.raises(RenderError, match="too old"):
        render(md({"engine": "sim"}), options=RenderOptions(kubernetes_version=(1, 33)))


def test_render_does_not_change_its_input() -> None:
    deployment = md(CASES["auto-alternatives"])
    before = copy.deepcopy(deployment.to_raw())
    render(deployment)
    assert deployment.to_raw() == before


@given(st.integers(min_value=1, max_value=10_000_000))
def test_quantities_round_trip(milli: int) -> None:
    value = milli / 1000
    assert parse_quantity(_quantity(value)).nanos == milli * 1_000_000


CLASSES = ["gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com", "tpu.google.com", "cpu"]

specs = st.fixed_dictionaries(
    {
        "engine": st.sampled_from(["auto", "sim", "vllm"]),
        "replicas": st.integers(0, 4).flatmap(
            lambda low: st.fixed_dictionaries({"min": st.just(low), "max": st.integers(low, 6)})
        ),
        "env": st.dictionaries(
            st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=8), max_size=3
        ),
        "priority": st.sampled_from(["critical", "standard", "sheddable"]),
    },
    optional={
        "accelerators": st.fixed_dictionaries(
            {
                "firstAvailable": st.lists(
                    st.fixed_dictionaries(
                        {"deviceClassName": st.sampled_from(CLASSES), "count": st.integers(1, 8)}
                    ),
                    min_size=1,
                    max_size=4,
                ),
                "strategy": st.sampled_from(["pack", "spread"]),
            }
        ),
    },
)


@settings(max_examples=25, deadline=None)
@given(specs)
def test_any_renderable_deployment_renders_valid_objects(spec: dict[str, Any]) -> None:
    if spec["engine"] == "sim" or "accelerators" not in spec:
        spec.pop("accelerators", None)
    # Every class here runs vLLM (and the simulator), so nothing is refused.
    rendered = render(md(spec))
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] != "InferencePool":
            assert validate_core(obj, "1.34") == "1.34"
