"""A pool of replicas behind the gateway, on the real plane: heterogeneous devices share the load
by speed, a replica killed mid-run costs no request, a slow reader gets its whole stream without
holding anyone up, and a client that leaves stops the generation it asked for."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.plane import REPO, PlaneProcess, async_wait_until, wait_until

from aviator.api import kinds

INVENTORY = str(REPO / "examples" / "inventory-mixed.yaml")


# --- helpers ------------------------------------------------------------------------------------


def replicas_of(plane: PlaneProcess, name: str) -> list[dict[str, Any]]:
    """The deployment's Replicas as ``aviator get rep -o json`` shows them (through the API),
    by name."""
    items = plane.items("replicas")
    return sorted(
        (r for r in items if r["metadata"]["labels"]["aviator.dev/model-deployment"] == name),
        key=lambda r: r["metadata"]["name"],
    )


def is_ready(replica: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in replica["status"].get("conditions", ())
    )


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += float(s.value)
    return total


def deploy(
    plane: PlaneProcess, name: str, *, model: str, replicas: int, **spec: Any
) -> list[dict[str, Any]]:
    """Apply a ModelDeployment; once the gateway routes to all its replicas, return them."""
    body = {
        "apiVersion": "aviator.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": {"name": model}, "replicas": replicas, **spec},
    }  # fmt: skip
    plane.apply(orjson.dumps(body).decode())
    # The gateway routes only to Ready replicas: this waits for both at once.
    with plane.gateway() as gw:
        wait_until(
            lambda: (
                sample(gw.get("/metrics").text, "aviator_gateway_endpoints", model=model)
                == replicas
            ),
            timeout=30,
            interval=0.1,
            message=f"the gateway routes to {replicas} replicas of {name}",
        )
    found = replicas_of(plane, name)
    assert len(found) == replicas and all(is_ready(r) for r in found)
    return found


def async_gateway(plane: PlaneProcess, *, timeout: float = 30.0) -> httpx.AsyncClient:
    """What ``plane.gateway()`` is, for concurrent requests."""
    return httpx.AsyncClient(
        base_url=plane.gateway_url,
        timeout=timeout,
        headers={"Authorization": f"Bearer {plane.gateway_token}"},
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )


def chat(model: str, text: str, *, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        **extra,
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlaneProcess]:
    """One plane with the gateway on the mixed inventory (declared devices; simulated replicas)
    for the module: each test deploys its own model. Deployments that claim no accelerators
    (tests 2 to 4) run here with the simulator's fixed latencies, as on a plane without one."""
    handle = PlaneProcess(data_dir=tmp_path_factory.mktemp("routing-pool") / "aviator")
    handle.start("--inventory", INVENTORY)
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def plane(fleet: PlaneProcess) -> Iterator[PlaneProcess]:
    """The shared plane; a test's deployments are deleted after it, so that its engines (and
    the gateway's scrapes of them) do not take the CPU or the devices from the next test's."""
    yield fleet
    fleet.delete_all("modeldeployments")


# --- 1. a heterogeneous pool --------------------------------------------------------------------


async def test_a_heterogeneous_pool_serves_every_request_and_the_slowest_replica_gets_the_fewest(
    plane: PlaneProcess,
) -> None:
    model = "org/pool-8B"
    # firstAvailable always takes the earliest alternative that fits, so each alternative asks
    # for a whole node's devices: one replica exhausts the H100 node, the next the MI300X node,
    # the third falls through to a CPU socket. Three device types, one model, one pool.
    accelerators = {
        "strategy": "spread",
        "firstAvailable": [
            {"name": "h100", "deviceClassName": "gpu.nvidia.com", "count": 8},
            {"name": "mi300x", "deviceClassName": "gpu.amd.com", "count": 8},
            {"name": "cpu", "deviceClassName": "cpu"},
        ],
    }
    reps = deploy(plane, "pool", model=model, replicas=3, engine="auto", accelerators=accelerators)
    profile = {
        f"default/{r['metadata']['name']}": r["spec"]["simulator"]["deviceProfile"] for r in reps
    }
    assert {r["spec"]["node"] for r in reps} == {"h100-a", "mi300x-a", "cpu-a"}
    assert all(r["spec"]["engine"] == "sim" for r in reps)
    assert sorted(profile.values()) == ["cpu-server-socket", "h100-sxm-80gb", "mi300x-192gb"]
    endpoints = {f"default/{r['metadata']['name']}": r["status"]["endpoint"] for r in reps}

    # A burst from 8 concurrent clients; prompts differ from their first character, so no prefix
    # affinity pulls a request anywhere: only load decides. An 8B model on one CPU socket takes
    # ~1.3 s for these 16 tokens; on 8 H100s or 8 MI300Xs ~0.1 s.
    served: Counter[str] = Counter()
    failures: list[str] = []
    todo = iter(range(120))
    async with async_gateway(plane) as gw:

        async def client() -> None:
            for i in todo:
                body = chat(model, f"{i}: which runway is in use?", max_tokens=16)
                resp = await gw.post("/v1/chat/completions", json=body)
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
                    continue
                served[resp.headers["x-aviator-replica"]] += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(8)))
        took = time.monotonic() - started

    assert failures == []
    assert served.total() == 120
    assert set(served) == set(profile), f"every replica serves some: {served}"

    # Each engine counted what the gateway says it routed there, and timed it like its device.
    latency: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5) as engines:
        for replica, url in endpoints.items():
            text = (await engines.get(url + "/metrics")).text
            assert sample(text, "vllm:request_success_total") == served[replica], replica
            latency[replica] = sample(text, "vllm:e2e_request_latency_seconds_sum") / sample(
                text, "vllm:e2e_request_latency_seconds_count"
            )
    slowest = max(latency, key=latency.__getitem__)
    assert profile[slowest] == "cpu-server-socket"
    report = {profile[r]: (served[r], f"{latency[r]:.3f}s") for r in profile}
    # Over the run, the slowest replica never gets the most requests: fewer than each other one.
    assert all(served[slowest] < served[r] for r in profile if r != slowest), report
    assert took < 15, f"the burst took {took:.1f}s: {report}"


