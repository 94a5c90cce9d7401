"""Throughput of DRA CEL device selectors (``aviator.placement.cel``) over a synthetic fleet.

Builds N ResourceSlice-shaped devices (NVIDIA H100/A100/L4, AMD MI300X, Intel Gaudi 3, CPU
sockets), converts each once with ``selector_context`` (timed), then evaluates one compiled selector
over every device, for each of the selectors below, and prints evaluations per second (best of
``--runs``). The last line is the same first selector without context reuse (``evaluate`` given the
plain device, converting it on every call), to show what the reuse buys.

    .venv/bin/python bench/cel_selectors.py [--devices 10000] [--runs 3]

(Not ``bench/cel.py``: run as a script, that name would shadow the ``cel`` binding on the import
path, and ruff would class ``import cel`` as first-party.)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from aviator.placement.cel import CompiledSelector, compile_selector, selector_context

SELECTORS = (
    "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
    'device.capacity[device.driver].memory.isGreaterThan(quantity("40Gi"))',
    "device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^.*a100.*$')",
    "device.attributes[device.driver].productName.lowerAscii().contains('a100')",
    "has(device.attributes['gpu.nvidia.com'].cudaComputeCapability) && "
    "device.attributes['gpu.nvidia.com'].cudaComputeCapability.isGreaterThan(semver('8.0.0'))",
)

_MODELS: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    # driver, type, productName, memory, extra attributes
    ("gpu.nvidia.com", "gpu", "NVIDIA H100 80GB HBM3", "80Gi",
     {"architecture": {"string": "Hopper"}, "cudaComputeCapability": {"version": "9.0.0"}}),
    ("gpu.nvidia.com", "gpu", "NVIDIA A100-SXM4-40GB", "40Gi",
     {"architecture": {"string": "Ampere"}, "cudaComputeCapability": {"version": "8.0.0"}}),
    ("gpu.nvidia.com", "gpu", "NVIDIA L4", "24Gi",
     {"architecture": {"string": "Ada Lovelace"}, "cudaComputeCapability": {"version": "8.9.0"}}),
    ("gpu.amd.com", "amdgpu", "AMD Instinct MI300X", "192Gi",
     {"driverVersion": {"version": "6.8.5"}, "partitionProfile": {"string": "spx_nps1"}}),
    ("gaudi.intel.com", "gaudi", "Intel Gaudi 3", "128Gi", {}),
    ("dra.cpu", "cpu", "AMD EPYC 9175F", "256Gi", {"numaNode": {"int": 0}}),
)  # fmt: skip


def fleet(count: int) -> list[dict[str, Any]]:
    devices = []
    for i in range(count):
        driver, kind, product, memory, extra = _MODELS[i % len(_MODELS)]
        devices.append(
            {
                "name": f"dev-{i}",
                "driver": driver,
                "attributes": {
                    "type": {"string": kind},
                    "productName": {"string": product},
                    "uuid": {"string": f"GPU-{i:08x}-0000-0000-0000-000000000000"},
                    "resource.kubernetes.io/pcieRoot": {"string": f"pci0000:{i % 4:02x}"},
                    **extra,
                },
                "capacity": {"memory": {"value": memory}},
            }
        )
    return devices


def best_rate(count: int, runs: int, body: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    devices = fleet(args.devices)
    selectors = [compile_selector(e) for e in SELECTORS]
    domains = frozenset().union(*(s.domains for s in selectors))
    start = time.perf_counter()
    contexts = [selector_context(d, domains=domains) for d in devices]
    built = time.perf_counter() - start
    print(
        f"selector_context: {len(devices) / built:>10,.0f} devices/s "
        f"({built / len(devices) * 1e6:.1f} µs each)"
    )

    def over_fleet(selector: CompiledSelector) -> Callable[[], object]:
        return lambda: [selector.evaluate(c) for c in contexts]

    for selector in selectors:
        verdicts = [selector.evaluate(c) for c in contexts]
        matched = sum(v.matched for v in verdicts)
        excluded = sum(v.error is not None for v in verdicts)
        rate = best_rate(len(contexts), args.runs, over_fleet(selector))
        print(
            f"{rate:>10,.0f} evals/s  matched {matched:>5}  excluded {excluded:>5}  "
            f"{selector.expression}"
        )
    first = selectors[0]
    sample = devices[: max(1, len(devices) // 10)]
    rate = best_rate(len(sample), 1, lambda: [first.evaluate(d) for d in sample])
    print(f"{rate:>10,.0f} evals/s  without context reuse  {first.expression}")


if __name__ == "__main__":
    main()
