"""Failure injection: errors, latency spikes and crashes, by option or by request header.

Off by default. Three kinds, decided per completion request before the engine sees it:

- ``error``: the request is answered with an HTTP error (500 unless the header names another
  status) before any byte of a response: what a gateway should retry elsewhere.
- ``spike``: the request waits ``spike_ms`` before anything happens (no byte is sent, the engine
  has not seen it yet): a stalled network path or a paused API server, invisible to vLLM's
  metrics, as it would be.
- ``crash``: the process exits at once with ``CRASH_EXIT_CODE``, without answering this request
  or any other in flight: a dying replica.

By option: ``error_rate`` and ``spike_rate`` draw per request from a generator seeded with
``SimOptions.seed`` (reproducible runs); ``crash_after`` N serves N requests and crashes on the
next one.

By header, only when ``allow_fault_headers`` is set (secure by default: otherwise the header is
ignored, so a client cannot take a shared replica down)::

    x-sim-fail: error          answer 500
    x-sim-fail: error=503      answer that status (400-599)
    x-sim-fail: spike          delay by spike_ms
    x-sim-fail: spike=2500     delay by 2500 ms (scaled by time_scale)
    x-sim-fail: crash          exit now

A header fault replaces the random draws for that request. A malformed header (with header faults
allowed) is refused with 400 naming it.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Literal

from aviator.api.errors import BadRequest, FieldError
from aviator.sim.options import SimOptions

__all__ = ["CRASH_EXIT_CODE", "FAULT_HEADER", "Fault", "Faults", "crash", "error_body"]

log = logging.getLogger("aviator.sim")

FAULT_HEADER = "x-sim-fail"
CRASH_EXIT_CODE = 70
"""``EX_SOFTWARE`` from sysexits.h: "an internal software error has been detected"."""
_MAX_SPIKE_MS = 600_000.0


def error_body(status: int) -> dict[str, Any]:
    """The OpenAI error object of an injected ``status``."""
    return {
        "error": {
            "message": f"injected fault: the simulator answers {status} on purpose",
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": "injected_fault",
        }
    }


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request."""

    kind: Literal["error", "spike", "crash"]
    status: int = 500
    """For ``error``."""
    delay_s: float = 0.0
    """For ``spike``, already scaled."""


class Faults:
    """Decides, request by request, which fault (if any) to inject. Pure apart from its own
    seeded random generator and request counter."""

    def __init__(self, options: SimOptions) -> None:
        self._error_rate = options.error_rate
        self._spike_rate = options.spike_rate
        self._spike_s = options.spike_s
        self._scale = options.time_scale
        self._crash_after = options.crash_after
        self._headers = options.allow_fault_headers
        self._random = random.Random(options.seed)
        self._served = 0
        self.enabled = bool(
            options.error_rate
            or options.spike_rate
            or options.crash_after is not None
            or options.allow_fault_headers
        )
        """False: ``decide`` always returns None (the server skips it)."""

    def decide(self, header: str | None) -> Fault | None:
        """The fault for the next completion request, whose ``x-sim-fail`` header is
        ``header``. Raises ``BadRequest`` for a malformed header when header faults are on."""
        self._served += 1
        if self._crash_after is not None and self._served > self._crash_after:
            return Fault("crash")
        if header is not None and self._headers:
            return self._parse(header)
        draw = self._random.random
        if self._error_rate and draw() < self._error_rate:
            return Fault("error")
        if self._spike_rate and draw() < self._spike_rate:
            return Fault("spike", delay_s=self._spike_s)
        return None

    def _parse(self, header: str) -> Fault:
        kind, _, arg = header.strip().lower().partition("=")
        try:
            if kind == "crash" and not arg:
                return Fault("crash")
            if kind == "error":
                status = int(arg) if arg else 500
                if 400 <= status <= 599:
                    return Fault("error", status=status)
            elif kind == "spike":
                ms = float(arg) if arg else None
                if ms is None:
                    return Fault("spike", delay_s=self._spike_s)
                if math.isfinite(ms) and 0 <= ms <= _MAX_SPIKE_MS:
                    return Fault("spike", delay_s=ms * self._scale / 1000.0)
        except ValueError:
            pass
        message = (
            f"{FAULT_HEADER} must be error[=STATUS 400-599], spike[=MS 0-{_MAX_SPIKE_MS:.0f}] "
            f"or crash (got {header[:64]!r})"
        )
        raise BadRequest(message, causes=(FieldError(field=FAULT_HEADER, message=message),))


def crash() -> None:
    """Exit the process at once, as a crash would: no cleanup, no answers (``os._exit``)."""
    log.error("injected crash: exiting with status %d", CRASH_EXIT_CODE)
    logging.shutdown()  # flush the line above; nothing else runs
    os._exit(CRASH_EXIT_CODE)
