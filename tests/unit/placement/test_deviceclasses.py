from aviator.api import admission, kinds
from aviator.placement.deviceclasses import builtin_device_classes


def test_builtin_classes_are_valid_and_named_as_the_issue_and_drivers_say() -> None:
    classes = builtin_device_classes()
    names = [c["metadata"]["name"] for c in classes]
    assert names == ["gpu.nvidia.com", "gpu.amd.com", "gaudi.intel.com", "tpu.google.com", "cpu"]
    for obj in classes:
        admission.admit(obj, kind=kinds.DEVICE_CLASS, namespace=None)


def test_each_call_returns_fresh_objects() -> None:
    first = builtin_device_classes()
    first[0]["spec"]["selectors"].clear()
    assert builtin_device_classes()[0]["spec"]["selectors"]
