"""The engine adapter protocol: how to turn a Replica into a command line and an endpoint."""

from __future__ import annotations

from typing import Protocol

from aviator.api.replica import Replica

__all__ = ["LOOPBACK", "EngineAdapter"]

LOOPBACK = "127.0.0.1"
"""Engines the local runtime starts listen here only; the gateway is the way in from outside."""


class EngineAdapter(Protocol):
    """Pure description of one engine kind: no I/O, no state, safe to call at any time."""

    @property
    def name(self) -> str:
        """The ``spec.engine`` value this adapter serves."""
        ...

    @property
    def health_path(self) -> str:
        """Path probed for readiness (200 means ready), relative to the endpoint."""
        ...

    @property
    def install_hint(self) -> str:
        """What to do when the executable is missing, appended to the error; may be empty."""
        ...

    def argv(self, replica: Replica, *, host: str, port: int) -> list[str] | None:
        """The command line to run, or None when the engine runs no process (``external``)."""
        ...

    def endpoint(self, replica: Replica, port: int | None) -> str:
        """Base URL of the OpenAI-compatible server, without ``/v1`` or a trailing slash."""
        ...

    def env(self, replica: Replica) -> dict[str, str]:
        """Variables the engine needs on top of the sanitized base; ``spec.env`` overrides them."""
        ...
