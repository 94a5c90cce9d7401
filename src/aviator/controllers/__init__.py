"""Controllers: informers, a de-duplicating work queue, and one reconciler per kind.

A reconciler MUST be level-triggered and idempotent: ``reconcile(key)`` reads desired and observed
state (from the informer cache and the runtime), computes a plan with pure code (``plans``), applies
it, and writes status; it never receives an event's payload. Errors mean backoff; ``Result``
says when to look again. Controllers MUST NOT serve HTTP or know which home (SQLite or
Kubernetes) the store is.
"""
