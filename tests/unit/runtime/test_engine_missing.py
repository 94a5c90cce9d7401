"""What a replica shows when its engine is not installed, for the engines aviator does not ship.

``llama-server`` is an executable, so a missing one takes the supervisor's generic path (the one
vLLM's test in test_local.py covers): Failed, with the engine's install hint, and no process. SGLang
runs as ``python -m sglang.launch_server`` under the plane's own interpreter, so the supervisor
checks that the module can be imported before it starts anything: Failed, with the hint too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util

import pytest

from aviator.runtime.engines import SglangEngine

from .runtime_helpers import SMALL, make_replica

KEY = ("default", "chat-abc-0")


async def test_missing_llama_server_fails_with_the_install_hint(harness, tmp_path):
    settings = dataclasses.replace(SMALL, restart_backoff_max_s=0.05)
    rt, recorder = await harness.runtime(settings=settings, default_engines=True)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    state = await rt.ensure(make_replica(engine="llamacpp", env={"PATH": str(empty)}))
    assert state.phase == "Failed"
    assert state.message == (
        "llama-server executable not found on PATH; "
        "install llama.cpp (llama-server on PATH) or use engine sim"
    )
    assert (state.pid, state.restarts, state.last_exit) == (None, 0, None)
    await asyncio.sleep(0.3)  # several retry periods: the state must not flap
    assert len(recorder.seen[KEY]) == 1
    await rt.stop(*KEY)


@pytest.mark.skipif(
    importlib.util.find_spec("sglang") is not None, reason="SGLang is installed here"
)
async def test_missing_sglang_fails_before_starting_with_the_install_hint(harness):
    rt, _ = await harness.runtime(default_engines=True)
    state = await rt.ensure(make_replica(engine="sglang"))
    assert state.phase == "Failed"
    assert state.message.startswith("Python module sglang not found for ")
    assert state.message.endswith(SglangEngine().install_hint)
    assert (state.pid, state.restarts, state.last_exit) == (None, 0, None)
    await rt.stop(*KEY)
