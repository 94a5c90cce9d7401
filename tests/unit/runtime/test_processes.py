"""OS mechanics: environment allow-list, ports, spawn into a session, watch and reap."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

from aviator.runtime.processes import (
    ProcessHandle,
    child_env,
    find_session_leaders,
    free_port,
    port_taken,
    read_cmdline,
    reserve_port,
    spawn,
    terminate,
)

from .runtime_helpers import is_gone


def test_child_env_keeps_only_the_allow_list_then_layers():
    base = {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_ALL": "C",
        "AWS_SECRET_ACCESS_KEY": "x",
        "HTTPS_PROXY": "http://u:p@proxy",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    env = child_env(base, {"PYTHONUNBUFFERED": "1"}, {"HOME": "/spec", "TOKEN": "t"})
    assert env == {
        "PATH": "/bin",
        "HOME": "/spec",
        "LC_ALL": "C",
        "PYTHONUNBUFFERED": "1",
        "TOKEN": "t",
    }
    assert child_env({})["PATH"] == os.defpath


def test_free_port_and_port_taken():
    port = free_port("127.0.0.1")
    assert not port_taken("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert port_taken("127.0.0.1", port)


def test_a_reserved_port_is_refused_to_others_and_shared_with_reuse_port():
    reserved = reserve_port("127.0.0.1", 0)
    try:
        port = reserved.getsockname()[1]
        assert port_taken("127.0.0.1", port)  # nobody else binds it, listening or not
        with socket.socket() as listener:  # what the supervised process does
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen()
            # Connections go to the listener, not to the reservation (which never listens).
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                accepted, _ = listener.accept()
                accepted.close()
    finally:
        reserved.close()


def test_read_cmdline():
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        expected = [part.decode() for part in f.read().split(b"\0")[:-1]]
    assert read_cmdline(os.getpid()) == expected
    assert read_cmdline(2**22 + 7) is None  # above pid_max


async def test_spawn_watch_and_reap(tmp_path):
    log = tmp_path / "out.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        argv = [
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)",
        ]
        pid = spawn(sys.executable, argv, env={"PATH": os.defpath}, log_fd=fd)
    finally:
        os.close(fd)
    handle = ProcessHandle.for_child(pid)
    info = await handle.wait()
    handle.close()
    assert (info.code, info.signal, info.reason) == (4, None, "Error")
    assert info.describe() == "exited with code 4"
    assert is_gone(pid)
    assert sorted(log.read_text().split()) == ["err", "out"]


async def test_terminate_a_session_leader_found_by_argv(tmp_path):
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    marker = f"TEST_MARKER={tmp_path}"
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        pid = spawn(sys.executable, argv, env={"TEST_MARKER": str(tmp_path)}, log_fd=fd)
    finally:
        os.close(fd)
    assert os.getsid(pid) == pid
    # posix_spawn returns once the child called execve, but the kernel sets the new command line
    # a moment later (after the vfork release): poll instead of reading once.
    deadline = time.monotonic() + 5
    while find_session_leaders(argv, env_entry=marker) != [pid] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert find_session_leaders(argv, env_entry=marker) == [pid]
    assert find_session_leaders(argv, env_entry=marker + "x") == []
    handle = ProcessHandle.open(pid, pgid=pid)
    assert handle is not None and handle.alive()
    info = await terminate(handle, grace=5.0)
    handle.close()
    assert info is not None and info.signal == signal.SIGTERM
    assert info.describe() == "killed by SIGTERM"
    assert is_gone(pid)
    assert ProcessHandle.open(pid, pgid=pid) is None
    assert find_session_leaders(argv, env_entry=marker) == []
