"""The README's promise, end to end: ``aviator up --apply examples/quickstart.yaml`` makes the
deployment Available fast, prints a token for the quickstart agent, and the gateway serves that
agent (and nobody without a token)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from tests.integration.plane import REPO, PlaneProcess, pid_alive, wait_until

from aviator.api import kinds

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
QUICKSTART = str(REPO / "examples" / "quickstart.yaml")


@pytest.fixture
def quickstart(plane_dir: Path) -> Iterator[PlaneProcess]:
    """``aviator up --apply examples/quickstart.yaml``."""
    handle = PlaneProcess(data_dir=plane_dir)
    handle.start("--apply", QUICKSTART)
    try:
        yield handle
    finally:
        handle.cleanup()


def _printed_token(output: str) -> str:
    for line in output.splitlines():
        if line.strip().startswith("export AGENT_TOKEN="):
            return line.strip().removeprefix("export AGENT_TOKEN=")
    raise AssertionError(f"no token in the banner:\n{output}")


def test_quickstart_serves_chat_completions_through_the_gateway(quickstart: PlaneProcess) -> None:
    plane = quickstart
    started = time.monotonic()
    output = plane.wait_for_output("aviator is up.", timeout=30)
    # The 2 s budget is measured by bench/control_plane.py; here we only guard against regressions
    # big enough to matter on a loaded CI machine.
    assert time.monotonic() - started < 20
    assert "modeldeployment.aviator.dev/chat created" in output
    assert "agent.aviator.dev/assistant created" in output
    assert "token issue agent/assistant" in output
    token = _printed_token(output)

    md = plane.get("modeldeployments", "chat")
    assert md["status"]["readyReplicas"] == 2
    assert len(md["status"]["endpoints"]) == 2

    with httpx.Client(base_url=plane.gateway_url, timeout=30.0) as anonymous:
        refused = anonymous.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
    with httpx.Client(
        base_url=plane.gateway_url, timeout=30.0, headers={"Authorization": f"Bearer {token}"}
    ) as gw:
        models = gw.get("/v1/models").json()
        assert MODEL in [m["id"] for m in models["data"]]

        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hello there, simulator!"}],
            "max_tokens": 12,
        }
        resp = gw.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        completion = resp.json()
        assert completion["object"] == "chat.completion"
        assert completion["model"] == MODEL
        assert completion["choices"][0]["message"]["role"] == "assistant"
        usage = completion["usage"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

        with gw.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in stream.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [orjson.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

        # Requests spread over both replicas (least in flight, rotating ties).
        routed = {
            gw.post("/v1/chat/completions", json=body).headers["x-aviator-replica"]
            for _ in range(8)
        }
        assert len(routed) == 2

        unknown = gw.post("/v1/chat/completions", json={**body, "model": "nope"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


@pytest.fixture
def plane(headless_plane: PlaneProcess) -> PlaneProcess:
    """A plane without the gateway, which the commands below never talk to."""
    return headless_plane


def test_get_describe_and_delete_with_cascade(plane: PlaneProcess) -> None:
    assert plane.cli("apply", "-f", str(REPO / "examples" / "quickstart.yaml")).returncode == 0
    assert (
        plane.cli("wait", "--for", "condition=Available", "md/chat", "--timeout", "30s").returncode
        == 0
    )
    table, described = plane.cli_concurrently(
        ("get", "rep", "-o", "wide"), ("describe", "md", "chat")
    )
    assert table.returncode == 0
    assert table.stdout.count("Running") == 2
    assert described.returncode == 0 and "Available" in described.stdout
    pids = plane.record_engine_pids()
    assert len(pids) == 2

    deleted = plane.cli("delete", "md", "chat", "--timeout", "30s")
    assert deleted.returncode == 0, deleted.stderr
    # Background propagation, as in Kubernetes: the ModelDeployment is gone at once, its
    # Replicas once the runtime has stopped their engines and let go of its finalizer.
    wait_until(
        lambda: plane.items("replicas") == [],
        timeout=10,
        message="replicas collected after delete",
    )
    wait_until(
        lambda: not any(pid_alive(p) for p in pids),
        timeout=10,
        message="engines stopped after delete",
    )
    assert kinds.REPLICA.plural == "replicas"
