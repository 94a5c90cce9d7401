from aviator.api import admission, kinds
from aviator.placement.validation import selector_errors


def md(accelerators: dict[str, object]) -> dict[str, object]:
    body = {
        "metadata": {"name": "chat"},
        "spec": {"model": {"name": "m"}, "accelerators": accelerators},
    }
    return admission.admit(body, kind=kinds.MODEL_DEPLOYMENT, namespace="default")


def test_bad_selectors_are_named_by_field_with_the_cel_message() -> None:
    obj = md(
        {
            "firstAvailable": [
                {
                    "deviceClassName": "gpu.nvidia.com",
                    "selectors": ["device.driver == 'x'", "device.driver ==="],
                },
                {"deviceClassName": "cpu", "selectors": ["nosuchfunc(device)"]},
            ]
        }
    )
    errors = {e.field: e.message for e in selector_errors(kinds.MODEL_DEPLOYMENT, obj)}
    assert set(errors) == {
        "spec.accelerators.firstAvailable[0].selectors[1]",
        "spec.accelerators.firstAvailable[1].selectors[0]",
    }
    assert "nosuchfunc" in errors["spec.accelerators.firstAvailable[1].selectors[0]"]


def test_short_form_and_device_classes_and_good_selectors() -> None:
    good = md(
        {
            "deviceClassName": "gpu.nvidia.com",
            "selectors": [
                "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0"
            ],
        }
    )
    assert selector_errors(kinds.MODEL_DEPLOYMENT, good) == []
    bad = md({"deviceClassName": "gpu.nvidia.com", "selectors": ["device.driver"]})
    [error] = selector_errors(kinds.MODEL_DEPLOYMENT, bad)
    assert error.field == "spec.accelerators.selectors[0]"
    dc = admission.admit(
        {"metadata": {"name": "x"}, "spec": {"selectors": [{"cel": {"expression": "(("}}]}},
        kind=kinds.DEVICE_CLASS,
        namespace=None,
    )
    [error] = selector_errors(kinds.DEVICE_CLASS, dc)
    assert error.field == "spec.selectors[0].cel.expression"
