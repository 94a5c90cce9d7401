"""``Node`` and ``DeviceClass``: the fleet, described the way Dynamic Resource Allocation does.

A Node carries its devices in the ``resource.k8s.io/v1`` ResourceSlice shape — ``driver``,
``attributes`` (typed: ``int``/``bool``/``string``/``version``) and ``capacity`` (quantities) — plus
where it is (region, zone). A DeviceClass names a set of devices by CEL selectors, like the
upstream ``DeviceClass``. Nothing here names a vendor: vendors appear only as data (driver names
and attribute values) in the shipped device classes and in inventories.

Admission normalizes the friendly inventory spelling into the DRA shape: a plain string, integer
or boolean attribute becomes ``{"string": …}``/``{"int": …}``/``{"bool": …}``, and a plain
capacity quantity ``80Gi`` becomes ``{"value": "80Gi"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from aviator.api.meta import Model, dns1123_label_problem
from aviator.api.resource import Resource, Status

_QUALIFIED_NAME = re.compile(
    r"^(?:(?P<domain>[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?"
    r"(?P<name>[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$"
)
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE]|)$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
ATTRIBUTE_TYPES = ("int", "bool", "string", "version")


def _check_qualified(name: str, what: str) -> None:
    if not _QUALIFIED_NAME.match(name):
        raise ValueError(
            f"invalid {what} name {name!r}: expected NAME or DOMAIN/NAME (DNS subdomain, then up to "
            "63 alphanumeric characters, '-', '_' or '.')"
        )


def normalize_attribute(name: str, value: Any) -> dict[str, Any]:
    """The DRA typed form of an attribute value (plain scalars accepted)."""
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": value}
    if isinstance(value, str):
        return {"string": value}
    if isinstance(value, dict) and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind not in ATTRIBUTE_TYPES:
            raise ValueError(
                f"attribute {name!r}: unknown type {kind!r}; expected one of {', '.join(ATTRIBUTE_TYPES)}"
            )
        ok = {
            "int": isinstance(inner, int) and not isinstance(inner, bool),
            "bool": isinstance(inner, bool),
            "string": isinstance(inner, str) and len(inner) <= 64,
            "version": isinstance(inner, str) and bool(_VERSION.match(inner)),
        }[kind]
        if not ok:
            expected = {
                "int": "an integer",
                "bool": "true or false",
                "string": "a string of at most 64 characters",
                "version": "a semantic version like 9.0.0",
            }[kind]
            raise ValueError(f"attribute {name!r}: {kind} must be {expected} (got {inner!r})")
        return {kind: inner}
    raise ValueError(
        f"attribute {name!r}: expected a string, integer, boolean or one of "
        f"{{int|bool|string|version: value}} (got {value!r})"
    )


def plain_attribute(driver: str, attributes: Mapping[str, Any], name: str) -> Any:
    """The plain value of attribute ``name`` (bare, or qualified by the driver's domain),
    unwrapping the typed shape (``{"string": "H100"}`` → ``"H100"``); None when absent."""
    raw = attributes.get(name, attributes.get(f"{driver}/{name}"))
    if isinstance(raw, Mapping) and len(raw) == 1:
        (raw,) = raw.values()
    return raw


def normalize_capacity(name: str, value: Any) -> dict[str, Any]:
    """The DRA form of a capacity (``{"value": quantity}``), plain quantities accepted."""
    raw = value.get("value") if isinstance(value, dict) and set(value) == {"value"} else value
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError(f"capacity {name!r}: expected a quantity like 80Gi or 16 (got {value!r})")
    text = str(raw)
    if not _QUANTITY.match(text):
        raise ValueError(
            f"capacity {name!r}: {text!r} is not a quantity (e.g. 80Gi, 500m, 1e9, 16)"
        )
    return {"value": text}


class Device(Model):
    """One device in the ResourceSlice shape."""

    name: str = Field(description="Unique on its node, e.g. `gpu-0`.")
    driver: str = Field(
        description="The DRA driver that publishes it, e.g. `gpu.nvidia.com`, `cpu`."
    )
    attributes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Typed attributes; unprefixed names belong to the driver's domain.",
    )
    capacity: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Quantities, e.g. `memory: 80Gi`."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if problem := dns1123_label_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("driver")
    @classmethod
    def _driver(cls, value: str) -> str:
        _check_qualified(value, "driver")
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name in value:
            _check_qualified(name, "attribute")
        return {name: normalize_attribute(name, v) for name, v in value.items()}

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for name in value:
            _check_qualified(name, "capacity")
        return {name: normalize_capacity(name, v) for name, v in value.items()}


class NodeSpec(Model):
    """A machine and its devices."""

    region: str = Field(
        default="", max_length=63, description="Where it is, for sovereignty rules."
    )
    zone: str = Field(default="", max_length=63)
    devices: list[Device] = Field(default_factory=list, max_length=1024)
    unschedulable: bool = False
    """Keep existing allocations, place nothing new (like ``kubectl cordon``)."""

    @model_validator(mode="after")
    def _unique_devices(self) -> NodeSpec:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"duplicate device name {device.name!r}")
            seen.add(device.name)
        return self


class Node(Resource[NodeSpec, Status]):
    """Allocations are not kept here: each Replica records the devices it holds (its
    ``spec.node`` and ``spec.devices``), like a DRA ResourceClaim's allocation result."""

    KIND: ClassVar[str] = "Node"
    kind: str = "Node"
    status: Status = Field(default_factory=Status)


class CELSelector(Model):
    expression: str = Field(max_length=10 * 1024, description="A CEL expression over `device`.")


class DeviceSelector(Model):
    """DRA's ``DeviceSelector``: today only ``cel``."""

    cel: CELSelector


class DeviceClassSpec(Model):
    """A named set of devices (``resource.k8s.io/v1`` DeviceClass)."""

    selectors: list[DeviceSelector] = Field(default_factory=list, max_length=32)
    extended_resource_name: str | None = Field(
        default=None, description="The extended resource this class maps to, e.g. `nvidia.com/gpu`."
    )


class DeviceClass(Resource[DeviceClassSpec, Status]):
    KIND: ClassVar[str] = "DeviceClass"
    kind: str = "DeviceClass"
    status: Status = Field(default_factory=Status)
