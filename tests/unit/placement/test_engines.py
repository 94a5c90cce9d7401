"""The engine x driver matrix: as the issue states it, attribute-aware, data not branches."""

from __future__ import annotations

import ast
import inspect
import types

import pytest

from aviator.placement import engines, profiles
from aviator.placement.engines import (
    ANY_DRIVER,
    ENGINES,
    MATRIX,
    SIMULATOR,
    AtLeast,
    OneOf,
    choose_engine,
    compatible_engines,
    engines_for,
    support_for,
)

NVIDIA, AMD, GAUDI, TPU, CPU = (
    "gpu.nvidia.com",
    "gpu.amd.com",
    "gaudi.intel.com",
    "tpu.google.com",
    "dra.cpu",
)
H100 = {
    "productName": {"string": "NVIDIA H100 80GB HBM3"},
    "cudaComputeCapability": {"version": "9.0.0"},
}


def drivers_of(engine: str) -> set[str]:
    return {row.driver for row in MATRIX if row.engine == engine}


def test_the_matrix_is_the_one_the_issue_states() -> None:
    # vLLM: CUDA, ROCm, Gaudi, TPU, CPU (plus Intel XPU, which vLLM also documents).
    assert drivers_of("vllm") >= {NVIDIA, AMD, GAUDI, TPU, CPU}
    assert drivers_of("vllm") - {NVIDIA, AMD, GAUDI, TPU, CPU} == {"gpu.intel.com"}
    # SGLang: CUDA and ROCm.
    assert drivers_of("sglang") == {NVIDIA, AMD}
    # The simulator: anywhere, whatever the driver, even one nobody has heard of.
    assert drivers_of("sim") == {ANY_DRIVER}
    for driver in (NVIDIA, AMD, GAUDI, TPU, CPU, "gpu.intel.com", "npu.example.com"):
        assert compatible_engines(driver, {})[-1] == SIMULATOR
    # llama.cpp: every driver it has a backend for, CPU included.
    assert drivers_of("llamacpp") == {NVIDIA, AMD, "gpu.intel.com", CPU}


def test_every_row_is_documented() -> None:
    assert {row.engine for row in MATRIX} == set(ENGINES)
    for row in MATRIX:
        assert row.backend and row.notes and row.source, row
    pairs = [(row.engine, row.driver) for row in MATRIX]
    assert len(pairs) == len(set(pairs))


def test_engines_come_in_preference_order() -> None:
    assert compatible_engines(NVIDIA, H100) == ["vllm", "sglang", "llamacpp", "sim"]
    assert compatible_engines(AMD, {"productName": "AMD_Instinct_MI300X"}) == [
        "vllm",
        "sglang",
        "llamacpp",
        "sim",
    ]
    assert compatible_engines(CPU, {}) == ["vllm", "llamacpp", "sim"]
    assert compatible_engines(TPU, {"tpuGen": "v6e"}) == ["vllm", "sim"]
    assert compatible_engines(GAUDI, {"model": "Gaudi3"}) == ["vllm", "sim"]


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ({"version": "6.1.0"}, ["llamacpp", "sim"]),  # Pascal: below every minimum but llama.cpp's
        ({"version": "7.0.0"}, ["vllm", "llamacpp", "sim"]),  # V100: vLLM yes, SGLang (sm75+) no
        ("7.5", ["vllm", "sglang", "llamacpp", "sim"]),  # T4, plain value
        ({"version": "8.9.0"}, ["vllm", "sglang", "llamacpp", "sim"]),
        ({"version": "10.0.0"}, ["vllm", "sglang", "llamacpp", "sim"]),  # 10 > 7 numerically
    ],
)
def test_cuda_compute_capability_gates_the_cuda_engines(
    capability: object, expected: list[str]
) -> None:
    assert compatible_engines(NVIDIA, {"cudaComputeCapability": capability}) == expected


def test_attributes_may_be_qualified_by_the_driver_domain() -> None:
    old = {"gpu.nvidia.com/cudaComputeCapability": {"version": "6.0.0"}}
    assert "vllm" not in compatible_engines(NVIDIA, old)


def test_an_unpublished_attribute_is_not_held_against_the_device() -> None:
    assert "vllm" in compatible_engines(NVIDIA, {"productName": "NVIDIA L40S"})
    assert "vllm" in compatible_engines(TPU, {})


def test_an_unreadable_attribute_fails_its_requirement() -> None:
    assert "vllm" not in compatible_engines(NVIDIA, {"cudaComputeCapability": "unknown"})
    assert "vllm" not in compatible_engines(NVIDIA, {"cudaComputeCapability": True})


