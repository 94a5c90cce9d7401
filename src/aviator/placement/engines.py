"""Which model-server engine runs on which DRA driver: the compatibility matrix, as data.

One row of :data:`MATRIX` per (engine, driver) pair an engine's documentation supports, with the
device attributes it needs (e.g. vLLM on CUDA needs ``cudaComputeCapability`` ≥ 7.0) and where
that is written. Vendor names live in this table only; the functions read rows.

``sim``, the built-in simulator, runs anywhere: it needs no device, so it is the fallback when no
real engine fits a device, and it is what runs when a placement lands on a *declared* device this
machine does not have (see :func:`choose_engine`).

Attributes are a device's DRA ``attributes`` map: bare (``cudaComputeCapability``) or qualified
(``gpu.nvidia.com/cudaComputeCapability``) names, values plain (``"8.0"``) or typed
(``{"version": "8.0.0"}``). A requirement on an attribute the device does not publish is not held
against it: declared inventories often leave attributes out, and the drivers named here publish
the ones required.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aviator.api.devices import plain_attribute

__all__ = [
    "ANY_DRIVER",
    "DRIVER_ALIASES",
    "ENGINES",
    "MATRIX",
    "SIMULATOR",
    "AtLeast",
    "EngineSupport",
    "OneOf",
    "Requirement",
    "choose_engine",
    "compatible_engines",
    "engines_for",
    "support_for",
]

ENGINES = ("vllm", "sglang", "llamacpp", "sim")
"""Every engine, in preference order: ``auto`` takes the first that fits."""
SIMULATOR = "sim"
ANY_DRIVER = "*"
"""The driver of a row that fits every device (and no device at all)."""


@dataclass(frozen=True, slots=True)
class AtLeast:
    """The attribute is a version at least ``minimum`` (``8.9`` ≥ ``7.0``; ``9.0.0`` ≥ ``7.5``)."""

    attribute: str
    minimum: str

    def holds(self, value: Any) -> bool:
        found, wanted = _version(value), _version(self.minimum)
        if found is None or wanted is None:
            return False
        width = max(len(found), len(wanted))
        return found + (0,) * (width - len(found)) >= wanted + (0,) * (width - len(wanted))


@dataclass(frozen=True, slots=True)
class OneOf:
    """The attribute is one of ``values`` (compared case-insensitively)."""

    attribute: str
    values: frozenset[str]

    def holds(self, value: Any) -> bool:
        return isinstance(value, str) and value.casefold() in {v.casefold() for v in self.values}


Requirement = AtLeast | OneOf


@dataclass(frozen=True, slots=True)
class EngineSupport:
    """One engine on one DRA driver."""

    engine: str
    driver: str
    """DRA driver name, or :data:`ANY_DRIVER`."""
    backend: str
    """The engine's name for the platform (CUDA, ROCm, …)."""
    requirements: tuple[Requirement, ...]
    """Attribute conditions a device must meet (all of them)."""
    notes: str
    source: str
    """Where the support is documented."""


