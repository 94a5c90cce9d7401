import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aviator.api.errors import AviatorError, FieldError
from aviator.placement import cel as placement_cel
from aviator.placement.cel import (
    MAX_EXPRESSION_BYTES,
    SelectorError,
    Verdict,
    compile_selector,
    selector_context,
)
from aviator.placement.deviceclasses import builtin_device_classes
from aviator.placement.quantity import parse_quantity

H100: dict[str, Any] = {
    "name": "gpu-0",
    "driver": "gpu.nvidia.com",
    "attributes": {
        "type": {"string": "gpu"},
        "productName": {"string": "NVIDIA H100 80GB HBM3"},
        "architecture": {"string": "Hopper"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "driverVersion": {"version": "550.54.15"},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:00"},
        "count": {"int": 8},
        "vf": {"bool": False},
    },
    "capacity": {"memory": {"value": "80Gi"}},
}
A100: dict[str, Any] = {
    "name": "gpu-1",
    "driver": "gpu.nvidia.com",
    "attributes": {
        "type": {"string": "gpu"},
        "productName": {"string": "NVIDIA A100-PCIE-40GB"},
        "architecture": {"string": "Ampere"},
        "cudaComputeCapability": {"version": "8.0.0"},
    },
    "capacity": {"memory": {"value": "40Gi"}},
}
MIG: dict[str, Any] = {
    "name": "gpu-0-mig-1g.5gb-0",
    "driver": "gpu.nvidia.com",
    "attributes": {"type": {"string": "mig"}, "profile": {"string": "1g.5gb"}},
    "capacity": {"memory": {"value": "5Gi"}},
}
MI300X: dict[str, Any] = {
    "name": "gpu-0",
    "driver": "gpu.amd.com",
    "attributes": {
        "type": {"string": "amdgpu"},
        "productName": {"string": "AMD Instinct MI300X"},
        "driverVersion": {"version": "6.8.5"},
    },
    "capacity": {"memory": {"value": "192Gi"}, "computeUnits": {"value": "304"}},
}
CPU: dict[str, Any] = {"name": "cpu-0", "driver": "dra.cpu"}
FLEET = {"h100": H100, "a100": A100, "mig": MIG, "mi300x": MI300X, "cpu": CPU}


def matching(expression: str) -> set[str]:
    selector = compile_selector(expression)
    return {name for name, device in FLEET.items() if selector.evaluate(device).matched}


def verdict(expression: str, device: dict[str, Any] = H100) -> Verdict:
    return compile_selector(expression).evaluate(device)


# --- The DRA examples (k8s-ai.md §3.4) ----------------------------------------------------------


def test_nvidia_gpu_device_class_selector() -> None:
    expression = (
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
    )
    assert matching(expression) == {"h100", "a100"}
    # Other drivers fail on the driver check first: no error, just no match.
    assert verdict(expression, MI300X) == Verdict(matched=False)


def test_product_name_regex() -> None:
    expression = (
        "device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^.*a100.*$')"
    )
    assert matching(expression) == {"a100"}
    assert verdict(expression, MI300X) == Verdict(
        matched=False, error="missing attribute gpu.nvidia.com/productName"
    )


def test_memory_is_greater_than() -> None:
    expression = "device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity(\"40Gi\"))"
    assert matching(expression) == {"h100"}  # 40Gi is not greater than 40Gi


def test_memory_compare_to() -> None:
    expression = "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0"
    assert matching(expression) == {"h100", "a100"}
    assert verdict(expression, CPU) == Verdict(
        matched=False, error="missing capacity gpu.nvidia.com/memory"
    )


def test_architecture_and_memory_from_the_resource_claim_template_example() -> None:
    expression = (
        "device.attributes['gpu.nvidia.com'].architecture == 'Ampere' &&\n"
        "device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity(\"32Gi\"))"
    )
    assert matching(expression) == {"a100"}


def test_builtin_device_classes_compile_and_select_their_vendor() -> None:
    selected = {}
    for cls in builtin_device_classes():
        (selector,) = cls["spec"]["selectors"]
        selected[cls["metadata"]["name"]] = matching(selector["cel"]["expression"])
    assert selected["gpu.nvidia.com"] == {"h100", "a100"}  # not the MIG slice
    assert selected["gpu.amd.com"] == {"mi300x"}
    assert selected["cpu"] == {"cpu"}
    assert selected["tpu.google.com"] == set()


# --- Missing attributes, domains and has() -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "device", "error"),
    [
        ("device.attributes['gpu.nvidia.com'].uuid == 'x'", H100,
         "missing attribute gpu.nvidia.com/uuid"),
        ("device.attributes['gpu.amd.com'].productName == 'x'", H100,
         "missing attribute gpu.amd.com/productName"),
        ("device.attributes['example.com']['gpu'] == 1", H100, "missing attribute example.com/gpu"),
        ("device.capacity['gpu.nvidia.com'].cores.isLessThan(quantity('1'))", H100,
         "missing capacity gpu.nvidia.com/cores"),
        ("device.attributes[device.driver].productName != ''", CPU,
         "missing attribute dra.cpu/productName"),
        ("device.attributes['resource.kubernetes.io'].pcieRoot == 'x'", MIG,
         "missing attribute resource.kubernetes.io/pcieRoot"),
        ("{'a': 1}['b'] == 1", H100, "no such key: b"),
    ],
)  # fmt: skip
def test_a_missing_name_excludes_the_device_with_a_reason(
    expression: str, device: dict[str, Any], error: str
) -> None:
    assert verdict(expression, device) == Verdict(matched=False, error=error)