def test_vllm_runs_on_the_gaudi_and_tpu_generations_it_supports() -> None:
    assert "vllm" in compatible_engines(GAUDI, {"model": {"string": "Gaudi2"}})
    assert "vllm" not in compatible_engines(GAUDI, {"model": "Gaudi"})  # first generation
    for generation in ("v5lite", "v5litepod", "v6e", "V6E"):
        assert "vllm" in compatible_engines(TPU, {"tpuGen": generation}), generation
    assert "vllm" not in compatible_engines(TPU, {"tpuGen": "v4"})  # experimental upstream


def test_requirements_compare_versions_numerically() -> None:
    assert AtLeast("x", "7.0").holds("7")
    assert AtLeast("x", "7.5").holds("12.0")
    assert not AtLeast("x", "7.5").holds("7.4.9")
    assert not AtLeast("x", "7.0").holds(None)
    assert OneOf("x", frozenset({"Gaudi3"})).holds("gaudi3")
    assert not OneOf("x", frozenset({"Gaudi3"})).holds(3)


def test_the_cpu_device_class_name_stands_for_its_driver() -> None:
    assert compatible_engines("cpu", {}) == compatible_engines(CPU, {})
    assert support_for("vllm", "cpu") is support_for("vllm", CPU) is not None


def test_engines_for_maps_each_alternative_to_its_engines() -> None:
    paths = engines_for([NVIDIA, AMD, CPU, "npu.example.com"])
    assert list(paths) == [NVIDIA, AMD, CPU, "npu.example.com"]
    assert paths[NVIDIA] == ["vllm", "sglang", "llamacpp", "sim"]
    assert paths[CPU] == ["vllm", "llamacpp", "sim"]
    assert paths["npu.example.com"] == ["sim"]


def test_auto_takes_the_first_compatible_real_engine() -> None:
    assert choose_engine("auto", NVIDIA, H100) == "vllm"
    assert choose_engine("auto", NVIDIA, {"cudaComputeCapability": "6.1"}) == "llamacpp"
    assert choose_engine("auto", TPU, {"tpuGen": "v6e"}) == "vllm"
    assert choose_engine("auto", CPU, {}) == "vllm"


def test_auto_falls_back_to_the_simulator() -> None:
    # No real engine fits the device...
    assert choose_engine("auto", GAUDI, {"model": "Gaudi"}) == SIMULATOR
    assert choose_engine("auto", "npu.example.com", {}) == SIMULATOR
    # ...or none is installed where the replica runs (this project's GPU-less machines).
    assert choose_engine("auto", NVIDIA, H100, available=()) == SIMULATOR
    assert choose_engine("auto", NVIDIA, H100, available={"sglang"}) == "sglang"


def test_an_explicit_engine_must_be_compatible_and_available() -> None:
    assert choose_engine("sglang", NVIDIA, H100) == "sglang"
    assert choose_engine("sglang", TPU, {"tpuGen": "v6e"}) is None
    assert choose_engine("sglang", NVIDIA, {"cudaComputeCapability": "7.0"}) is None
    assert choose_engine("vllm", NVIDIA, H100, available={"sglang"}) is None
    assert choose_engine("llamacpp", GAUDI, {}) is None
    assert choose_engine("no-such-engine", NVIDIA, H100) is None
    # The simulator runs anywhere and is always there.
    assert choose_engine("sim", TPU, {}, available=()) == SIMULATOR


VENDOR_WORDS = (
    "nvidia",
    "amd",
    "intel",
    "google",
    "cuda",
    "rocm",
    "gaudi",
    "tpu",
    "h100",
    "h200",
    "a100",
    "l40",
    "mi300",
    "epyc",
    "xeon",
)


@pytest.mark.parametrize("module", [engines, profiles], ids=lambda m: m.__name__)
def test_no_vendor_name_appears_in_code_outside_the_data_tables(module: types.ModuleType) -> None:
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring may explain; code may not branch on vendors
        for statement in body:
            for leaf in ast.walk(statement):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    if isinstance(statement, ast.Expr) and statement.value is leaf:
                        continue  # attribute docstrings of dataclass fields
                    text = leaf.value.lower()
                    assert not any(word in text for word in VENDOR_WORDS), (node.name, leaf.value)


def test_public_surface_is_exported() -> None:
    for name in engines.__all__:
        assert hasattr(engines, name), name