MATRIX: tuple[EngineSupport, ...] = (
    EngineSupport(
        engine="vllm",
        driver="gpu.nvidia.com",
        backend="CUDA",
        requirements=(AtLeast("cudaComputeCapability", "7.0"),),
        notes="Compute capability 7.0 or higher (V100, T4, A100, L4, L40S, H100, H200, …).",
        source="https://docs.vllm.ai/en/latest/getting_started/installation/gpu.html (CUDA: "
        "'GPU: compute capability 7.0 or higher')",
    ),
    EngineSupport(
        engine="vllm",
        driver="gpu.amd.com",
        backend="ROCm",
        requirements=(),
        notes="MI200s (gfx90a), MI300 (gfx942), MI350 (gfx950), Radeon RX 7900 (gfx1100/1101) and "
        "RX 9000 (gfx1200/1201); ROCm 6.3+. Not checked: the AMD driver publishes productName "
        "and deviceID, not the gfx target.",
        source="vllm-project/vllm docs/getting_started/installation/gpu.rocm.inc.md (requirements)",
    ),
    EngineSupport(
        engine="vllm",
        driver="gpu.intel.com",
        backend="XPU",
        requirements=(),
        notes="Intel Data Center GPU Max and Arc GPUs. Beyond the issue's matrix, documented by vLLM.",
        source="https://docs.vllm.ai/en/latest/getting_started/installation/ (GPU: Intel XPU)",
    ),
    EngineSupport(
        engine="vllm",
        driver="gaudi.intel.com",
        backend="HPU (vllm-gaudi plugin)",
        # The Gaudi DRA driver publishes model "Gaudi" / "Gaudi2" / "Gaudi3"
        # (intel/intel-resource-drivers-for-kubernetes pkg/gaudi/device/device.go ModelNames).
        requirements=(OneOf("model", frozenset({"Gaudi2", "Gaudi3"})),),
        notes="The vLLM Hardware Plugin for Intel Gaudi (vllm-project/vllm-gaudi); Gaudi 2 or 3, "
        "Intel Gaudi software 1.24+.",
        source="https://docs.vllm.ai/projects/gaudi/en/latest/general/faq.html (system requirements)",
    ),
    EngineSupport(
        engine="vllm",
        driver="tpu.google.com",
        backend="TPU (tpu-inference)",
        # tpuGen as the TPU DRA driver publishes it: "v5lite"/"v5litepod" are v5e
        # (kubernetes-sigs/dra-driver-google-tpu cmd/tpu-dra-kubeletplugin/util.go AcceleratorGen).
        requirements=(OneOf("tpuGen", frozenset({"v5lite", "v5litepod", "v6e"})),),
        notes="vLLM TPU recommends v7x, v6e and v5e (v3, v4, v5p experimental, not admitted here); "
        "v7x is left out until its tpuGen spelling is confirmed.",
        source="https://docs.vllm.ai/projects/tpu/en/latest/ (Compatible TPU Generations)",
    ),
    EngineSupport(
        engine="vllm",
        driver="dra.cpu",
        backend="CPU",
        requirements=(),
        notes="x86 (avx512f recommended, avx2 limited), Arm NEON, Apple silicon, s390x; FP32/FP16/BF16.",
        source="https://docs.vllm.ai/en/latest/getting_started/installation/cpu.html",
    ),
    EngineSupport(
        engine="sglang",
        driver="gpu.nvidia.com",
        backend="CUDA",
        requirements=(AtLeast("cudaComputeCapability", "7.5"),),
        notes="sm75 and newer ('SGlang only supports sm 75 and above').",
        source="https://docs.sglang.io/get_started/install.html; "
        "github.com/opendatalab/MinerU/issues/3416 (the sm75 error message)",
    ),
    EngineSupport(
        engine="sglang",
        driver="gpu.amd.com",
        backend="ROCm",
        requirements=(),
        notes="Instinct MI300X/MI325X/MI355X (gfx942/gfx950); Radeon is not supported upstream.",
        source="https://docs.sglang.io/docs/hardware-platforms/amd_gpu",
    ),
    EngineSupport(
        engine="llamacpp",
        driver="gpu.nvidia.com",
        backend="CUDA",
        requirements=(),
        notes="llama-server with the CUDA backend.",
        source="ggml-org/llama.cpp README.md (Supported backends) and docs/build.md",
    ),
    EngineSupport(
        engine="llamacpp",
        driver="gpu.amd.com",
        backend="HIP",
        requirements=(),
        notes="llama-server with the HIP (ROCm) backend.",
        source="ggml-org/llama.cpp README.md (Supported backends) and docs/build.md",
    ),
    EngineSupport(
        engine="llamacpp",
        driver="gpu.intel.com",
        backend="SYCL",
        requirements=(),
        notes="llama-server with the SYCL backend (Intel GPUs).",
        source="ggml-org/llama.cpp docs/backend/SYCL.md",
    ),
    EngineSupport(
        engine="llamacpp",
        driver="dra.cpu",
        backend="CPU",
        requirements=(),
        notes="Any x86 or Arm CPU. There is no llama.cpp backend for TPU or Gaudi: there it would "
        "leave the device idle on the host CPU, so those drivers have no llama.cpp row.",
        source="ggml-org/llama.cpp README.md",
    ),
    EngineSupport(
        engine="sim",
        driver=ANY_DRIVER,
        backend="simulated",
        requirements=(),
        notes="aviator's built-in vLLM-compatible simulator; with a device profile "
        "(aviator.placement.profiles.sim_options) it answers like that device.",
        source="aviator.sim",
    ),
)
"""The matrix. The issue states it as: vLLM on CUDA, ROCm, Gaudi, TPU and CPU; SGLang on CUDA
and ROCm; llama.cpp and the simulator anywhere ("anywhere" for llama.cpp being every driver it
has a backend for)."""

