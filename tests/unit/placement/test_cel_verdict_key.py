"""``CompiledSelector.verdict_key``: devices with equal keys get equal verdicts.

The allocator evaluates a selector once per distinct key and hands that verdict to every device
with the key, so a key that ignored something the verdict depends on would place replicas on the
wrong devices. The property below draws devices from small pools of values (so keys collide
often) and checks, for many expressions — matching, not matching, failing in several ways — that
equal keys always mean equal verdicts, errors included.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aviator.placement import cel

NVIDIA, AMD = "gpu.nvidia.com", "gpu.amd.com"


def gpu(name: str = "gpu-0", **overrides: Any) -> dict[str, Any]:
    device: dict[str, Any] = {
        "name": name,
        "driver": NVIDIA,
        "attributes": {
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "uuid": {"string": f"GPU-{name}"},
            "index": {"int": 0},
            "driverVersion": {"version": "570.86.15"},
        },
        "capacity": {"memory": {"value": "80Gi"}},
    }
    device.update(overrides)
    return device


def key(expression: str, device: dict[str, Any]) -> Any:
    return cel.compile_selector(expression).verdict_key(cel.selector_context(device))


PRODUCT = "device.attributes['gpu.nvidia.com'].productName.lowerAscii().contains('h100')"
MEMORY = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0"


def test_names_uuids_and_unread_attributes_do_not_split_a_shape() -> None:
    a = gpu("gpu-0")
    b = gpu("gpu-7")
    b["attributes"] = {**b["attributes"], "index": {"int": 7}, "pcieRoot": {"string": "pci1"}}
    for expression in (PRODUCT, MEMORY, "device.driver == 'gpu.nvidia.com'"):
        assert key(expression, a) is not None
        assert key(expression, a) == key(expression, b)


def test_what_the_expression_reads_splits_a_shape() -> None:
    h100 = gpu()
    l40s = gpu(attributes={**gpu()["attributes"], "productName": {"string": "NVIDIA L40S"}})
    small = gpu(capacity={"memory": {"value": "48Gi"}})
    assert key(PRODUCT, h100) != key(PRODUCT, l40s)
    assert key(PRODUCT, h100) == key(PRODUCT, small)
    assert key(MEMORY, h100) != key(MEMORY, small)
    assert key(MEMORY, h100) == key(MEMORY, l40s)
    # The same quantity spelled two ways is one value.
    assert key(MEMORY, h100) == key(MEMORY, gpu(capacity={"memory": {"value": "81920Mi"}}))
    # A per-device attribute makes a per-device key.
    uuid = "device.attributes['gpu.nvidia.com'].uuid.startsWith('GPU-')"
    assert key(uuid, gpu("gpu-0")) != key(uuid, gpu("gpu-1"))
    # The driver is always part of the key, even when the expression does not name it.
    amd = {**h100, "driver": AMD}
    assert key(MEMORY, h100) != key(MEMORY, amd)


def test_absent_true_and_one_are_three_keys() -> None:
    expression = "device.attributes['gpu.nvidia.com'].flag == true"
    keys = {
        key(expression, gpu(attributes={"flag": value}))
        for value in ({"bool": True}, {"int": 1}, {"string": "true"})
    }
    keys.add(key(expression, gpu(attributes={})))
    assert len(keys) == 4


def test_a_qualified_and_an_unqualified_name_in_the_drivers_domain_are_one_value() -> None:
    expression = "device.attributes[device.driver].productName == 'X'"
    plain = gpu(attributes={"productName": {"string": "X"}})
    qualified = gpu(attributes={"gpu.nvidia.com/productName": {"string": "X"}})
    assert key(expression, plain) == key(expression, qualified)


@pytest.mark.parametrize(
    "expression",
    [
        "size(device.attributes['gpu.nvidia.com']) > 3",
        "device.attributes['gpu.nvidia.com'].exists(k, k == 'uuid')",
        "'uuid' in device.attributes['gpu.nvidia.com']",
        "has(device.attributes.example)",
        "device.attributes[device.driver + ''].index == 0",
        "device.attributes[b'gpu.nvidia.com'].index == 0",
        "[1].exists(device, device == 1)",
        "device.driver == 'x' && size(device.capacity['gpu.nvidia.com']) == 1",
    ],
)
def test_an_expression_reading_more_than_named_values_has_no_key(expression: str) -> None:
    assert key(expression, gpu()) is None


def test_a_plain_device_mapping_has_no_key() -> None:
    assert cel.compile_selector(PRODUCT).verdict_key(gpu()) is None


# --- the property ----------------------------------------------------------------------------

EXPRESSIONS = (
    "device.attributes['gpu.nvidia.com'].productName == 'H100'",
    "device.attributes['gpu.nvidia.com'].productName.lowerAscii().contains('h100')",
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('80Gi')) >= 0",
    "device.capacity[device.driver].memory.isGreaterThan(quantity('40Gi'))",
    "device.capacity['gpu.nvidia.com'].memory > 40",  # no such overload
    "device.attributes[device.driver].mode == true",
    "device.attributes['gpu.nvidia.com'].mode == 1",
    "has(device.attributes['gpu.nvidia.com'].productName) && "
    "device.attributes['gpu.nvidia.com'].productName.startsWith('H')",
    "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('560.0.0'))",
    "device.attributes['example.com'].zone == 'a' || device.driver == 'gpu.amd.com'",
    "device.attributes['gpu.amd.com']['productName'] == 'MI300X'",
    "device.attributes.example.zone == 'a'",
    "device.allowMultipleAllocations",
    "device.attributes['gpu.nvidia.com'].index + 1 == 2",
    "device.attributes['gpu.nvidia.com'].uuid.endsWith('1')",
    "size(device.attributes['gpu.nvidia.com']) > 3",  # no key: every device its own
    "'mode' in device.attributes[device.driver]",
)


def optional(name: str, values: tuple[Any, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from((None, *values)).map(lambda v: {} if v is None else {name: v})


device_strategy = st.builds(
    lambda name, driver, parts, capacity, multiple: {
        "name": name,
        "driver": driver,
        "attributes": {k: v for part in parts for k, v in part.items()},
        "capacity": capacity,
        **({} if multiple is None else {"allowMultipleAllocations": multiple}),
    },
    st.sampled_from(("gpu-0", "gpu-1", "dev-9")),
    st.sampled_from((NVIDIA, AMD)),
    st.tuples(
        optional("productName", ({"string": "H100"}, {"string": "h100 SXM"}, {"string": "L4"})),
        optional(f"{NVIDIA}/productName", ({"string": "H100"}, {"string": "MI300X"})),
        optional(f"{AMD}/productName", ({"string": "MI300X"},)),
        optional("mode", ({"bool": True}, {"bool": False}, {"int": 1}, {"string": "1"})),
        optional("index", ({"int": 0}, {"int": 1})),
        optional("uuid", ({"string": "GPU-1"}, {"string": "GPU-2"})),
        optional("driverVersion", ({"version": "570.86.15"}, {"version": "550.0.0"})),
        optional("example.com/zone", ({"string": "a"}, {"string": "b"})),
        optional("example/zone", ({"string": "a"},)),
    ),
    optional(
        "memory",
        ({"value": "80Gi"}, {"value": "81920Mi"}, {"value": "40Gi"}, {"value": "96Gi"}),
    ),
    st.sampled_from((None, False, True)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(device_strategy, min_size=2, max_size=6))
def test_equal_keys_mean_equal_verdicts(devices: list[dict[str, Any]]) -> None:
    contexts = [cel.selector_context(d) for d in devices]
    for expression in EXPRESSIONS:
        selector = cel.compile_selector(expression)
        by_key: dict[Any, cel.Verdict] = {}
        for ctx in contexts:
            verdict = selector.evaluate(ctx)
            k = selector.verdict_key(ctx)
            if k is None:
                continue
            assert by_key.setdefault(k, verdict) == verdict, (expression, ctx)
