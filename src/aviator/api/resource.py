"""The generic resource envelope every kind shares: apiVersion, kind, metadata, spec, status."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from aviator.api.meta import GROUP_VERSION, Condition, Model, ObjectMeta

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


class Status(Model):
    """Base of every kind's status: the generation last acted on, and conditions."""

    observed_generation: int | None = None
    """The generation the controller last acted on."""
    conditions: list[Condition] = Field(default_factory=list)


class Resource(Model, Generic[SpecT, StatusT]):
    """``apiVersion``/``kind``/``metadata``/``spec``/``status``, typed per kind."""

    # The envelope and the kinds (``class Agent(Resource[AgentSpec, AgentStatus])``) document
    # their fields in the spec and status models, never with attribute docstrings here. Reading
    # those costs a search of the source per class, and for each ``Resource[Spec, Status]`` a
    # fruitless walk of every frame of the import: ~0.15 s of every process that imports the
    # kinds. ``tests/unit/api/test_docstrings.py`` holds the envelopes free of them.
    model_config = ConfigDict(use_attribute_docstrings=False)

    KIND: ClassVar[str] = ""

    api_version: str = GROUP_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SpecT
    status: StatusT

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Self:
        """Parse a stored (already admitted) object."""
        return cls.model_validate(raw)

    def to_raw(self) -> dict[str, Any]:
        """The wire/storage form: camelCase keys, ``None`` fields omitted, timestamps as text."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""
