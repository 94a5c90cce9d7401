from typing import Any

import pytest

from aviator.api import admission, errors, kinds

H100 = {
    "name": "gpu-0",
    "driver": "gpu.nvidia.com",
    "attributes": {
        "type": "gpu",
        "productName": "NVIDIA H100 80GB HBM3",
        "cudaComputeCapability": {"version": "9.0.0"},
        "index": 0,
        "mig": False,
        "resource.kubernetes.io/pcieRoot": "pci0000:00",
    },
    "capacity": {"memory": "80Gi", "multiprocessors": {"value": "132"}},
}


def node(*devices: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "node-a"},
        "spec": {"region": "eu-west", "devices": list(devices), **spec},
    }


def test_friendly_attributes_and_capacity_become_the_dra_shape() -> None:
    out = admission.admit(node(H100), kind=kinds.NODE, namespace=None)
    device = out["spec"]["devices"][0]
    assert device["attributes"] == {
        "type": {"string": "gpu"},
        "productName": {"string": "NVIDIA H100 80GB HBM3"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "index": {"int": 0},
        "mig": {"bool": False},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
    }
    assert device["capacity"] == {"memory": {"value": "80Gi"}, "multiprocessors": {"value": "132"}}
    assert "namespace" not in out["metadata"] or out["metadata"]["namespace"] is None


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ({**H100, "attributes": {"x": {"version": "9"}}}, "semantic version"),
        ({**H100, "attributes": {"x": {"float": 1.5}}}, "unknown type 'float'"),
        ({**H100, "attributes": {"x": 1.5}}, "expected a string, integer, boolean"),
        ({**H100, "attributes": {"bad name!": "x"}}, "invalid attribute name"),
        ({**H100, "capacity": {"memory": "80Qi"}}, "not a quantity"),
        ({**H100, "driver": "Not A Driver"}, "invalid driver name"),
        ({**H100, "name": "GPU_0"}, "DNS-1123"),
    ],
)
def test_bad_devices_are_refused_with_the_field(device: dict[str, Any], fragment: str) -> None:
    with pytest.raises(errors.Invalid) as info:
        admission.admit(node(device), kind=kinds.NODE, namespace=None)
    assert any(
        c.field.startswith("spec.devices[0]") and fragment in c.message for c in info.value.causes
    ), info.value


def test_duplicate_device_names_are_refused() -> None:
    with pytest.raises(errors.Invalid, match="is invalid") as info:
        admission.admit(node(H100, H100), kind=kinds.NODE, namespace=None)
    assert "duplicate device name 'gpu-0'" in str(info.value)


def test_nodes_and_device_classes_are_cluster_scoped() -> None:
    body = node(H100)
    body["metadata"]["namespace"] = "default"
    with pytest.raises(errors.Invalid, match="cluster-scoped"):
        admission.admit(body, kind=kinds.NODE, namespace=None)
    dc = {
        "metadata": {"name": "gpu.nvidia.com"},
        "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]},
    }
    out = admission.admit(dc, kind=kinds.DEVICE_CLASS, namespace=None)
    assert out["spec"]["selectors"][0]["cel"]["expression"] == "device.driver == 'gpu.nvidia.com'"


def md(accelerators: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat"},
        "spec": {"model": {"name": "m"}, "accelerators": accelerators},
    }


def test_a_claim_is_one_class_or_ordered_alternatives() -> None:
    short = admission.admit(
        md({"deviceClassName": "gpu.amd.com", "count": 2}),
        kind=kinds.MODEL_DEPLOYMENT,
        namespace="default",
    )
    assert short["spec"]["accelerators"]["deviceClassName"] == "gpu.amd.com"
    for bad, message in (
        ({}, "requires `deviceClassName` or a non-empty `firstAvailable`"),
        ({"deviceClassName": "cpu", "firstAvailable": [{"deviceClassName": "cpu"}]}, "not both"),
        ({"deviceClassName": "cpu", "count": 0}, "greater than or equal to 1"),
    ):
        with pytest.raises(errors.Invalid) as info:
            admission.admit(md(bad), kind=kinds.MODEL_DEPLOYMENT, namespace="default")
        assert any(message in c.message for c in info.value.causes), info.value


def test_alternatives_of_the_short_form() -> None:
    from aviator.api.modeldeployment import AcceleratorClaim

    claim = AcceleratorClaim(device_class_name="gpu.nvidia.com", selectors=["true"], count=2)
    [alt] = claim.alternatives()
    assert (alt.name, alt.device_class_name, alt.selectors, alt.count) == (
        "gpu.nvidia.com",
        "gpu.nvidia.com",
        ["true"],
        2,
    )
