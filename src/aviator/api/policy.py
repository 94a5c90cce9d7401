"""``Policy``: Cedar policy text the plane enforces on writes and gateway requests.

A Policy is cluster-scoped and holds one or more Cedar statements (``permit``/``forbid``). The
entity model and schema they are validated against live in ``aviator.policy.schema``; admission
refuses text that does not parse or does not validate (``aviator.policy.validation``), with Cedar's
message on ``spec.cedar``. This module only bounds the shape.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from aviator.api.meta import Model
from aviator.api.resource import Resource, Status

MAX_CEDAR_BYTES = 64 * 1024
"""Upper bound of ``spec.cedar`` in UTF-8 bytes: ample for hundreds of statements, small enough
that compiling every Policy on each change stays in the milliseconds."""


class PolicySpec(Model):
    """Cedar statements and what they are for."""

    cedar: str = Field(
        min_length=1,
        description="Cedar policy text: one or more `permit`/`forbid` statements, validated "
        "against aviator's Cedar schema (see docs/governance.md). At most 64 KiB.",
    )
    description: str = Field(
        default="", max_length=1024, description="What the policy is for, for humans."
    )

    @field_validator("cedar")
    @classmethod
    def _bounded(cls, value: str) -> str:
        size = len(value.encode())
        if size > MAX_CEDAR_BYTES:
            raise ValueError(f"must be at most {MAX_CEDAR_BYTES} bytes (got {size})")
        if not value.strip():
            raise ValueError("must contain at least one Cedar statement")
        return value


class Policy(Resource[PolicySpec, Status]):
    KIND: ClassVar[str] = "Policy"
    kind: str = "Policy"
    status: Status = Field(default_factory=Status)