DRIVER_ALIASES: Mapping[str, str] = {
    # The DeviceClass names aviator ships, where they differ from the driver name
    # (aviator.placement.deviceclasses): class "cpu" selects driver "dra.cpu".
    "cpu": "dra.cpu",
}
"""Device class names accepted in place of the driver they select."""


def _canonical(driver: str) -> str:
    return DRIVER_ALIASES.get(driver, driver)


def _version(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    if not re.fullmatch(r"v?\d+(\.\d+)*", text):
        return None
    return tuple(int(part) for part in text.lstrip("v").split("."))


def _satisfied(row: EngineSupport, driver: str, attributes: Mapping[str, Any]) -> bool:
    for requirement in row.requirements:
        value = plain_attribute(driver, attributes, requirement.attribute)
        if value is not None and not requirement.holds(value):
            return False
    return True


def _rows(engine: str, driver: str) -> Iterable[EngineSupport]:
    return (row for row in MATRIX if row.engine == engine and row.driver in (driver, ANY_DRIVER))


def support_for(engine: str, driver: str) -> EngineSupport | None:
    """The matrix row for ``engine`` on ``driver`` (attributes not checked), or None."""
    return next(iter(_rows(engine, _canonical(driver))), None)


def compatible_engines(driver: str, attributes: Mapping[str, Any]) -> list[str]:
    """Engines that run on a device of ``driver`` with these ``attributes``, in preference order
    (:data:`ENGINES`); the simulator, last, always fits."""
    driver = _canonical(driver)
    return [
        engine
        for engine in ENGINES
        if any(_satisfied(row, driver, attributes) for row in _rows(engine, driver))
    ]


def engines_for(drivers: Iterable[str]) -> dict[str, list[str]]:
    """For each driver (in the order given), the engines that support it, attributes aside:
    the execution paths a claim with these alternatives could take."""
    return {driver: compatible_engines(driver, {}) for driver in drivers}


def choose_engine(
    requested: str,
    driver: str,
    attributes: Mapping[str, Any],
    *,
    available: Collection[str] | None = None,
) -> str | None:
    """The engine a replica placed on this device runs, or None when ``requested`` cannot run.

    ``requested`` ``auto`` takes the first compatible real engine (:data:`ENGINES` order) among
    ``available`` ones, and the simulator when none fits. An explicit engine is returned only if
    it is compatible with the device and available. ``available`` names the engines installed
    where the replica will run (None: all of them); the simulator is always available.

    Why the simulator is the fallback: the machines this project runs on have no GPU. A placement
    on a *declared* device (an inventory for what-if planning, or a cluster described but not
    present) still has to run something, so the plane runs the simulator there, configured with
    that device's performance profile, and the replica answers as that device would.
    """
    usable = compatible_engines(driver, attributes)

    def installed(engine: str) -> bool:
        return engine == SIMULATOR or available is None or engine in available

    if requested == "auto":
        return next(
            (e for e in usable if e != SIMULATOR and installed(e)),
            SIMULATOR,
        )
    if requested in usable and installed(requested):
        return requested
    return None
