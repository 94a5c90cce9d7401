"""Which agent a verified token speaks for. Pure.

The plane's own tokens name the agent in ``sub`` as a SPIFFE ID,
``spiffe://<trust-domain>/ns/<namespace>/agent/<name>``. A trusted external issuer names it its
own way; a ``SubjectTemplate`` such as ``system:serviceaccount:{namespace}:{name}`` (Kubernetes
service-account tokens) reads the namespace and name out of one claim.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aviator.api.meta import dns1123_label_problem, dns1123_subdomain_problem

__all__ = ["AgentRef", "SpiffeSubjects", "SubjectMapper", "SubjectTemplate", "parse_agent_id"]

AgentRef = tuple[str, str]
"""``(namespace, name)`` of an Agent."""

MAX_SPIFFE_ID_BYTES = 2048
"""SPIFFE IDs up to this length must be supported; longer ones are refused."""

_NAMESPACE = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_NAME = r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?"


class SubjectMapper(Protocol):
    def agent(self, claims: Mapping[str, Any]) -> AgentRef | None:
        """The agent the (verified) claims name, or None when they name none."""
        ...


def _valid_ref(namespace: str, name: str) -> AgentRef | None:
    if dns1123_label_problem(namespace) or dns1123_subdomain_problem(name):
        return None
    return namespace, name


def parse_agent_id(spiffe_id: str, *, trust_domain: str) -> AgentRef | None:
    """``(namespace, name)`` of ``spiffe://<trust_domain>/ns/<ns>/agent/<name>``, else None."""
    if len(spiffe_id.encode()) > MAX_SPIFFE_ID_BYTES:
        return None
    prefix = f"spiffe://{trust_domain}/ns/"
    if not spiffe_id.startswith(prefix):
        return None
    namespace, sep, rest = spiffe_id[len(prefix) :].partition("/agent/")
    if not sep:
        return None
    return _valid_ref(namespace, rest)


@dataclass(frozen=True, slots=True)
class SpiffeSubjects:
    """The plane's own mapping: ``sub`` is the agent's SPIFFE ID in ``trust_domain``."""

    trust_domain: str

    def agent(self, claims: Mapping[str, Any]) -> AgentRef | None:
        sub = claims.get("sub")
        return parse_agent_id(sub, trust_domain=self.trust_domain) if isinstance(sub, str) else None


@dataclass(frozen=True, slots=True)
class SubjectTemplate:
    """Read an agent out of one string claim, e.g. ``sub`` = ``system:serviceaccount:{namespace}:{name}``."""

    claim: str
    template: str
    pattern: re.Pattern[str]
    namespace: str | None = None

    @classmethod
    def compile(cls, *, claim: str, template: str, namespace: str | None = None) -> SubjectTemplate:
        """Check and compile ``template``; ``ValueError`` says what is wrong with it."""
        if not claim:
            raise ValueError("the subject claim must not be empty")
        parts = re.split(r"(\{namespace\}|\{name\})", template)
        placeholders = parts[1::2]
        if placeholders.count("{name}") != 1 or placeholders.count("{namespace}") > 1:
            raise ValueError(
                f"subject template {template!r} must hold {{name}} once and {{namespace}} at most once"
            )
        if "{namespace}" not in placeholders:
            if namespace is None:
                raise ValueError(
                    f"subject template {template!r} has no {{namespace}}: set the issuer's namespace"
                )
            if problem := dns1123_label_problem(namespace):
                raise ValueError(f"namespace {namespace!r}: {problem}")
        elif namespace is not None:
            raise ValueError(
                f"subject template {template!r} names the namespace; do not also set one"
            )
        regex = "".join(
            f"(?P<namespace>{_NAMESPACE})"
            if part == "{namespace}"
            else f"(?P<name>{_NAME})"
            if part == "{name}"
            else re.escape(part)
            for part in parts
        )
        return cls(claim=claim, template=template, pattern=re.compile(regex), namespace=namespace)

    def agent(self, claims: Mapping[str, Any]) -> AgentRef | None:
        value = claims.get(self.claim)
        if not isinstance(value, str) or len(value) > MAX_SPIFFE_ID_BYTES:
            return None
        match = self.pattern.fullmatch(value)
        if match is None:
            return None
        groups = match.groupdict()
        namespace = groups.get("namespace") or self.namespace
        assert namespace is not None  # compile() guarantees one of the two
        return _valid_ref(namespace, groups["name"])
