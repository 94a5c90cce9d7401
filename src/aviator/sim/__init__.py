"""The built-in inference simulator: a vLLM-compatible OpenAI server with vLLM's metrics.

It stands alone. It MAY import ``aviator.api`` (errors), ``aviator.placement`` (device profiles,
only when one is asked for) and third-party libraries; it MUST NOT import ``aviator.store``,
``controllers``, ``runtime``, ``gateway``, ``plane`` or ``cli`` (an import-linter contract holds
this), so it runs as its own process next to any plane, or on a machine without one. What it
models, and how far to trust it: ``docs/simulator.md``.

Modules, pure ones first:

- ``options``: ``SimOptions`` and the defaults every front end shares; ``resolve`` against a
  device profile.
- ``tokenizer``: a deterministic approximate tokenizer (~4 characters per token, stable ids) and
  chat template.
- ``textgen``: deterministic answers seeded by the prompt.
- ``kvcache``: the paged KV cache: blocks, reference counts, prefix-cache hashes, LRU eviction.
- ``engine``: the engine model on an injected clock: admission, a bounded waiting queue, the KV
  cache, preemption, and two disciplines: per-sequence timelines from a ``LatencyModel``
  (``Scheduler``) or vLLM's step loop with chunked prefill from a ``StepModel``
  (``StepScheduler``).
- ``latency``: ``ProfileLatency``, the step-time model of a device profile.
- ``faults``: failure injection (errors, latency spikes, crashes), by option or header.
- ``metrics``: vLLM-named Prometheus metrics in a registry owned by each instance.
- ``openai_api``: OpenAI request validation, response and SSE chunk shapes, error bodies.
- ``driver``: the asyncio shell that drives the engine with one timer.
- ``server``: the aiohttp application (``build_app``) and ``serve``.
- ``process``: ``run``, the process entry point (uvloop, signals, exit codes).

It MUST NOT keep module-level mutable state: every ``build_app`` call is an independent simulator.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aviator.sim.engine import (
        ConstantLatency,
        FinishReason,
        LatencyModel,
        QueueFull,
        Scheduler,
        Sequence,
        ServiceUnavailable,
        StepModel,
        StepScheduler,
    )
    from aviator.sim.kvcache import BlockPool
    from aviator.sim.latency import ProfileLatency
    from aviator.sim.options import EngineConfig, SimOptions
    from aviator.sim.process import run
    from aviator.sim.server import SIM_KEY, SimServer, build_app, serve
    from aviator.sim.tokenizer import Tokenizer

_EXPORTS = {
    "ConstantLatency": "engine",
    "FinishReason": "engine",
    "LatencyModel": "engine",
    "QueueFull": "engine",
    "Scheduler": "engine",
    "Sequence": "engine",
    "ServiceUnavailable": "engine",
    "StepModel": "engine",
    "StepScheduler": "engine",
    "BlockPool": "kvcache",
    "ProfileLatency": "latency",
    "EngineConfig": "options",
    "SimOptions": "options",
    "run": "process",
    "SIM_KEY": "server",
    "SimServer": "server",
    "build_app": "server",
    "serve": "server",
    "Tokenizer": "tokenizer",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): importing ``aviator.sim.options`` for the CLI's defaults must not pull in
    # the whole aiohttp server stack.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aviator.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(f"aviator.sim.{module}"), name)


__all__ = [
    "SIM_KEY",
    "BlockPool",
    "ConstantLatency",
    "EngineConfig",
    "FinishReason",
    "LatencyModel",
    "ProfileLatency",
    "QueueFull",
    "Scheduler",
    "Sequence",
    "ServiceUnavailable",
    "SimOptions",
    "SimServer",
    "StepModel",
    "StepScheduler",
    "Tokenizer",
    "build_app",
    "run",
    "serve",
]