def test_prefixed_names_belong_to_their_domain_and_unprefixed_to_the_driver() -> None:
    assert verdict("device.attributes['resource.kubernetes.io'].pcieRoot == 'pci0000:00'").matched
    assert verdict("device.attributes['gpu.nvidia.com'].count == 8").matched
    assert verdict("device.attributes[device.driver].vf == false").matched
    assert verdict("!has(device.attributes['gpu.nvidia.com'].pcieRoot)").matched


def test_has_guards_work_on_missing_names_and_missing_domains() -> None:
    guarded = (
        "has(device.attributes['gpu.nvidia.com'].productName) && "
        "device.attributes['gpu.nvidia.com'].productName.startsWith('NVIDIA')"
    )
    assert matching(guarded) == {"h100", "a100"}
    assert verdict(guarded, MIG) == Verdict(matched=False)  # no error: the guard held
    assert verdict(guarded, MI300X) == Verdict(matched=False)  # unknown domain: an empty map
    assert matching("!has(device.attributes['gpu.nvidia.com'].profile)") == {
        "h100",
        "a100",
        "mi300x",
        "cpu",
    }
    assert matching("'profile' in device.attributes['gpu.nvidia.com']") == {"mig"}
    assert matching("size(device.attributes['gpu.amd.com']) > 0") == {"mi300x"}


def test_an_error_on_one_side_of_or_is_absorbed_like_cel_says() -> None:
    assert verdict("device.attributes['gpu.nvidia.com'].nope == 1 || true") == Verdict(True)
    assert verdict("device.attributes['gpu.nvidia.com'].nope == 1 && false") == Verdict(False)


def test_evaluation_never_raises() -> None:
    expressions = [
        "device.attributes['gpu.nvidia.com'].productName > 1",
        "device.attributes['gpu.nvidia.com'].count.size() == 1",
        "device.attributes['gpu.nvidia.com'].count / 0 == 1",
        "[1, 2][5] == 1",
        "9223372036854775807 + device.attributes['gpu.nvidia.com'].count > 0",
        "device.attributes['gpu.nvidia.com'].productName.asInteger() == 1",
        "device.capacity['gpu.nvidia.com'].memory.isGreaterThan(semver('1.0.0'))",
        "device.attributes['gpu.nvidia.com'].productName.matches(device.driver + '(')",
        "quantity(device.attributes['gpu.nvidia.com'].productName).sign() == 1",
        "device.attributes['gpu.nvidia.com'].productName.charAt(99) == ''",
    ]
    for expression in expressions:
        for device in FLEET.values():
            result = verdict(expression, device)
            assert not result.matched
            assert result.error, (expression, device["name"])


def test_a_non_bool_result_is_an_error_verdict() -> None:
    assert verdict("device.attributes['gpu.nvidia.com'].count") == Verdict(
        matched=False, error="selector must evaluate to bool, got int 8"
    )


