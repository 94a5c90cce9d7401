"""Governance decisions: Cedar policies and just-in-time grants, as a pure core.

- ``schema``: the entity model and the Cedar schema every Policy is validated against.
- ``entities``: Cedar entities built from objects (wire dicts) and from a ``Principal``.
- ``engine``: ``PolicyEngine.compile(...)`` turns Policy texts, active Grants and entities into an
  immutable ``CompiledPolicies`` handle; ``decide(...)`` answers one request with a ``Decision``.
- ``grants``: deciding a Grant request (auto / human / deny by policy annotation), who may approve,
  and the pure lifecycle (status transitions, expiry).
- ``validation``: admission checks for Policy and Grant objects (Control API ``checks``).

This package MUST stay a pure core: data in, decisions out. It MUST NOT read the store, serve or
call HTTP, read clocks implicitly (callers pass ``now``) or hold global mutable state; the only
cache is the parsed schema, a constant. It MUST NOT compile policies per request: callers compile
once per change (a Policy, Grant, Agent or ModelDeployment written, or the earliest grant expiry
passing) and share the handle. It may import ``aviator.api`` and ``cedarpy``, nothing else of
aviator.
"""
