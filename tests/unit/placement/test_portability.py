"""The portability report: vendors as data, paths and flags per deployment, the fleet's HHI."""

from __future__ import annotations

import ast
import inspect
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api.modeldeployment import ModelDeployment
from aviator.api.replica import Replica
from aviator.placement import engines, portability
from aviator.placement.deviceclasses import builtin_device_classes
from aviator.placement.portability import (
    HIGHLY_CONCENTRATED,
    MODERATELY_CONCENTRATED,
    NO_PATH,
    NOT_OBSERVED,
    RUNS_ANYWHERE,
    SINGLE_PATH,
    UNCONCENTRATED,
    VENDORS,
    concentration,
    hhi,
    report,
    vendor_of,
)

NVIDIA, AMD, GAUDI, TPU, CPU = (
    "gpu.nvidia.com",
    "gpu.amd.com",
    "gaudi.intel.com",
    "tpu.google.com",
    "dra.cpu",
)
ALL_ENGINES = ["vllm", "sglang", "llamacpp", "sim"]


def path(
    driver: str,
    *,
    product: str | None = None,
    engines_: list[str] | None = None,
    request: str | None = None,
) -> dict[str, Any]:
    return {
        "request": request or driver,
        "deviceClass": driver,
        "driver": driver,
        "product": product,
        "count": 1,
        "devices": 8,
        "free": 8,
        "replicas": 8,
        "fitsNow": 8,
        "engines": ALL_ENGINES if engines_ is None else engines_,
    }


def md(
    name: str,
    *paths: dict[str, Any],
    namespace: str = "default",
    claim: dict[str, Any] | None = None,
    engine: str = "auto",
    generation: int = 1,
    observed: int | None = 1,
    uid: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": f"org/{name}"}, "engine": engine}
    if claim is not None:
        spec["accelerators"] = claim
    status: dict[str, Any] = {"alternatives": list(paths)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "generation": generation,
        },
        "spec": spec,
        "status": status,
    }


def claim(*classes: str) -> dict[str, Any]:
    if len(classes) == 1:
        return {"deviceClassName": classes[0]}
    return {"firstAvailable": [{"deviceClassName": c} for c in classes]}