def test_function_errors_are_not_logged_by_the_binding(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cel"):
        result = verdict("device.capacity['gpu.nvidia.com'].memory.isGreaterThan(1)")
    assert result == Verdict(matched=False, error="no such overload: isGreaterThan(quantity, int)")
    assert not [r for r in caplog.records if r.name == "cel"]


# --- Compile-time errors ------------------------------------------------------------------------


def compile_error(expression: str) -> str:
    with pytest.raises(SelectorError) as info:
        compile_selector(expression)
    assert info.value.expression == expression
    return info.value.message


def test_syntax_error_carries_line_column_and_caret() -> None:
    message = compile_error("device.driver == ")
    assert message.startswith("ERROR: <input>:1:18: Syntax error:")
    assert message.endswith("| device.driver == \n| .................^")
    multiline = compile_error("device.driver == 'x' &&\n  device.attributes[")
    assert "<input>:2:" in multiline


def test_unknown_function_variable_and_field() -> None:
    assert compile_error("device.driver.frob() == 1") == (
        "ERROR: <input>:1:15: undeclared reference to function 'frob'\n"
        "| device.driver.frob() == 1\n"
        "| ..............^"
    )
    assert "undeclared reference to 'dev'" in compile_error("dev.driver == 'x'")
    assert "undefined field 'drivr' on device" in compile_error("device.drivr == 'x'")
    assert "cel.bind() is not supported" in compile_error("cel.bind(d, device.driver, d == 'x')")
    assert "unsupported syntax '.?'" in compile_error("device.attributes['x'].?y.orValue(1) == 1")


def test_names_the_expression_may_use() -> None:
    for expression in [
        "device.attributes.exists(d, d.startsWith('gpu'))",
        "device.attributes['gpu.nvidia.com'].all(k, k.size() > 0)",
        "[1, 2].map(x, x * 2).filter(y, y > 2).exists_one(z, z == 4)",
        "type(device.driver) == string",
        "optional.of(device.driver).hasValue()",
        "device.allowMultipleAllocations == false",
        "size(device.attributes) > 0 && int('1') == 1 && double(1) == 1.0",
        "timestamp('2026-01-01T00:00:00Z').getFullYear() == 2026",
    ]:
        compile_selector(expression)


def test_expressions_over_10_kib_are_rejected() -> None:
    head = "device.driver == '"
    fits = head + "x" * (MAX_EXPRESSION_BYTES - len(head) - 1) + "'"
    assert len(fits.encode()) == MAX_EXPRESSION_BYTES
    compile_selector(fits)
    assert compile_error(fits + " ") == (
        "expression is 10241 bytes long; may not be more than 10240 bytes"
    )
    wide = head + "é" * (MAX_EXPRESSION_BYTES // 2) + "'"  # bytes, not characters
    assert "may not be more than 10240 bytes" in compile_error(wide)


def test_a_result_that_cannot_be_bool_is_a_compile_error() -> None:
    assert compile_error("device.driver") == "selector must evaluate to bool, not string"
    assert compile_error("1 + 2") == "selector must evaluate to bool, not int"
    compile_selector("device.attributes['gpu.nvidia.com'].count")  # depends on the device


def test_invalid_literals_are_compile_errors() -> None:
    assert compile_error("device.capacity['a'].memory.isLessThan(quantity('40GB'))").startswith(
        "ERROR: <input>:1:49: quantity: '40GB': unknown suffix 'GB'"
    )
    assert "semver: 'v1' is not a semantic version" in compile_error(
        "device.attributes['a'].v == semver('v1')"
    )
    assert "matches: '(' not a valid regex" in compile_error(
        "device.attributes['a'].name.matches('(')"
    )
    assert compile_error("quantity(1) == quantity('1')") == "no such overload: quantity(int)"
    compile_selector("device.attributes['a'].v == semver('v1', true)")


def test_selector_error_is_an_aviator_value_error_and_a_field_cause() -> None:
    with pytest.raises(SelectorError) as info:
        compile_selector("device.driver ==")
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, AviatorError)
    cause = error.to_field_error("spec.selectors[0].cel.expression")
    assert cause == FieldError("spec.selectors[0].cel.expression", error.message)


def test_compiled_selectors_are_cached() -> None:
    assert compile_selector("device.driver == 'x'") is compile_selector("device.driver == 'x'")


# --- Quantities, versions and strings in CEL ----------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "quantity('1Ki') == quantity('1024')",
        "quantity('1.5Gi') == quantity('1536Mi')",
        "device.capacity['gpu.nvidia.com'].memory == quantity('80Gi')",
        "device.capacity['gpu.nvidia.com'].memory == quantity('85899345920')",
        "device.capacity['gpu.nvidia.com'].memory != quantity('80G')",
        "quantity('80G').isLessThan(device.capacity['gpu.nvidia.com'].memory)",
        "quantity('500m').compareTo(quantity('0.5')) == 0",
        "quantity('1').compareTo(quantity('999m')) == 1",
        "quantity('-1').compareTo(quantity('1n')) == -1",
        "device.capacity['gpu.nvidia.com'].memory.asInteger() == 85899345920",
        "device.capacity['gpu.nvidia.com'].memory.sub(quantity('40Gi')) == quantity('40Gi')",
        "quantity('1Gi').add(1).asInteger() == 1073741825",
        "quantity('1').sub(2).sign() == -1",
        "quantity('1.5').isInteger() == false && quantity('2k').isInteger()",
        "quantity('1500m').asApproximateFloat() == 1.5",
        "isQuantity('80Gi') && !isQuantity('80GB')",
    ],
)
def test_quantities(expression: str) -> None:
    assert verdict(expression) == Verdict(matched=True)


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("device.capacity['gpu.nvidia.com'].memory > 40", "No such overload"),
        ("device.capacity['gpu.nvidia.com'].memory < quantity('1Gi')", "No such overload"),
        ("quantity('1.5').asInteger() == 1", "asInteger: 1500m is not an integer"),
        ("quantity('1e19').asInteger() > 0", "asInteger: 10E is not an integer in the int64 range"),
        (
            "quantity(device.attributes['gpu.nvidia.com'].count) == quantity('8')",
            "no such overload: quantity(int)",
        ),
        ("device.attributes['gpu.nvidia.com'].productName.isGreaterThan('A')", "no such overload"),
    ],
)
def test_quantities_keep_their_type(expression: str, error: str) -> None:
    result = verdict(expression)
    assert not result.matched
    assert result.error is not None and result.error.startswith(error)


