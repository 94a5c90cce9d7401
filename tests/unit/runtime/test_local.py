"""LocalRuntime against real processes (the fake engine): lifecycle, restarts, stop, adoption."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from aviator.api.errors import AviatorError
from aviator.runtime import LocalRuntime, ProcessState
from aviator.runtime.processes import child_env, spawn
from aviator.runtime.records import RECORD_ENV, RecordDir, RunRecord

from .runtime_helpers import FAKE_ENGINE, SMALL, is_alive, is_gone, make_replica

KEY = ("default", "chat-abc-0")


def ready(rt: LocalRuntime, key: tuple[str, str] = KEY) -> bool:
    state = rt.state(*key)
    return state is not None and state.phase == "Running" and state.ready


def current(rt: LocalRuntime, key: tuple[str, str] = KEY) -> ProcessState:
    state = rt.state(*key)
    assert state is not None
    return state


async def test_start_becomes_running_and_ready(harness, eventually):
    rt, recorder = await harness.runtime()
    first = await rt.ensure(make_replica())
    assert first.phase == "Starting"
    assert first.pid is not None and first.port is not None
    assert first.endpoint == f"http://127.0.0.1:{first.port}"
    assert first.started_at is not None

    await eventually(lambda: ready(rt), what="Running+ready")
    state = current(rt)
    assert (state.pid, state.port, state.restarts, state.message) == (first.pid, first.port, 0, "")
    assert [s.phase for s in recorder.states(KEY)][-1] == "Running"
    async with aiohttp.ClientSession() as client, client.get(f"{state.endpoint}/health") as resp:
        assert resp.status == 200

    record = RecordDir(harness.data_dir / "run").read(*KEY)
    assert record is not None
    assert (record.pid, record.pgid, record.port) == (state.pid, state.pid, state.port)
    assert record.plane_instance == rt.instance_id and record.template_hash == "h1"
    assert record.ready
    assert os.getsid(state.pid) == state.pid  # its own session: Ctrl-C of the plane misses it


async def test_ensure_is_idempotent(harness, eventually):
    rt, _ = await harness.runtime()
    first = await rt.ensure(make_replica())
    again = await rt.ensure(make_replica())
    assert again.pid == first.pid
    await eventually(lambda: ready(rt))
    assert (await rt.ensure(make_replica())).pid == first.pid


async def test_logs_capture_stdout_and_stderr(harness, eventually):
    rt, _ = await harness.runtime()
    await rt.ensure(make_replica())
    log = rt.log_path(*KEY)
    assert log == harness.data_dir / "logs" / "default" / "chat-abc-0.log"
    await eventually(lambda: log.exists() and "stderr: hello" in log.read_text())
    text = log.read_text()
    assert "aviator: starting sim on port" in text
    assert "fake-engine stdout: listening on" in text


async def test_kill_9_is_seen_at_once_then_restarted(harness, eventually):
    rt, recorder = await harness.runtime()
    await rt.ensure(make_replica())
    await eventually(lambda: ready(rt))
    old = current(rt)
    assert old.pid is not None

    os.kill(old.pid, signal.SIGKILL)
    # The gateway must stop routing within 1 s: the exit is noticed through the pidfd.
    await eventually(lambda: not current(rt).ready, timeout=1.0, what="ready=False after kill")

    await eventually(lambda: ready(rt) and current(rt).pid != old.pid, what="restarted")
    new = current(rt)
    assert new.restarts == 1
    assert new.last_exit is not None and new.last_exit.signal == signal.SIGKILL
    assert new.last_exit.reason == "Signaled"
    failed = [s for s in recorder.states(KEY) if s.phase == "Failed"]
    assert failed and failed[0].restarts == 1 and failed[0].pid is None
    assert "killed by SIGKILL; restarting in 0.05s" in failed[0].message
    assert is_gone(old.pid)  # reaped, no zombie
    assert rt.log_path(*KEY).read_text().count("aviator: starting sim") == 2


async def test_crash_loop_backs_off_exponentially(harness, eventually):
    rt, recorder = await harness.runtime()
    await rt.ensure(make_replica(args=["--crash-after", "0", "--exit-code", "7"]))
    await eventually(lambda: current(rt).restarts >= 4, what="four restarts")
    failed = [s for s in recorder.states(KEY) if s.phase == "Failed"]
    delays = [s.message.split("restarting in ")[1].split("s ")[0] for s in failed[:4]]
    assert delays == ["0.05", "0.1", "0.2", "0.4"]  # doubling, capped at restart_backoff_max_s
    last = failed[0].last_exit
    assert last is not None and (last.code, last.signal, last.reason) == (7, None, "Error")


async def test_startup_timeout_kills_and_restarts(harness, eventually):
    settings = dataclasses.replace(SMALL, startup_timeout_s=0.4)
    rt, _ = await harness.runtime(settings=settings)
    first = await rt.ensure(make_replica(args=["--never-ready"]))
    assert first.pid is not None
    await eventually(lambda: current(rt).restarts >= 1, what="restart after startup timeout")
    state = current(rt)
    assert state.last_exit is not None and state.last_exit.reason == "StartupTimeout"
    assert state.last_exit.signal == signal.SIGTERM
    assert not state.ready
    await eventually(lambda: is_gone(first.pid))


async def test_failing_probe_clears_ready_without_restart(harness, eventually, tmp_path):
    rt, _ = await harness.runtime()
    await rt.ensure(make_replica())
    await eventually(lambda: ready(rt))
    pid = current(rt).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # hung engine: alive, not answering
    try:
        await eventually(lambda: not current(rt).ready, what="ready=False on probe failure")
        state = current(rt)
        assert state.phase == "Running" and state.pid == pid
        assert state.message.startswith("readiness probe failed: no answer within")
    finally:
        os.kill(pid, signal.SIGCONT)
    await eventually(lambda: ready(rt), what="ready again")
    assert current(rt).restarts == 0


async def test_changed_spec_replaces_the_process(harness, eventually):
    rt, _ = await harness.runtime()
    first = await rt.ensure(make_replica())
    await eventually(lambda: ready(rt))
    second = await rt.ensure(make_replica(template_hash="h2"))
    assert first.pid is not None and second.pid != first.pid
    assert is_gone(first.pid)
    await eventually(lambda: ready(rt))
    record = RecordDir(harness.data_dir / "run").read(*KEY)
    assert record is not None and record.template_hash == "h2"


async def test_stop_terminates_and_forgets(harness, eventually):
    rt, recorder = await harness.runtime()
    await rt.ensure(make_replica())
    await eventually(lambda: ready(rt))
    pid = current(rt).pid
    assert pid is not None

    await rt.stop(*KEY)
    assert is_gone(pid)
    assert rt.state(*KEY) is None
    assert not RecordDir(harness.data_dir / "run").path_for(*KEY).exists()
    assert recorder.seen[KEY][-1] is None  # told that the replica is gone
    assert [s.phase for s in recorder.states(KEY)][-1] == "Terminating"
    await rt.stop(*KEY)  # idempotent
    await rt.stop("default", "never-existed")


async def test_stop_escalates_to_sigkill(harness, eventually):
    rt, _ = await harness.runtime(settings=dataclasses.replace(SMALL, stop_grace_s=0.3))
    await rt.ensure(make_replica(args=["--ignore-term"]))
    await eventually(lambda: ready(rt))
    pid = current(rt).pid
    assert pid is not None
    started = time.monotonic()
    await rt.stop(*KEY)
    assert time.monotonic() - started >= 0.3
    assert is_gone(pid)
    assert "killed by SIGKILL" in rt.log_path(*KEY).read_text()


async def test_close_stops_everything(harness, eventually):
    rt, _ = await harness.runtime()
    keys = [("default", f"r-{i}") for i in range(3)]
    for _, name in keys:
        await rt.ensure(make_replica(name))
    await eventually(lambda: all(ready(rt, k) for k in keys))
    pids = [current(rt, k).pid for k in keys]
    await rt.close()
    assert all(pid is not None and is_gone(pid) for pid in pids)
    assert list(RecordDir(harness.data_dir / "run").load_all()) == []
    with pytest.raises(AviatorError):
        await rt.ensure(make_replica())


async def test_one_runtime_per_data_dir(harness):
    await harness.runtime()
    with pytest.raises(AviatorError, match="another aviator runtime"):
        await harness.runtime()


async def test_engine_environment_is_sanitized(harness, eventually, monkeypatch):
    monkeypatch.setenv("AVIATOR_TEST_SECRET", "hunter2")
    rt, _ = await harness.runtime()
    await rt.ensure(make_replica(args=["--print-env"], env={"FAKE_ENGINE_ECHO": "from-spec"}))
    log = rt.log_path(*KEY)
    await eventually(lambda: log.exists() and "echo:" in log.read_text())
    text = log.read_text()
    names = next(line for line in text.splitlines() if line.startswith("env-names:")).split()[1:]
    assert "AVIATOR_TEST_SECRET" not in names and "hunter2" not in text
    assert {"PATH", "FAKE_ENGINE_ECHO", "PYTHONUNBUFFERED", "AVIATOR_RUN_RECORD"} <= set(names)
    assert "echo: from-spec" in text
    record = RecordDir(harness.data_dir / "run").path_for(*KEY).read_text()
    assert "from-spec" not in record and "hunter2" not in record


async def test_missing_executable_fails_without_spam(harness, eventually, tmp_path):
    settings = dataclasses.replace(SMALL, restart_backoff_max_s=0.05)
    rt, recorder = await harness.runtime(settings=settings, default_engines=True)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    state = await rt.ensure(make_replica(engine="vllm", env={"PATH": str(empty)}))
    assert state.phase == "Failed"
    assert state.message == "vllm executable not found on PATH; install vLLM or use engine sim"
    assert (state.pid, state.restarts, state.last_exit) == (None, 0, None)
    await asyncio.sleep(0.3)  # several retry periods: the state must not flap
    assert len(recorder.seen[KEY]) == 1
    await rt.stop(*KEY)


async def test_external_endpoint_is_probed(harness, eventually):
    status = {"code": 200}

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []}, status=status["code"])

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        rt, _ = await harness.runtime(default_engines=True)
        first = await rt.ensure(make_replica(engine="external", url=f"http://127.0.0.1:{port}/"))
        assert first.endpoint == f"http://127.0.0.1:{port}"
        assert first.pid is None
        await eventually(lambda: ready(rt), what="external ready")
        status["code"] = 503
        await eventually(lambda: not current(rt).ready, what="external not ready")
        assert current(rt).message == "external endpoint not ready: HTTP 503"
        await rt.stop(*KEY)
        assert rt.state(*KEY) is None
    finally:
        await runner.cleanup()


# -- adoption after a plane restart ------------------------------------------------------------


async def abandoned(harness, eventually, replica=None) -> tuple[int, int]:
    """Run a replica, then drop the runtime without stopping it (as a crashed plane would)."""
    rt, _ = await harness.runtime()
    await rt.ensure(replica or make_replica())
    await eventually(lambda: ready(rt))
    state = current(rt)
    await rt.close(stop_processes=False)
    assert state.pid is not None and state.port is not None
    assert is_alive(state.pid)
    return state.pid, state.port


async def test_adopt_keeps_the_running_process(harness, eventually):
    pid, port = await abandoned(harness, eventually)
    rt, recorder = await harness.runtime()
    await rt.adopt({KEY: make_replica()})
    state = current(rt)
    assert (state.phase, state.ready, state.pid, state.port) == ("Running", True, pid, port)
    assert recorder.states(KEY)  # the controller is told
    assert (await rt.ensure(make_replica())).pid == pid  # no respawn

    os.kill(pid, signal.SIGKILL)  # still supervised: a crash is seen and restarted
    await eventually(lambda: not current(rt).ready, timeout=1.0)
    await eventually(lambda: ready(rt) and current(rt).pid != pid)
    assert current(rt).restarts == 1
    assert is_gone(pid)


async def test_adopt_reaps_unwanted_process(harness, eventually):
    pid, _ = await abandoned(harness, eventually)
    rt, _ = await harness.runtime()
    await rt.adopt({})
    assert is_gone(pid)
    assert rt.state(*KEY) is None
    assert not RecordDir(harness.data_dir / "run").path_for(*KEY).exists()


async def test_adopt_replaces_process_of_another_template(harness, eventually):
    pid, _ = await abandoned(harness, eventually)
    rt, _ = await harness.runtime()
    await rt.adopt({KEY: make_replica(template_hash="h2")})
    assert is_gone(pid)
    assert rt.state(*KEY) is None
    state = await rt.ensure(make_replica(template_hash="h2"))
    assert state.pid not in (None, pid)


async def test_ensure_without_adopt_still_adopts(harness, eventually):
    pid, _ = await abandoned(harness, eventually)
    rt, _ = await harness.runtime()
    assert (await rt.ensure(make_replica())).pid == pid


async def test_stop_without_adopt_reaps_the_recorded_process(harness, eventually):
    pid, _ = await abandoned(harness, eventually)
    rt, _ = await harness.runtime()
    await rt.stop(*KEY)
    assert is_gone(pid)


async def test_adopt_never_kills_a_reused_pid(harness):
    records = RecordDir(harness.data_dir / "run")
    records.ensure()
    bystander = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)"
    )
    try:
        records.write(record_for(pid=bystander.pid, argv=("some-engine", "--port", "1")))
        rt, _ = await harness.runtime()
        await rt.adopt({KEY: make_replica()})
        assert bystander.returncode is None and is_alive(bystander.pid)  # left alone
        assert rt.state(*KEY) is None
        assert records.read(*KEY) is None  # but the stale record is gone
    finally:
        bystander.kill()
        await bystander.wait()


async def test_adopt_drops_records_of_dead_pids(harness):
    records = RecordDir(harness.data_dir / "run")
    records.ensure()
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    records.write(record_for(pid=dead.pid, argv=(sys.executable, "-c", "pass")))
    rt, _ = await harness.runtime()
    await rt.adopt({KEY: make_replica()})
    assert records.read(*KEY) is None and rt.state(*KEY) is None


async def test_adopt_finds_a_process_whose_launch_was_never_recorded(harness):
    # The plane died between the intent record (no pid) and the record with the pid. Only the
    # process carrying this record's marker is ours; a twin with the same argv is not.
    records = RecordDir(harness.data_dir / "run")
    records.ensure()
    argv = (sys.executable, FAKE_ENGINE, "--port", "0", "--never-ready")
    marker = {RECORD_ENV: records.marker(*KEY)}
    ours = start_detached(argv, child_env(os.environ, marker))
    twin = start_detached(argv, child_env(os.environ))
    harness.pids.update((ours, twin))
    records.write(record_for(pid=None, argv=argv))
    rt, _ = await harness.runtime()
    await rt.adopt({KEY: make_replica()})
    assert is_gone(ours)
    assert is_alive(twin)
    assert records.read(*KEY) is None


def start_detached(argv: tuple[str, ...], env: dict[str, str]) -> int:
    log_fd = os.open(os.devnull, os.O_WRONLY)
    try:
        return spawn(argv[0], argv, env=env, log_fd=log_fd)
    finally:
        os.close(log_fd)


def record_for(*, pid: int | None, argv: tuple[str, ...]) -> RunRecord:
    return RunRecord(
        namespace=KEY[0],
        name=KEY[1],
        engine="sim",
        pid=pid,
        pgid=pid,
        port=1,
        argv=argv,
        started_at=datetime.now(UTC),
        template_hash="h1",
        plane_instance="earlier",
    )