def replica(
    name: str,
    *devices: tuple[str, str],
    node: str = "n1",
    namespace: str = "default",
    owner: str | None = None,
    owner_uid: str | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """``devices``: (driver, device name) pairs on ``node``; ``owner`` a deployment name."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {}}
    if owner is not None:
        metadata["labels"]["aviator.dev/model-deployment"] = owner
        metadata["ownerReferences"] = [{
            "apiVersion": "aviator.dev/v1alpha1", "kind": "ModelDeployment", "name": owner,
            "uid": owner_uid or f"uid-{namespace}-{owner}", "controller": True,
        }]  # fmt: skip
    if label is not None:
        metadata["labels"]["aviator.dev/model-deployment"] = label
    return {
        "apiVersion": "aviator.dev/v1alpha1",
        "kind": "Replica",
        "metadata": metadata,
        "spec": {
            "model": {"name": "org/m"},
            "engine": "sim",
            "node": node,
            "devices": [{"request": d, "driver": d, "device": dev} for d, dev in devices],
        },
    }


def row(result: portability.FleetReport, name: str) -> portability.DeploymentPortability:
    return next(d for d in result.deployments if d.name == name)


# -- vendors as data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "vendor"),
    [
        (NVIDIA, "NVIDIA"),
        (AMD, "AMD"),
        (GAUDI, "Intel"),
        (TPU, "Google"),
        (CPU, "CPU"),
        ("cpu", "CPU"),  # the DeviceClass name that stands for driver dra.cpu
        ("gpu.example.com", "example.com"),
        ("neuron.aws.example.org", "aws.example.org"),
        ("example.com", "example.com"),
        ("localdriver", "localdriver"),
    ],
)
def test_vendor_of_reads_the_table_then_falls_back_to_the_driver_domain(
    driver: str, vendor: str
) -> None:
    assert vendor_of(driver) == vendor


def test_every_shipped_device_class_and_matrix_driver_has_a_vendor() -> None:
    shipped = set()
    for dc in builtin_device_classes():
        for selector in dc["spec"]["selectors"]:
            shipped.update(
                re.findall(r"device\.driver == '([^']+)'", selector["cel"]["expression"])
            )
    assert shipped == {NVIDIA, AMD, GAUDI, TPU, CPU}
    matrix = {row.driver for row in engines.MATRIX} - {engines.ANY_DRIVER}
    assert shipped | matrix <= set(VENDORS)
    assert vendor_of("gpu.intel.com") == vendor_of(GAUDI)  # one vendor, two drivers


VENDOR_WORDS = ("nvidia", "amd", "intel", "google", "cuda", "rocm", "gaudi", "tpu")


def test_no_vendor_name_appears_in_code_outside_the_vendor_table() -> None:
    tree = ast.parse(inspect.getsource(portability))
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.ClassDef):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        for statement in body:
            for leaf in ast.walk(statement):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    if isinstance(statement, ast.Expr) and statement.value is leaf:
                        continue
                    text = leaf.value.lower()
                    assert not any(word in text for word in VENDOR_WORDS), (node.name, leaf.value)


def test_public_surface_is_exported() -> None:
    for name in portability.__all__:
        assert hasattr(portability, name), name


# -- HHI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([12], 10_000.0),
        ([4, 4], 5_000.0),
        ([1, 1, 1, 1], 2_500.0),
        ([3, 1], 6_250.0),  # 75² + 25²
        ([8, 4], 10_000 * (64 + 16) / 144),
        ([5, 0, 5], 5_000.0),  # a vendor with nothing allocated has no share
    ],
)
def test_hhi_is_the_sum_of_squared_percentage_shares(counts: list[int], expected: float) -> None:
    assert hhi(counts) == pytest.approx(expected)


def test_hhi_is_undefined_without_allocated_devices() -> None:
    assert hhi([]) is None
    assert hhi([0, 0]) is None


def test_hhi_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative"):
        hhi([3, -1])


@pytest.mark.parametrize(
    ("index", "band"),
    [
        (None, None),
        (0.0, UNCONCENTRATED),
        (1_499.9, UNCONCENTRATED),
        (1_500.0, MODERATELY_CONCENTRATED),  # 2010 HMG: "between 1500 and 2500"
        (2_500.0, MODERATELY_CONCENTRATED),
        (2_500.1, HIGHLY_CONCENTRATED),
        (10_000.0, HIGHLY_CONCENTRATED),
    ],
)
def test_concentration_bands_follow_the_2010_horizontal_merger_guidelines(
    index: float | None, band: str | None
) -> None:
    assert concentration(index) == band


vendor_counts = st.dictionaries(
    st.text(alphabet="abcdefghij", min_size=1, max_size=4),
    st.integers(min_value=1, max_value=1_000_000),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(vendor_counts, st.randoms(use_true_random=False))
def test_hhi_bounds_one_vendor_and_order(counts: dict[str, int], rnd: Any) -> None:
    values = list(counts.values())
    index = hhi(values)
    assert index is not None
    n = len(values)
    assert 10_000 / n <= index <= 10_000
    assert (index == 10_000) == (n == 1)
    shuffled = values[:]
    rnd.shuffle(shuffled)
    assert hhi(shuffled) == index
    if len(set(values)) == 1:
        assert index == pytest.approx(10_000 / n)


drivers = st.sampled_from([NVIDIA, AMD, GAUDI, TPU, CPU, "gpu.example.com"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(drivers, min_size=0, max_size=4), min_size=1, max_size=10),
    st.randoms(use_true_random=False),
)
def test_report_hhi_counts_each_allocated_device_once_whatever_the_order(
    held: list[list[str]], rnd: Any
) -> None:
    reps = [
        replica(f"r{i}", *((d, f"dev-{i}-{j}") for j, d in enumerate(ds)), node=f"n{i % 3}")
        for i, ds in enumerate(held)
    ]
    result = report([], reps)
    counts: dict[str, int] = {}
    for ds in held:
        for d in ds:
            counts[vendor_of(d)] = counts.get(vendor_of(d), 0) + 1
    assert result.allocated_devices == sum(counts.values())
    assert {v.vendor: v.devices for v in result.by_vendor} == counts
    assert result.hhi == hhi(counts.values())
    if result.hhi is not None:
        assert 10_000 / len(counts) <= result.hhi <= 10_000
        assert (result.hhi == 10_000) == (len(counts) == 1)
        assert sum(v.share for v in result.by_vendor) == pytest.approx(1.0)
    rnd.shuffle(reps)
    again = report([], reps)
    assert again.hhi == result.hhi
    assert again.by_vendor == result.by_vendor


# -- per deployment ------------------------------------------------------------------------------


def test_one_vendor_is_single_path_however_many_products() -> None:
    locked = md(
        "locked",
        path(NVIDIA, product="H100"),
        path(NVIDIA, product="L40S"),
        claim=claim(NVIDIA),
    )
    portable = md("portable", path(NVIDIA), path(AMD), claim=claim(NVIDIA, AMD))
    result = report([portable, locked], [])
    assert [d.name for d in result.deployments] == ["locked", "portable"]
    first = row(result, "locked")
    assert (first.paths, first.vendors, first.drivers) == (2, ("NVIDIA",), (NVIDIA,))
    assert first.flags == (SINGLE_PATH,)
    second = row(result, "portable")
    assert (second.paths, second.vendors, second.drivers) == (2, ("NVIDIA", "AMD"), (NVIDIA, AMD))
    assert second.flags == ()


def test_vendors_follow_the_claims_preference_order() -> None:
    result = report([md("x", path(GAUDI), path(AMD), path(GAUDI), claim=claim(GAUDI, AMD))], [])
    assert row(result, "x").vendors == ("Intel", "AMD")


def test_a_claim_without_any_path_is_flagged_no_path() -> None:
    result = report([md("nowhere", claim=claim(TPU))], [])
    only = row(result, "nowhere")
    assert (only.paths, only.vendors, only.engines, only.flags) == (0, (), (), (NO_PATH,))


def test_a_deployment_whose_paths_were_not_computed_yet_is_not_called_pathless() -> None:
    fresh = md("fresh", claim=claim(NVIDIA), observed=None)
    stale = md("stale", path(NVIDIA), claim=claim(NVIDIA, AMD), generation=2, observed=1)
    result = report([fresh, stale], [])
    assert row(result, "fresh").flags == (NOT_OBSERVED,)
    assert row(result, "stale").flags == (NOT_OBSERVED, SINGLE_PATH)


def test_engines_are_the_union_of_the_paths_engines_in_preference_order() -> None:
    result = report(
        [
            md(
                "x",
                path(GAUDI, engines_=["vllm", "sim"]),
                path(AMD, engines_=["vllm", "sglang", "sim"]),
                path(CPU, engines_=["llamacpp", "newengine", "sim"]),
                claim=claim(GAUDI, AMD, CPU),
            )
        ],
        [],
    )
    assert row(result, "x").engines == ("vllm", "sglang", "llamacpp", "sim", "newengine")


def test_a_pinned_engine_narrows_the_paths_to_those_it_runs_on() -> None:
    pinned = md(
        "pinned",
        path(NVIDIA, engines_=["vllm", "sglang", "sim"]),
        path(GAUDI, engines_=["vllm", "sim"]),
        claim=claim(NVIDIA, GAUDI),
        engine="sglang",
    )
    stranded = md(
        "stranded", path(GAUDI, engines_=["vllm", "sim"]), claim=claim(GAUDI), engine="llamacpp"
    )
    legacy = md("legacy", path(AMD, engines_=[]), claim=claim(AMD), engine="sglang")
    result = report([pinned, stranded, legacy], [])
    first = row(result, "pinned")
    assert (first.paths, first.vendors, first.engines) == (1, ("NVIDIA",), ("sglang",))
    assert first.flags == (SINGLE_PATH,)
    second = row(result, "stranded")
    assert (second.paths, second.engines, second.flags) == (0, (), (NO_PATH,))
    # Paths reported before they carried engines say nothing against the pinned engine.
    third = row(result, "legacy")
    assert (third.paths, third.vendors, third.engines) == (1, ("AMD",), ("sglang",))


def test_a_deployment_without_a_claim_runs_anywhere_unflagged() -> None:
    result = report([md("plain", engine="sim")], [replica("plain-0", owner="plain")])
    plain = row(result, "plain")
    assert (plain.claim, plain.paths, plain.vendors, plain.flags) == (False, 0, (), ())
    assert plain.engines == ("sim",)
    assert plain.runs_on == ()
    assert plain.to_dict()["note"] == RUNS_ANYWHERE
    assert "note" not in row(report([md("a", path(AMD), claim=claim(AMD))], []), "a").to_dict()


# -- where replicas run --------------------------------------------------------------------------


def test_runs_on_is_the_vendors_of_the_devices_its_replicas_hold() -> None:
    portable = md("portable", path(NVIDIA), path(AMD), claim=claim(NVIDIA, AMD))
    reps = [
        replica("portable-0", (AMD, "gpu-0"), node="mi300x", owner="portable"),
        replica("portable-1", (NVIDIA, "gpu-0"), (NVIDIA, "gpu-1"), node="h100", owner="portable"),
        replica("portable-2", owner="portable"),  # not placed yet
    ]
    assert row(report([portable], reps), "portable").runs_on == ("NVIDIA", "AMD")


def test_a_vendor_outside_the_paths_still_shows_where_it_runs() -> None:
    moved = md("moved", path(NVIDIA), claim=claim(NVIDIA))
    reps = [replica("moved-0", (TPU, "tpu-0"), (GAUDI, "hpu-0"), owner="moved")]
    assert row(report([moved], reps), "moved").runs_on == ("Google", "Intel")


def test_replicas_belong_by_controller_uid_else_by_label_in_their_namespace() -> None:
    chat = md("chat", path(NVIDIA), path(AMD), claim=claim(NVIDIA, AMD), uid="new-uid")
    other = md("chat", path(NVIDIA), claim=claim(NVIDIA), namespace="team")
    reps = [
        # owned by a deleted deployment of the same name: not adopted
        replica("chat-old", (GAUDI, "hpu-0"), owner="chat", owner_uid="old-uid"),
        replica("chat-0", (AMD, "gpu-0"), owner="chat", owner_uid="new-uid"),
        replica("chat-manual", (NVIDIA, "gpu-1"), label="chat"),  # no owner: the label decides
        replica("team-0", (TPU, "tpu-0"), node="t", namespace="other", label="chat"),
    ]
    result = report([chat, other], reps)
    by_ns = {(d.namespace, d.name): d for d in result.deployments}
    assert by_ns["default", "chat"].runs_on == ("NVIDIA", "AMD")
    assert by_ns["team", "chat"].runs_on == ()
    assert [d.namespace for d in result.deployments] == ["default", "team"]
    # Every allocated device counts towards the fleet, owned or not.
    assert result.allocated_devices == 4


# -- the fleet -----------------------------------------------------------------------------------


def test_fleet_shares_and_hhi_of_allocated_devices() -> None:
    reps = [
        replica("a", (NVIDIA, "gpu-0"), (NVIDIA, "gpu-1"), node="h100"),
        replica("b", (NVIDIA, "gpu-2"), (NVIDIA, "gpu-3"), node="h100"),
        replica("c", (AMD, "gpu-0"), node="mi300x"),
        replica("d", (GAUDI, "hpu-0"), node="gaudi"),
    ]
    result = report([], reps)
    assert result.allocated_devices == 6
    assert [(v.vendor, v.devices) for v in result.by_vendor] == [
        ("NVIDIA", 4),
        ("AMD", 1),
        ("Intel", 1),
    ]
    assert [v.share for v in result.by_vendor] == pytest.approx([4 / 6, 1 / 6, 1 / 6])
    assert result.hhi == pytest.approx(10_000 * (16 + 1 + 1) / 36)  # 5,000
    assert result.band == HIGHLY_CONCENTRATED
    five = (NVIDIA, AMD, GAUDI, TPU, CPU)
    evenly = report([], [replica(f"r{i}", (d, "x"), node=d) for i, d in enumerate(five)])
    assert evenly.hhi == pytest.approx(10_000 / 5)
    assert evenly.band == MODERATELY_CONCENTRATED


def test_a_device_held_twice_counts_once() -> None:
    reps = [replica("a", (NVIDIA, "gpu-0")), replica("b", (NVIDIA, "gpu-0"))]
    assert report([], reps).allocated_devices == 1
    # the same device name on two nodes is two devices
    reps = [replica("a", (NVIDIA, "gpu-0"), node="x"), replica("b", (AMD, "gpu-0"), node="y")]
    assert report([], reps).hhi == 5_000.0


def test_no_allocated_device_leaves_the_hhi_undefined() -> None:
    result = report([md("plain")], [replica("plain-0", owner="plain")])
    assert (result.allocated_devices, result.by_vendor, result.hhi, result.band) == (
        0,
        (),
        None,
        None,
    )
    assert result.to_dict()["fleet"]["hhi"] is None


def test_typed_and_wire_objects_give_the_same_report() -> None:
    mds = [md("x", path(NVIDIA), path(CPU), claim=claim(NVIDIA, "cpu"))]
    reps = [replica("x-0", (CPU, "cpu-0"), owner="x")]
    typed = report([ModelDeployment.from_raw(m) for m in mds], [Replica.from_raw(r) for r in reps])
    assert typed == report(mds, reps)
    assert row(typed, "x").vendors == ("NVIDIA", "CPU")
    assert row(typed, "x").runs_on == ("CPU",)


def test_the_document_form_is_json_ready_and_camel_cased() -> None:
    mds = [md("x", path(NVIDIA), claim=claim(NVIDIA))]
    reps = [replica("x-0", (NVIDIA, "gpu-0"), owner="x")]
    doc = json.loads(json.dumps(report(mds, reps).to_dict()))
    assert doc == {
        "deployments": [
            {
                "namespace": "default",
                "name": "x",
                "claim": True,
                "engine": "auto",
                "paths": 1,
                "vendors": ["NVIDIA"],
                "engines": ALL_ENGINES,
                "drivers": [NVIDIA],
                "runsOn": ["NVIDIA"],
                "flags": [SINGLE_PATH],
            }
        ],
        "fleet": {
            "allocatedDevices": 1,
            "byVendor": [{"vendor": "NVIDIA", "devices": 1, "share": 1.0}],
            "hhi": 10_000.0,
            "concentration": HIGHLY_CONCENTRATED,
            "thresholds": portability.HHI_SOURCE,
        },
    }
