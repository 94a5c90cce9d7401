"""Governance state kept live for the places that enforce it: the Control API and the gateway.

``view.PolicyView`` mirrors Policies, Grants, Agents and ModelDeployments through any ``ListWatch``
(the in-process store, or the Control API client) and recompiles the Cedar policy set once per
change and at the next grant expiry, so decisions in the request path only read a compiled handle.
``budgets`` counts each agent's tokens and concurrent requests (a pure core).

This package MUST NOT import the store, controllers, runtime, servers or the CLI: it is fed through
``ListWatch`` and read by whoever enforces.
"""
