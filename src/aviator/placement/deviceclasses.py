"""The device classes aviator ships, as the upstream DRA drivers define them.

Data, not code: each class is a DeviceClass object with the CEL selector its driver's Helm chart
installs (sources below). The plane creates any that are missing at start, like a driver
installation would; users may edit or add classes with ``aviator apply``.

Sources:
- ``gpu.nvidia.com``: kubernetes-sigs/dra-driver-nvidia-gpu,
  ``deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-gpu.yaml`` (full GPUs: ``type == 'gpu'``).
- ``gpu.amd.com``: ROCm/k8s-gpu-dra-driver, ``deployments/helm/k8s-gpu-dra-driver/templates/deviceclass.yaml``.
- ``gaudi.intel.com``: intel/intel-resource-drivers-for-kubernetes, ``deployments/gaudi/``.
- ``tpu.google.com``: kubernetes-sigs/dra-driver-google-tpu.
- ``cpu``: kubernetes-sigs/dra-driver-cpu, whose driver is named ``dra.cpu``.
"""

from __future__ import annotations

from typing import Any

from aviator.api.meta import GROUP_VERSION

_SELECTORS: tuple[tuple[str, str, str | None], ...] = (
    # (class name, CEL selector, extendedResourceName)
    (
        "gpu.nvidia.com",
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",
        "nvidia.com/gpu",
    ),
    ("gpu.amd.com", "device.driver == 'gpu.amd.com'", "amd.com/gpu"),
    ("gaudi.intel.com", "device.driver == 'gaudi.intel.com'", "habana.ai/gaudi"),
    ("tpu.google.com", "device.driver == 'tpu.google.com'", "google.com/tpu"),
    ("cpu", "device.driver == 'dra.cpu'", None),
)


def builtin_device_classes() -> list[dict[str, Any]]:
    """Fresh wire objects of the shipped classes (callers may mutate them)."""
    out = []
    for name, expression, extended in _SELECTORS:
        spec: dict[str, Any] = {"selectors": [{"cel": {"expression": expression}}]}
        if extended is not None:
            spec["extendedResourceName"] = extended
        out.append(
            {
                "apiVersion": GROUP_VERSION,
                "kind": "DeviceClass",
                "metadata": {"name": name, "labels": {"aviator.dev/builtin": "true"}},
                "spec": spec,
            }
        )
    return out
