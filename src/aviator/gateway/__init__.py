"""The gateway: aviator's OpenAI-compatible data path, run as its own process.

A request goes: authenticate (agent token, admin token or API key) → parse just enough of the
body (``model``) → look the model up in the in-memory endpoint table → governance (policy,
budgets, grant lease) → flow control → pick a ready replica → proxy and stream the answer back →
record metrics and the audit record. Later layers slot in behind the same seams: other credentials
behind ``auth.Authenticator``, scorers behind ``picking.Picker`` (fed by ``picking.LoadView``), new
sources of state behind ``discovery.Feed``.

This package MUST learn the state of the plane only through a watch of the Control API
(``discovery``), so it can run as a separate process or on another machine. It MUST NOT import
``aviator.store``, ``aviator.controllers``, ``aviator.runtime``, ``aviator.plane`` or
``aviator.cli`` (an import-linter contract holds that line, indirect imports included: what it
uses of ``aviator.cache`` and ``aviator.client`` must stay free of the store too).

The request path MUST touch no database and make no Control API call: every decision reads
memory that the watches keep current (policies, grants and agents through
``aviator.governance.view``, the plane's keys through a JWKS refreshed in the background). It MUST
NOT log API keys or tokens, and MUST NOT forward the client's credentials to a replica.

Modules, pure cores first:

- ``endpoints``: the endpoint table built from Replica objects (pure).
- ``picking``: replica pickers and in-flight accounting (pure).
- ``openai``: request parsing and OpenAI-shaped bodies (pure).
- ``usage``: token usage read off answers (JSON or server-sent events) as they pass (pure).
- ``auth``: the ``Authenticator`` seam and the credential chain: admin token, API keys, agent
  tokens (pure).
- ``flowcontrol``: priorities, pool saturation and the fair bounded queue (pure policy), plus
  ``FlowControl``, the asyncio shell that holds requests back while a pool is saturated.
- ``breaker``: circuit breakers per replica (pure).
- ``metrics``: the gateway's Prometheus registry.
- ``discovery``: keeps the endpoint table fed by list + watch (``aviator.cache.Reflector``).
- ``upstream``: the request path's keep-alive HTTP/1.1 client to replicas.
- ``governance``: policy, budgets, grant leases and audit records of each request.
- ``server``: the data plane's HTTP/1.1 server (an ``asyncio.Protocol`` over httptools).
- ``proxy``: forwards one request to a replica, with retries and streaming.
- ``app``: the application (one routing handler) and ``GatewayServer``, which composes
  everything.
"""