@pytest.mark.parametrize(
    "expression",
    [
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability.isGreaterThan(semver('8.9.0'))",
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability == semver('9.0.0')",
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability == semver('9.0.0+build.5')",
        "device.attributes['gpu.nvidia.com'].driverVersion.compareTo(semver('550.54.14')) == 1",
        "device.attributes['gpu.nvidia.com'].driverVersion.major() == 550",
        "device.attributes['gpu.nvidia.com'].driverVersion.minor() == 54",
        "device.attributes['gpu.nvidia.com'].driverVersion.patch() == 15",
        "semver('1.0.0-rc.1').isLessThan(semver('1.0.0'))",
        "semver('1.0.0-alpha').isLessThan(semver('1.0.0-alpha.1'))",
        "semver('1.0.0-alpha.1').isLessThan(semver('1.0.0-alpha.beta'))",
        "semver('1.0.0-rc.2').isLessThan(semver('1.0.0-rc.10'))",
        "semver('v1.2', true) == semver('1.2.0')",
        "semver('01.02.03', true) == semver('1.2.3')",
        "isSemver('1.2.3') && !isSemver('1.2') && isSemver('1.2', true) && !isSemver('x', true)",
    ],
)
def test_versions(expression: str) -> None:
    assert verdict(expression) == Verdict(matched=True)


def test_version_attributes_with_leading_zeros_are_normalized() -> None:
    device = {**A100, "attributes": {"driverVersion": {"version": "535.04.01"}}}
    assert verdict("device.attributes['gpu.nvidia.com'].driverVersion == semver('535.4.1')", device)


@pytest.mark.parametrize(
    "expression",
    [
        "device.attributes['gpu.nvidia.com'].productName.lowerAscii() == 'nvidia h100 80gb hbm3'",
        "device.attributes['gpu.nvidia.com'].productName.upperAscii().contains('HBM3')",
        "device.attributes['gpu.nvidia.com'].productName.startsWith('NVIDIA')",
        "device.attributes['gpu.nvidia.com'].productName.endsWith('HBM3')",
        "device.attributes['gpu.nvidia.com'].productName.matches('H[0-9]+')",
        "device.attributes['gpu.nvidia.com'].productName.indexOf('H100') == 7",
        "device.attributes['gpu.nvidia.com'].productName.lastIndexOf('H') == 17",
        "device.attributes['gpu.nvidia.com'].productName.split(' ')[1] == 'H100'",
        "device.attributes['gpu.nvidia.com'].productName.split(' ', 2)[1] == 'H100 80GB HBM3'",
        "device.attributes['gpu.nvidia.com'].productName.substring(7, 11) == 'H100'",
        "device.attributes['gpu.nvidia.com'].productName.charAt(0) == 'N'",
        "device.attributes['gpu.nvidia.com'].productName.replace(' ', '-', 1) == 'NVIDIA-H100 80GB "
        "HBM3'",
        "['a', 'b'].join('-') == 'a-b' && '  x '.trim() == 'x'",
        "'ÄB'.lowerAscii() == 'Äb'",
    ],
)
def test_string_helpers(expression: str) -> None:
    assert verdict(expression) == Verdict(matched=True)


