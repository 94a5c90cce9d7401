"""Who is asking: the principal of a Control API write or a gateway request. Pure.

Every decision (policy, audit, budgets) is about a principal. Authentication (admin token, agent
token, gateway API key) produces one; nothing downstream looks at credentials again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ADMIN", "ANONYMOUS", "Principal", "PrincipalKind", "spiffe_id"]

PrincipalKind = Literal["admin", "agent", "apikey", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    id: str
    """Stable identifier: ``admin``; an agent's SPIFFE ID
    (``spiffe://<trust-domain>/ns/<namespace>/agent/<name>``); ``apikey:<fingerprint>`` for a
    gateway API key (never the key itself); ``anonymous``."""
    namespace: str | None = None
    """An agent's namespace."""
    name: str | None = None
    """An agent's name."""
    token_id: str | None = None
    """The ``jti`` of the token that authenticated an agent (for revocation and audit)."""
    agent_key: str | None = field(init=False, repr=False, compare=False)
    """``namespace/name`` of an agent principal, else None. (Derived once: every gateway
    request reads it several times.)"""
    agent_ref: tuple[str, str] | None = field(init=False, repr=False, compare=False)
    """``(namespace, name)`` of an agent principal, the key of its Agent in a store's cache;
    else None. (Derived once, as ``agent_key``.)"""

    def __post_init__(self) -> None:
        key = ref = None
        if self.kind == "agent" and self.namespace is not None and self.name is not None:
            key = f"{self.namespace}/{self.name}"
            ref = (self.namespace, self.name)
        object.__setattr__(self, "agent_key", key)
        object.__setattr__(self, "agent_ref", ref)

    def __str__(self) -> str:
        return self.id


ADMIN = Principal(kind="admin", id="admin")
ANONYMOUS = Principal(kind="anonymous", id="anonymous")


def spiffe_id(trust_domain: str, namespace: str, name: str) -> str:
    """The SPIFFE ID of an agent (the JWT-SVID ``sub``)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/agent/{name}"
