"""The simulator as a process: ``python -m aviator.sim`` for real, and the ``aviator sim`` command."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from typing import Any

import aiohttp
import pytest
import typer
from typer.testing import CliRunner

from aviator.cli import sim as cli_sim
from aviator.sim import SimOptions, run
from aviator.sim.__main__ import parser
from aviator.sim.faults import CRASH_EXIT_CODE

from .helpers import MODEL, chat_body

LISTENING = re.compile(rb"http://127\.0\.0\.1:(\d+)")


async def _listening_port(stream: asyncio.StreamReader, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        line = await asyncio.wait_for(stream.readline(), left)
        if not line:
            break
        if match := LISTENING.search(line):
            return int(match.group(1))
    pytest.fail("the simulator never logged its listening address")


async def _healthy(url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    pytest.fail(f"{url} never answered 200")


async def test_process_serves_then_exits_promptly_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aviator.sim", "--model", MODEL, "--port", "0",
        "--ttft-ms", "0", "--itl-ms", "200",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = await _listening_port(proc.stderr, timeout=15)
        base = f"http://127.0.0.1:{port}"
        await _healthy(f"{base}/health", timeout=5)
        async with aiohttp.ClientSession() as session:
            body = chat_body(max_tokens=1000, ignore_eos=True, stream=True)
            resp = await session.post(f"{base}/v1/chat/completions", json=body)
            await resp.content.readline()  # a request is in flight
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 1.5)
            assert time.monotonic() - started < 1.5
            assert code == 0
            resp.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_process_crashes_on_purpose_after_n_requests() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aviator.sim", "--model", MODEL, "--port", "0",
        "--ttft-ms", "0", "--itl-ms", "0", "--crash-after", "1",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = await _listening_port(proc.stderr, timeout=15)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=chat_body(max_tokens=2)) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url, json=chat_body(max_tokens=2)) as resp:
                    await resp.read()
        assert await asyncio.wait_for(proc.wait(), 5) == CRASH_EXIT_CODE
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_run_exits_1_when_the_address_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(SimOptions(model=MODEL), host="127.0.0.1", port=port) == 1


def _cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("sim")(cli_sim.sim)

    @app.command("other")
    def other() -> None:  # a second command, so "sim" must be named as in `aviator sim`
        pass

    return app


def test_cli_builds_options_and_returns_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(options: SimOptions, *, host: str, port: int) -> int:
        seen.update(options=options, host=host, port=port)
        return 0

    monkeypatch.setattr("aviator.sim.process.run", fake_run)  # the CLI imports it when run
    result = CliRunner().invoke(
        _cli_app(),
        ["sim", "--model", "m", "--port", "9001", "--ttft-ms", "5", "--itl-ms", "1",
         "--max-num-seqs", "8", "--max-waiting", "3", "--time-scale", "0.1", "--seed", "7"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["options"] == SimOptions(
        model="m", ttft_ms=5, itl_ms=1, max_num_seqs=8, max_waiting=3, time_scale=0.1, seed=7
    )
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 9001)
    result = CliRunner().invoke(
        _cli_app(),
        ["sim", "--model", "m", "--device-profile", "mi300x-192gb", "--model-class", "70b-fp8",
         "--tensor-parallel", "8", "--max-num-batched-tokens", "4096", "--no-enable-prefix-caching",
         "--error-rate", "0.1", "--spike-rate", "0.2", "--spike-ms", "50", "--crash-after", "9",
         "--allow-fault-headers"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["options"] == SimOptions(
        model="m", device_profile="mi300x-192gb", model_class="70b-fp8", tensor_parallel=8,
        max_num_batched_tokens=4096, enable_prefix_caching=False, error_rate=0.1, spike_rate=0.2,
        spike_ms=50, crash_after=9, allow_fault_headers=True,
    )  # fmt: skip


def test_cli_requires_a_model_and_rejects_bad_values() -> None:
    runner = CliRunner()
    assert runner.invoke(_cli_app(), ["sim"]).exit_code == 2
    assert runner.invoke(_cli_app(), ["sim", "--model", "m", "--max-num-seqs", "0"]).exit_code == 2
    assert runner.invoke(_cli_app(), ["sim", "--model", "", "--port", "1"]).exit_code == 2
    bad = runner.invoke(_cli_app(), ["sim", "--model", "m", "--device-profile", "h900"])
    assert bad.exit_code == 2 and "unknown profile" in bad.output


def test_cli_help_documents_every_option() -> None:
    result = CliRunner().invoke(_cli_app(), ["sim", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--model", "--ttft-ms", "--itl-ms", "--max-num-seqs",
                 "--max-waiting", "--time-scale", "--seed", "--device-profile", "--model-class",
                 "--tensor-parallel", "--error-rate", "--crash-after",
                 "--allow-fault-headers"):  # fmt: skip
        assert flag in result.output


def test_python_m_and_the_cli_accept_the_same_options_with_the_same_defaults() -> None:
    group: Any = typer.main.get_command(_cli_app())
    cli = {
        p.opts[0]: (p.default, p.required)
        for p in group.commands["sim"].params
        if p.param_type_name == "option" and p.opts[0] != "--help"
    }
    main = {
        a.option_strings[0]: (a.default, a.required)
        for a in parser()._actions
        if a.option_strings and a.option_strings[0] != "-h"
    }
    assert cli == main
    assert main["--model"] == (None, True)