# --- 2. a replica crashing mid-run --------------------------------------------------------------


async def test_a_replica_killed_mid_run_costs_no_request_and_comes_back(
    plane: PlaneProcess,
) -> None:
    model = "org/steady-8B"
    # ~0.3 s per answer (20 ms + 31 x 8 ms), so the victim always has requests under way.
    sim = {"ttftMs": 20, "itlMs": 8}
    victim = deploy(plane, "steady", model=model, replicas=3, engine="sim", simulator=sim)[0]
    name, pid = victim["metadata"]["name"], victim["status"]["pid"]
    routed_as = f"default/{name}"

    served: Counter[str] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()
    async with (
        async_gateway(plane) as gw,
        httpx.AsyncClient(timeout=5) as engines,
        plane.client() as api,
    ):

        async def client(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                body = chat(model, f"{worker}-{i}: wind and visibility?", max_tokens=32)
                try:
                    resp = await gw.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if resp.status_code != 200 or resp.json()["usage"]["completion_tokens"] != 32:
                    failures.append(f"{resp.status_code} {resp.text[:200]}")
                    continue
                served[resp.headers["x-aviator-replica"]] += 1

        async def victim_running() -> bool:
            text = (await engines.get(victim["status"]["endpoint"] + "/metrics")).text
            return sample(text, "vllm:num_requests_running") >= 1

        async def restarted() -> dict[str, Any] | None:
            rep = await api.get(kinds.REPLICA, name, namespace="default")
            return rep if rep["status"].get("restarts", 0) >= 1 and is_ready(rep) else None

        workers = [asyncio.create_task(client(w)) for w in range(4)]
        try:
            await async_wait_until(
                lambda: served[routed_as] >= 5 and served.total() >= 20,
                timeout=10,
                message="steady traffic on every replica",
            )
            # Kill it while it is working: its requests in flight die with it.
            await async_wait_until(victim_running, timeout=5, interval=0.01)
            os.kill(pid, signal.SIGKILL)
            before = served.total()
            await async_wait_until(
                lambda: served.total() >= before + 20,
                timeout=10,
                message="traffic goes on after the kill",
            )
            await async_wait_until(
                restarted, timeout=20, interval=0.2, message="the killed replica restarted, Ready"
            )
            back = served[routed_as]
            await async_wait_until(
                lambda: served[routed_as] >= back + 3,
                timeout=10,
                message="the restarted replica serves again",
            )
        finally:
            stop.set()
            await asyncio.gather(*workers)
        retries = sample((await gw.get("/metrics")).text, "aviator_gateway_upstream_retries_total")
        rep = await restarted()

    assert failures == [], failures[:5]
    assert retries >= 1, "the kill should have cost attempts that were sent elsewhere"
    assert rep is not None
    assert rep["status"]["pid"] != pid
    assert rep["status"]["lastExit"]["signal"] == signal.SIGKILL
    assert len(served) == 3


# --- 3. streaming to a slow client --------------------------------------------------------------


@dataclass
class SlowRead:
    """One HTTP/1.1 exchange read a few bytes at a time, with pauses."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    started: float = 0.0
    finished: float = 0.0
    first_bytes: threading.Event = field(default_factory=threading.Event)


def slow_post(
    url: str, path: str, body: bytes, *, token: str, piece: int, pause: float, out: SlowRead
) -> None:
    """POST ``body`` over a raw socket with a small receive buffer, then read the answer into
    ``out``, ``piece`` bytes at a time with ``pause`` seconds between reads (blocking: run it in
    a thread)."""
    out.started = time.monotonic()
    parts = urlsplit(url)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # A small window, so the gateway's writes stop once a few KiB are unread.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect((parts.hostname, parts.port))
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        raw = bytearray()
        while chunk := sock.recv(piece):
            raw += chunk
            out.first_bytes.set()
            time.sleep(pause)
    out.finished = time.monotonic()
    out.first_bytes.set()
    head_bytes, _, payload = bytes(raw).partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    out.status = int(status_line.split()[1])
    out.headers = {
        k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)
    }
    chunked = out.headers.get("transfer-encoding", "").lower() == "chunked"
    out.body = dechunk(payload) if chunked else payload


def dechunk(payload: bytes) -> bytes:
    """The body of a ``Transfer-Encoding: chunked`` message (RFC 9112 §7.1); asserts it is whole."""
    body = bytearray()
    at = 0
    while True:
        end = payload.index(b"\r\n", at)
        size = int(payload[at:end].split(b";")[0], 16)
        at = end + 2
        if size == 0:
            return bytes(body)
        body += payload[at : at + size]
        assert payload[at + size : at + size + 2] == b"\r\n", "truncated chunk"
        at += size + 2


async def test_a_slow_reader_gets_its_whole_stream_and_holds_nobody_up(
    plane: PlaneProcess,
) -> None:
    model = "org/stream-8B"
    # Tokens every millisecond: the engine produces far faster than the client below reads.
    deploy(plane, "stream", model=model, replicas=1, engine="sim",
           simulator={"ttftMs": 10, "itlMs": 1})  # fmt: skip

    tokens = 600  # ~130 KiB of events, read 1 KiB per 20 ms: at least 2.5 s
    body = chat(model, "Read me the whole checklist.", max_tokens=tokens, stream=True,
                ignore_eos=True, stream_options={"include_usage": True})  # fmt: skip
    slow = SlowRead()
    reading = asyncio.create_task(
        asyncio.to_thread(
            slow_post,
            plane.gateway_url,
            "/v1/chat/completions",
            orjson.dumps(body),
            token=plane.gateway_token,
            piece=1024,
            pause=0.02,
            out=slow,
        )
    )
    await async_wait_until(slow.first_bytes.is_set, timeout=10, message="the stream started")
    # Meanwhile, on the same gateway and the same replica, short requests are answered at once.
    fast: list[float] = []
    async with async_gateway(plane) as gw:
        for i in range(10):
            started = time.monotonic()
            resp = await gw.post(
                "/v1/chat/completions", json=chat(model, f"{i}: QNH?", max_tokens=4)
            )
            fast.append(time.monotonic() - started)
            assert resp.status_code == 200, resp.text
            await asyncio.sleep(0.1)
        overlapped = not reading.done()
    await reading

    assert overlapped, "the slow stream was still being read while the short requests ran"
    assert max(fast) < 1.0, f"short requests took {fast}"
    assert slow.status == 200
    assert slow.headers["content-type"].startswith("text/event-stream")
    assert slow.finished - slow.started >= 2.0
    events = [e for e in slow.body.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == tokens
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    assert not any(finishes[:-1])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + tokens


# --- 4. a client that leaves --------------------------------------------------------------------


async def test_a_client_that_disconnects_cancels_its_request_on_the_replica(
    plane: PlaneProcess,
) -> None:
    model = "org/long-8B"
    [replica] = deploy(plane, "long", model=model, replicas=1, engine="sim",
                       simulator={"ttftMs": 10, "itlMs": 8})  # fmt: skip
    engine = replica["status"]["endpoint"]

    tokens = 2000  # 16 s of generation if nobody stopped it
    body = chat(model, "Tell me everything.", max_tokens=tokens, stream=True, ignore_eos=True)
    async with async_gateway(plane) as gw, httpx.AsyncClient(timeout=5) as engines:

        async def engine_sample(name: str, **labels: str) -> float:
            return sample((await engines.get(engine + "/metrics")).text, name, **labels)

        aborted_before = await engine_sample("vllm:request_success_total", finished_reason="abort")
        async with gw.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200, resp.headers
            # One iterator, kept: dropping a half-read one (``break``) would close the stream
            # whenever it is finalized, racing the check below.
            lines = resp.aiter_lines()
            received = 0
            while received < 10:
                received += (await anext(lines)).startswith("data: ")
            assert await engine_sample("vllm:num_requests_running") == 1
            await resp.aclose()  # the client gives up: its connection to the gateway closes

        async def idle() -> bool:
            return await engine_sample("vllm:num_requests_running") == 0

        await async_wait_until(idle, timeout=5, message="the replica stopped generating")
        aborted = await engine_sample("vllm:request_success_total", finished_reason="abort")
        assert aborted == aborted_before + 1
        # It stopped well short of the answer it was asked for.
        assert await engine_sample("vllm:generation_tokens_total") < tokens / 2

        async def recorded() -> bool:
            text = (await gw.get("/metrics")).text
            return (
                sample(text, "aviator_gateway_requests_total", model=model, code="499") == 1
                and sample(text, "aviator_gateway_inflight_requests", model=model) == 0
            )

        await async_wait_until(
            recorded, timeout=5, message="the gateway counted a 499 and has nothing in flight"
        )