# --- Contexts -----------------------------------------------------------------------------------


def test_one_context_serves_many_selectors_and_agrees_with_plain_devices() -> None:
    selectors = [
        compile_selector(e)
        for e in [
            "device.driver == 'gpu.nvidia.com'",
            "device.attributes['gpu.amd.com'].productName.contains('MI300')",
            "device.capacity[device.driver].memory.compareTo(quantity('64Gi')) > 0",
            "!has(device.attributes['tpu.google.com'].type)",
        ]
    ]
    for device in FLEET.values():
        ctx = selector_context(device)
        prepared = selector_context(device, domains={"gpu.amd.com", "tpu.google.com"})
        for selector in selectors:
            expected = selector.evaluate(device)
            assert selector.evaluate(ctx) == expected
            assert selector.evaluate(prepared) == expected
            assert selector.evaluate(ctx) == expected  # the padded context is reused


def test_selectors_report_the_domains_they_name() -> None:
    selector = compile_selector(
        "device.attributes['gpu.nvidia.com'].type == 'gpu' || "
        "device.capacity['gpu.amd.com'].memory.isGreaterThan(quantity('1')) || "
        "device.attributes[device.driver].x == 1"
    )
    assert selector.domains == {"gpu.nvidia.com", "gpu.amd.com"}


def test_friendly_attribute_spelling_and_quantity_objects_are_accepted() -> None:
    device = {
        "name": "d",
        "driver": "example.com",
        "attributes": {"model": "x1", "cores": 8, "fast": True},
        "capacity": {"memory": parse_quantity("1Gi"), "slots": 4},
    }
    assert verdict(
        "device.attributes['example.com'].cores == 8 && device.attributes['example.com'].fast"
        " && device.capacity['example.com'].memory == quantity('1Gi')"
        " && device.capacity['example.com'].slots == quantity('4')",
        device,
    ).matched


@pytest.mark.parametrize(
    ("device", "problem"),
    [
        ({"name": "d"}, "driver must be a non-empty string"),
        ({"name": "d", "driver": "x", "attributes": []}, "attributes must be a mapping"),
        ({"name": "d", "driver": "x", "attributes": {"a": {"float": 1.5}}}, "attribute 'a' must"),
        ({"name": "d", "driver": "x", "attributes": {"a": {"int": True}}}, "attribute 'a' must"),
        ({"name": "d", "driver": "x", "attributes": {"v": {"version": "1.x"}}}, "not a semantic"),
        ({"name": "d", "driver": "x", "capacity": {"m": {"value": "80GB"}}}, "capacity 'm'"),
    ],
)  # fmt: skip
def test_malformed_devices_are_rejected(device: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        selector_context(device)


def test_a_context_is_a_read_only_view_of_its_device() -> None:
    ctx = selector_context(H100)
    assert ctx["name"] == "gpu-0" and ctx.get("capacity") == H100["capacity"]
    assert dict(ctx) == H100 and len(ctx) == len(H100) and "driver" in ctx
    assert repr(ctx) == "SelectorContext('gpu-0', driver='gpu.nvidia.com')"
    # Code that takes device mappings can be handed contexts: nothing is converted again.
    assert compile_selector("device.attributes['gpu.nvidia.com'].count == 8").evaluate(ctx).matched


def test_exports() -> None:
    assert set(placement_cel.__all__) == {
        "MAX_EXPRESSION_BYTES",
        "CompiledSelector",
        "SelectorContext",
        "SelectorError",
        "Verdict",
        "compile_selector",
        "selector_context",
    }


# --- Properties ---------------------------------------------------------------------------------

_SUFFIXES = ["", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "e3", "e-2"]
quantity_texts = st.builds(
    lambda n, s: f"{n}{s}", st.integers(min_value=0, max_value=10**6), st.sampled_from(_SUFFIXES)
)
_COMPARE = compile_selector(
    "device.capacity['example.com'].a.compareTo(device.capacity['example.com'].b) == "
    "device.attributes['example.com'].expected"
)


@settings(max_examples=60, deadline=None)
@given(quantity_texts, quantity_texts)
def test_cel_quantity_comparison_agrees_with_python(a: str, b: str) -> None:
    qa, qb = parse_quantity(a), parse_quantity(b)
    expected = (qa > qb) - (qa < qb)
    device = {
        "name": "d",
        "driver": "example.com",
        "attributes": {"expected": {"int": expected}},
        "capacity": {"a": {"value": a}, "b": {"value": b}},
    }
    assert _COMPARE.evaluate(device) == Verdict(matched=True)
