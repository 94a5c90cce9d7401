"""Engine adapters: how each ``spec.engine`` becomes a command line, an endpoint and a probe path.

MUST be pure: build argv, endpoints and environment additions from a Replica, nothing more.
MUST NOT spawn, probe, read the disk or hold state; the supervisor in ``aviator.runtime`` does that.
"""

from __future__ import annotations

from aviator.api.errors import FieldError, Invalid
from aviator.runtime.engines.base import LOOPBACK, EngineAdapter
from aviator.runtime.engines.external import ExternalEngine
from aviator.runtime.engines.llamacpp import LlamaCppEngine
from aviator.runtime.engines.sglang import SglangEngine
from aviator.runtime.engines.sim import SimEngine
from aviator.runtime.engines.vllm import VllmEngine

__all__ = [
    "LOOPBACK",
    "EngineAdapter",
    "ExternalEngine",
    "LlamaCppEngine",
    "SglangEngine",
    "SimEngine",
    "VllmEngine",
    "builtin_engines",
    "for_engine",
]


def builtin_engines() -> dict[str, EngineAdapter]:
    """A fresh name → adapter map of the engines aviator ships."""
    return {
        "sim": SimEngine(),
        "vllm": VllmEngine(),
        "sglang": SglangEngine(),
        "llamacpp": LlamaCppEngine(),
        "external": ExternalEngine(),
    }


def for_engine(name: str) -> EngineAdapter:
    """The adapter for ``spec.engine``; raises ``Invalid`` for an unknown engine."""
    engines = builtin_engines()
    try:
        return engines[name]
    except KeyError:
        raise Invalid(
            f"unknown engine {name!r}",
            kind="Replica",
            causes=(FieldError("spec.engine", f"expected one of {', '.join(sorted(engines))}"),),
        ) from None
