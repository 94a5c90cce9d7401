"""Logging of the long-running commands that log to stderr (``aviator gateway``, ``aviator
operator``): one line per record with time, level and logger; libraries that log every request
are held at WARNING."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

__all__ = ["configure"]


def configure(*, verbose: bool, quiet: Iterable[str] = ()) -> None:
    """INFO (DEBUG with ``verbose``) to stderr, unless the root logger has handlers already (a
    test harness); the loggers in ``quiet`` only from WARNING up."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("aiohttp.access", *quiet):
        logging.getLogger(noisy).setLevel(logging.WARNING)
