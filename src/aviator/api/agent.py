"""``Agent``: an AI agent's identity: who owns it, what it is for, which audiences its tokens may
name, and the budgets the gateway holds it to.

The plane mints short-lived tokens for an Agent (``aviator token issue agent/NAME``) whose ``sub``
is the agent's SPIFFE ID, ``spiffe://<trust-domain>/ns/<namespace>/agent/<name>``; deleting the
Agent makes every token of it useless to a verifier that knows the agents.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from aviator.api.meta import Model
from aviator.api.resource import Resource, Status

DEFAULT_AUDIENCE = "gateway"
"""The audience an Agent may request tokens for unless its spec says otherwise."""

CONTROL_API_AUDIENCE = "control-api"
"""The audience of tokens the Control API accepts: an Agent lists it in ``spec.audiences`` to
write through the API (subject to policy)."""

MAX_AUDIENCE_LENGTH = 256


class AgentBudgets(Model):
    """Limits the gateway enforces per agent; an absent limit is no limit."""

    tokens_per_minute: int | None = Field(
        default=None,
        gt=0,
        description="Model tokens (prompt plus completion) the agent may use per minute.",
    )
    tokens_per_day: int | None = Field(
        default=None, gt=0, description="Model tokens the agent may use per day."
    )
    max_concurrent_requests: int | None = Field(
        default=None, gt=0, description="Requests of the agent in flight at once."
    )


class AgentSpec(Model):
    """Who the agent is and what it may ask for."""

    owner: str = Field(
        min_length=1,
        max_length=256,
        description="The accountable human or team, e.g. `alice@example.com` or `team-support`.",
    )
    purpose: str = Field(
        default="",
        max_length=1024,
        description="What the agent is for, in a sentence; shown in listings and the audit log.",
    )
    audiences: list[str] = Field(
        default_factory=lambda: [DEFAULT_AUDIENCE],
        min_length=1,
        max_length=16,
        description="Audiences the agent's tokens may name (a token names exactly one); "
        "`gateway` is the inference gateway.",
    )
    budgets: AgentBudgets = Field(
        default_factory=AgentBudgets, description="Token and concurrency budgets."
    )

    @field_validator("audiences")
    @classmethod
    def _audiences_are_distinct_words(cls, value: list[str]) -> list[str]:
        for audience in value:
            if not audience or len(audience) > MAX_AUDIENCE_LENGTH:
                raise ValueError(
                    f"an audience must be 1-{MAX_AUDIENCE_LENGTH} characters (got {audience!r})"
                )
            if any(ch.isspace() for ch in audience):
                raise ValueError(f"an audience must not contain whitespace (got {audience!r})")
        if len(set(value)) != len(value):
            raise ValueError(f"audiences must be distinct (got {value})")
        return value


class AgentStatus(Status):
    """Observed state of the agent (conditions only, for now)."""


class Agent(Resource[AgentSpec, AgentStatus]):
    KIND: ClassVar[str] = "Agent"
    kind: str = "Agent"
    status: AgentStatus = Field(default_factory=AgentStatus)
