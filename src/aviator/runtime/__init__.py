"""The local runtime: one engine process per Replica on this machine, supervised.

MUST:
- run engine processes (or probe external endpoints) as ``Replica.spec`` says, probe their
  readiness, restart them with exponential backoff, and stop them on request;
- report what it observes as ``ProcessState`` through the ``on_change(namespace, name)``
  callback (on the event loop, never from a thread) and ``LocalRuntime.state``;
- keep a record per process under ``<data_dir>/run`` so a restarted plane adopts or reaps what
  an earlier one left, and leave nothing running after ``close()``;
- hand engines a minimal environment: a short allow-list of the plane's variables + ``spec.env``.

MUST NOT:
- touch the store, write Replica status or import controllers, gateway or plane: the
  controller turns observations into status;
- signal a process it cannot prove it started (live pid whose ``/proc/<pid>/cmdline`` is the
  recorded argv);
- log or record environment values (they may hold secrets), or listen beyond loopback.

Engine adapters (``aviator.runtime.engines``) are pure: argv, endpoint, probe path, env.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aviator.runtime.state import ExitInfo, Phase, ProcessState

if TYPE_CHECKING:
    from aviator.runtime.local import LocalRuntime


def __getattr__(name: str) -> object:
    # LocalRuntime on first use (PEP 562): the pure engine adapters are imported by the renderer,
    # and through it by every `aviator` command, which need none of the runtime's I/O (aiohttp).
    if name == "LocalRuntime":
        from aviator.runtime.local import LocalRuntime

        return LocalRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ExitInfo", "LocalRuntime", "Phase", "ProcessState"]
