"""``run``: the simulator as a process, shared by ``aviator sim`` and ``python -m aviator.sim``.

Runs ``serve`` on uvloop when it is installed, turns SIGTERM and SIGINT into a graceful stop and
answers with an exit code: 0 after a signal, 1 when the address cannot be bound.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType

from aviator.sim.options import SimOptions
from aviator.sim.server import serve

__all__ = ["LOG_FORMAT", "run"]

log = logging.getLogger("aviator.sim")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: SimOptions, *, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code. Configures logging to stderr
    (INFO) unless the caller already did."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    # Until the loop installs its own handlers, a SIGTERM during start-up still ends cleanly.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(options, host=host, port=port, handle_signals=True))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", host, port, exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
