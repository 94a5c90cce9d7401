"""Session set-up shared by the unit and integration tests."""

from __future__ import annotations

import compileall
from pathlib import Path

import pytest

import aviator

PACKAGE = Path(aviator.__file__).parent


def pytest_sessionstart(session: pytest.Session) -> None:
    """Bring aviator's bytecode up to date once, before any process is spawned.

    The suite starts hundreds of interpreters (planes, gateways, engines, ``aviator`` commands),
    and each imports aviator. Without current ``.pyc`` files, which nothing writes where
    ``PYTHONDONTWRITEBYTECODE`` is set (or after a checkout or an edit), every one of them would
    compile the modules it imports again: ~0.6 s of each plane's start. Up-to-date files are
    left alone, so this costs ~0.1 s when there is nothing to do.
    """
    compileall.compile_dir(PACKAGE, quiet=1)
