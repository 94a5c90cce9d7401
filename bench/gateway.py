"""Added latency and throughput of the gateway: a fast upstream direct vs through the gateway.

Starts, each in its own process on 127.0.0.1: a minimal aiohttp upstream that answers every
``POST /v1/chat/completions`` with a fixed 259-byte chat completion (as in
shared/reference/peers.md), and the gateway routing one model to it (its endpoint table filled
directly, no Control API; the client authenticates with the admin token, which the policy
engine admits without evaluation, unless ``--insecure``). Then it drives each
target with a bounded load — ``wrk -t1 -cC -dTs --latency`` when wrk is installed, else an aiohttp
client (N requests or T seconds, whichever ends first) — at each concurrency, and prints p50/p99
latency and req/s for both, the gateway's added latency and its share of direct throughput, and
the gateway's own CPU time per request. ``--with-naive`` adds peers.md's 25-line aiohttp proxy
as a same-run reference. With ``--vllm-router PATH`` (or ``vllm-router`` on PATH
and ``--with-vllm-router``) the Rust router is measured in the same run, as DESIGN.md §10 asks;
with ``--litellm PATH`` (or ``litellm`` on PATH and ``--with-litellm``) LiteLLM's proxy too (one
worker, no database, the upstream configured as an OpenAI-compatible provider).

``--workers N [M ...]`` runs a gateway of N processes sharing the port (SO_REUSEPORT), as
``aviator gateway --workers N`` does, and one of M, ...; the CPU per request of one is that of
all its processes. ``--rounds R`` measures every target R times, interleaved, and reports the
medians (a busy machine makes single runs noisy). ``--baseline SRC`` adds the gateway of another
source tree, for a before/after comparison in one run. ``--pin`` runs every target on CPU 1 and
wrk and the upstream on CPU 0, a core each.

Everything shares the machine's cores, so figures are relative; run it on an idle machine.

    .venv/bin/python bench/gateway.py [--seconds 10] [--requests 50000] [--concurrency 1 16]
        [--driver auto|wrk|aiohttp] [--insecure] [--with-naive] [--with-vllm-router]
        [--vllm-router PATH] [--with-litellm] [--litellm PATH] [--workers N [M ...]]
        [--rounds R] [--baseline SRC] [--pin] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from procs import Synced, child, cpu_seconds, free_port, run_forever, until_signalled

MODEL = "m"
REQUEST_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi there"}],"max_tokens":8}'
API_KEY = "sk-bench-0123456789abcdef"


def _answer() -> bytes:
    """A chat completion of exactly 259 bytes."""
    doc: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11},
    }
    size = len(orjson.dumps(doc))
    doc["choices"][0]["message"]["content"] = "x" * (259 - size)
    body = orjson.dumps(doc)
    assert len(body) == 259, len(body)
    return body


# -- child processes ------------------------------------------------------------------------------


async def _upstream_main() -> None:
    from aiohttp import web

    body = _answer()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await until_signalled()
    await runner.cleanup()


class _FixedAnswers(asyncio.Protocol):
    """HTTP/1.1 keep-alive on a bare protocol: every request with a ``Content-Length`` body (or
    none) gets the fixed answer — a chat completion for a POST, ``ok`` for anything else.
    Anything it cannot read (a chunked body, a head over 64 KiB) gets 400 and the connection is
    closed: a benchmark must see such a failure, not a guess."""

    _HEAD_MAX = 65_536

    def __init__(self, chat: bytes, health: bytes) -> None:
        self._chat = chat
        self._health = health
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        out = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._HEAD_MAX:
                    self._refuse()
                return self._send(out)
            head = bytes(buffer[:end]).lower()
            length = 0
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop >= 0 else None])
            if b"\r\ntransfer-encoding:" in head:
                self._send(out)
                return self._refuse()
            if len(buffer) < end + 4 + length:
                return self._send(out)
            out.append(self._chat if head.startswith(b"post ") else self._health)
            del buffer[: end + 4 + length]

    def _send(self, answers: list[bytes]) -> None:
        if answers and self._transport is not None:
            self._transport.write(b"".join(answers))

    def _refuse(self) -> None:
        if self._transport is not None:
            self._transport.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self._transport.close()
        self._buffer.clear()


def _fixed_response(body: bytes, content_type: str) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        content_type.encode(),
        len(body),
        body,
    )


async def _raw_upstream_main() -> None:
    """The upstream's answers from a bare asyncio protocol, far cheaper per request than the
    aiohttp server: with it the load generator's core went from 85-100 % busy to 32-48 % in
    ``bench/governance.py --pin``, which leaves that core room for the audit writers."""
    chat = _fixed_response(_answer(), "application/json")
    health = _fixed_response(b"ok", "text/plain; charset=utf-8")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _FixedAnswers(chat, health), "127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await until_signalled()
    server.close()
    await server.wait_closed()


async def _naive_main(upstream: str) -> None:
    """The 25-line aiohttp reverse proxy of peers.md: a floor to compare the gateway with."""
    from aiohttp import web

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1024),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=300),
    )

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(
            upstream + request.path, data=body, headers={"Content-Type": "application/json"}
        ) as up:
            resp = web.StreamResponse(status=up.status)
            resp.content_type = up.content_type
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await until_signalled()
    await runner.cleanup()
    await session.close()


class _Objects:
    """A ``ListWatch`` of fixed objects (none by default): the policy view of a gateway without a
    Control API. Objects are in wire form, as the Control API admitted them."""

    def __init__(self, objects: Sequence[dict[str, Any]] = ()) -> None:
        self._objects = list(objects)

    async def list(self, kind: Any, *, namespace: str | None = None) -> tuple[list[Any], str]:
        found = [o for o in self._objects if o.get("kind") == kind.kind]
        if namespace is not None:
            found = [o for o in found if o["metadata"].get("namespace") == namespace]
        return found, "1"

    async def watch(
        self, kind: object, *, namespace: str | None = None, resource_version: str | None = None
    ) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None


async def _gateway_main(
    upstream: str,
    *,
    insecure: bool,
    port: int = 0,
    objects: Path | None = None,
    jwks: Path | None = None,
    audit: Path | None = None,
    profile: Path | None = None,
) -> None:
    """The gateway as ``aviator gateway`` composes it, with its Control API replaced by fixed
    objects: ``objects`` (a JSON list of admitted Policies, Agents, ModelDeployments) feed the
    policy view and the model directory; agent tokens are verified against the ``jwks`` file;
    decisions are appended to the ``audit`` log. With ``profile``, SIGUSR1 starts cProfile on
    the event loop's thread (timed in that thread's CPU time, so that other processes on the
    cores do not count) and SIGUSR2 stops it and writes its stats there."""
    import logging

    from prometheus_client import disable_created_metrics

    from aviator.api.agent import DEFAULT_AUDIENCE
    from aviator.gateway.app import Gateway, GatewayServer
    from aviator.gateway.auth import Credentials
    from aviator.gateway.endpoints import EndpointTable
    from aviator.gateway.governance import Governance
    from aviator.gateway.models import ModelDirectory
    from aviator.governance.view import PolicyView
    from aviator.identity.sources import JwksFile
    from aviator.identity.verify import TokenVerifier, plane_issuer
    from aviator.settings import GatewaySettings, IdentitySettings

    logging.basicConfig(level=logging.WARNING)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    fixed: list[dict[str, Any]] = orjson.loads(objects.read_bytes()) if objects else []
    view = None if insecure else PolicyView(source=_Objects(fixed))
    directory = ModelDirectory()
    for obj in fixed:
        if obj.get("kind") == "ModelDeployment":
            directory.apply("ADDED", obj)
    verifier = None
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if jwks is not None and view is not None:
        keys = JwksFile(jwks)
        keys.load()
        background.append(keys.run)
        identity = IdentitySettings()
        verifier = TokenVerifier(
            issuers=[
                plane_issuer(
                    identity,
                    keys=keys,
                    audience=DEFAULT_AUDIENCE,
                    on_unknown_key=keys.request_refresh,
                )
            ],
            trust_domain=identity.trust_domain,
            leeway_s=identity.leeway_s,
            agents=view.agents,
        )
    # Only when asked for: an older tree (--baseline) may not take them.
    governed: dict[str, Any] = (
        {"directory": directory, "background": background} if fixed or background else {}
    )
    table = EndpointTable()
    table.apply(
        "ADDED",
        {
            "metadata": {"name": "bench-0", "namespace": "default"},
            "spec": {"model": {"name": MODEL}},
            "status": {"endpoint": upstream, "conditions": [{"type": "Ready", "status": "True"}]},
        },
    )
    gateway = Gateway(
        settings=GatewaySettings(host="127.0.0.1", port=port),
        table=table,
        feed=Synced(),
        authenticator=Credentials(
            admin_token=None if insecure else API_KEY, verifier=verifier, insecure=insecure
        ),
        governance=Governance(view=view, insecure=insecure, audit_path=audit),
        **governed,
    )
    # A given port is shared with the other workers (SO_REUSEPORT), as `aviator gateway
    # --workers N` does.
    shared = {"reuse_port": True} if port else {}  # (an older tree's server lacks the option)
    server = GatewayServer(gateway, shutdown_grace_s=1.0, **shared)
    if profile is not None:
        _profile_on_signals(profile)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        await until_signalled()
    finally:
        await server.stop()


def _profile_on_signals(path: Path) -> None:
    import cProfile
    import signal

    profiler = cProfile.Profile(time.thread_time)

    def dump() -> None:
        profiler.disable()
        partial = path.with_suffix(".partial")
        profiler.dump_stats(partial)
        partial.rename(path)  # whole, or not there: the parent waits for it

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
    loop.add_signal_handler(signal.SIGUSR2, dump)


# -- the parent: processes, load, report ----------------------------------------------------------


@dataclass
class Result:
    target: str
    concurrency: int
    driver: str
    requests: int
    errors: int
    req_s: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_req: float | None = None
    """CPU time of the target process per request (the gateway's own cost)."""
    load: float | None = None
    """The machine's 1-minute load average at the end of the run."""


Request = tuple[dict[str, str], bytes]
"""Headers and body of one request a run sends (a run cycles through its requests)."""


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal of ``text`` (no escapes to get wrong)."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def _wrk_script(
    headers: dict[str, str], variants: Sequence[Request] | None, *, delay_ms: float | None = None
) -> str:
    """A wrk script sending one fixed request, or cycling through ``variants``: each formatted
    once in ``init``, so that the per-request Lua is an index, not string building. With
    ``delay_ms``, each connection waits that long before each request (a paced load)."""
    pacing = [] if delay_ms is None else [f"function delay() return {delay_ms:.3f} end", ""]
    if not variants:
        lines = ['wrk.method = "POST"', f"wrk.body = '{REQUEST_BODY.decode()}'"]
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
        return "\n".join([*lines, *pacing]) + "\n"
    entries = []
    for extra, body in variants:
        fields = ", ".join(
            f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in {**headers, **extra}.items()
        )
        entries.append(f"  {{{{{fields}}}, {_lua_string(body.decode())}}},")
    return "\n".join(
        [
            "local specs = {",
            *entries,
            "}",
            "local formatted = {}",
            "local i = 0",
            "function init(args)",
            "  for k, spec in ipairs(specs) do",
            '    formatted[k] = wrk.format("POST", nil, spec[1], spec[2])',
            "  end",
            "end",
            "function request()",
            "  i = i % #formatted + 1",
            "  return formatted[i]",
            "end",
            "",
            *pacing,
        ]
    )


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def _run_wrk(
    url: str,
    *,
    concurrency: int,
    seconds: float,
    headers: dict[str, str],
    script_dir: Path,
    variants: Sequence[Request] | None = None,
    delay_ms: float | None = None,
    cpus: str | None = None,
) -> tuple[int, int, float, float, float]:
    """``cpus``: run wrk on these CPUs only (``taskset -c``)."""
    script = script_dir / "post.lua"
    script.write_text(_wrk_script(headers, variants, delay_ms=delay_ms))
    out = subprocess.run(
        [
            *(["taskset", "-c", cpus] if cpus else []),
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",  # wrk's 2 s default would drop LiteLLM's slowest answers as errors
            "-s",
            str(script),
            f"{url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "99" not in percentiles:
        raise RuntimeError(f"unexpected wrk output for {url}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return requests, errors, rate, _wrk_ms(percentiles["50"]), _wrk_ms(percentiles["99"])


async def _drive(
    url: str,
    *,
    concurrency: int,
    requests: int,
    seconds: float,
    headers: dict[str, str],
    variants: Sequence[Request] | None = None,
) -> tuple[int, int, float, float, float]:
    latencies: list[float] = []
    errors = 0
    target = f"{url}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    cycle = itertools.cycle(variants or [({}, REQUEST_BODY)])
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one() -> None:
            nonlocal errors
            extra, body = next(cycle)
            t0 = time.perf_counter()
            async with session.post(target, data=body, headers=extra) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

        for _ in range(min(200, requests)):  # warm-up: connections, caches
            await one()
        latencies.clear()
        errors = 0
        deadline = time.perf_counter() + seconds
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                sent += 1
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3

    return len(latencies), errors, len(latencies) / elapsed, pct(0.50), pct(0.99)


def _measure(
    target: str,
    url: str,
    *,
    pids: list[int],
    concurrency: int,
    args: argparse.Namespace,
    headers: dict[str, str],
    script_dir: Path,
    requests: Sequence[Request] | None = None,
    seconds: float | None = None,
    delay_ms: float | None = None,
) -> Result:
    """One run against ``url``: the fixed request, or ``requests`` in turn; ``seconds``
    overrides ``args.seconds``; ``delay_ms`` paces each connection (wrk only)."""
    seconds = args.seconds if seconds is None else seconds
    if delay_ms is not None and args.driver != "wrk":
        raise ValueError("a paced load needs wrk")
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    if args.driver == "wrk":
        n, errors, rate, p50, p99 = _run_wrk(
            url,
            concurrency=concurrency,
            seconds=seconds,
            headers=headers,
            script_dir=script_dir,
            variants=requests,
            delay_ms=delay_ms,
            cpus=LOAD_CPU if getattr(args, "pin", False) else None,
        )
    else:
        n, errors, rate, p50, p99 = asyncio.run(
            _drive(
                url,
                concurrency=concurrency,
                requests=args.requests,
                seconds=seconds,
                headers=headers,
                variants=requests,
            )
        )
    cpu_after = sum(cpu_seconds(pid) for pid in pids)
    cpu = (cpu_after - cpu_before) * 1e3 / n if pids and n else None
    return Result(
        target,
        concurrency,
        args.driver,
        n,
        errors,
        round(rate, 1),
        round(p50, 3),
        round(p99, 3),
        round(cpu, 4) if cpu is not None else None,
        round(os.getloadavg()[0], 2),
    )


def _median(runs: list[Result]) -> Result:
    """One result per target and concurrency: the median of each figure over the rounds."""
    if len(runs) == 1:
        return runs[0]
    cpus = [r.cpu_ms_per_req for r in runs if r.cpu_ms_per_req is not None]
    loads = [r.load for r in runs if r.load is not None]
    return Result(
        runs[0].target,
        runs[0].concurrency,
        runs[0].driver,
        sum(r.requests for r in runs),
        sum(r.errors for r in runs),
        statistics.median(r.req_s for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        round(statistics.median(cpus), 4) if cpus else None,
        statistics.median(loads) if loads else None,
    )


def _report(results: list[Result]) -> str:
    lines = [
        f"{'target':<17} {'c':>3} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'errors':>6} "
        f"{'cpu ms/req':>10}"
    ]
    for r in results:
        cpu = f"{r.cpu_ms_per_req:.3f}" if r.cpu_ms_per_req is not None else "-"
        lines.append(
            f"{r.target:<17} {r.concurrency:>3} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
            f"{r.req_s:>9.0f} {r.errors:>6} {cpu:>10}"
        )
    direct = {r.concurrency: r for r in results if r.target == "direct"}
    for r in results:
        if r.target == "direct" or r.concurrency not in direct:
            continue
        d = direct[r.concurrency]
        lines.append(
            f"{r.target} c={r.concurrency}: adds p50 {r.p50_ms - d.p50_ms:+.3f} ms, "
            f"p99 {r.p99_ms - d.p99_ms:+.3f} ms; keeps {r.req_s / d.req_s:.0%} of direct req/s"
        )
    routers = {r.concurrency: r for r in results if r.target == "vllm-router"}
    for r in results:
        if r.target in ("direct", "vllm-router") or r.concurrency not in routers:
            continue
        lines.append(
            f"{r.target} c={r.concurrency}: {r.req_s / routers[r.concurrency].req_s:.2f}x "
            "vllm-router's req/s"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "upstream", "raw-upstream", "gateway", "naive"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--jwks", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--audit-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each run.")
    parser.add_argument(
        "--requests", type=int, default=50_000, help="Request cap per run (aiohttp driver)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--driver", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument(
        "--insecure", action="store_true", help="Run the gateway without authentication."
    )
    parser.add_argument(
        "--with-vllm-router",
        action="store_true",
        help="Also measure vllm-router (round_robin) if it is installed.",
    )
    parser.add_argument("--vllm-router", help="Path of the vllm-router executable.")
    parser.add_argument(
        "--with-naive",
        action="store_true",
        help="Also measure a 25-line aiohttp reverse proxy (peers.md's floor) in the same run.",
    )
    parser.add_argument(
        "--with-litellm",
        action="store_true",
        help="Also measure LiteLLM proxy (1 worker, no database) if `litellm` is on PATH.",
    )
    parser.add_argument("--litellm", help="Path of the litellm executable.")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="Gateway processes sharing the port (SO_REUSEPORT), as `aviator gateway --workers`; "
        "several counts (`--workers 1 2`) measure one gateway of each.",
    )
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="Also measure the gateway of another source tree (its `src` directory, e.g. from "
        "`git archive HEAD src | tar -x -C /tmp/base`) in the same run, as `gateway-baseline`.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Measure every target this many times, interleaved, and report medians.",
    )
    parser.add_argument("--json", action="store_true", help="Print the results as JSON too.")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="Pin each target to CPU 1 and wrk and the upstream to CPU 0 (taskset; needs 2 "
        "CPUs): one core each, less noise from the scheduler.",
    )
    args = parser.parse_args()

    if args.role == "upstream":
        run_forever(_upstream_main())
        return
    if args.role == "raw-upstream":
        run_forever(_raw_upstream_main())
        return
    if args.role == "gateway":
        run_forever(
            _gateway_main(
                args.upstream,
                insecure=args.insecure,
                port=args.port,
                objects=args.objects,
                jwks=args.jwks,
                audit=args.audit_file,
                profile=args.profile_file,
            )
        )
        return
    if args.role == "naive":
        run_forever(_naive_main(args.upstream))
        return

    if args.driver == "auto":
        args.driver = "wrk" if shutil.which("wrk") else "aiohttp"
    router = args.vllm_router or (shutil.which("vllm-router") if args.with_vllm_router else None)
    litellm = args.litellm or (shutil.which("litellm") if args.with_litellm else None)
    if args.with_litellm and litellm is None:
        print("note: --with-litellm given but no litellm executable found; skipping it")
    me = [sys.executable, str(Path(__file__).resolve())]
    headers = {"Content-Type": "application/json"}
    gateway_headers = dict(headers)
    if not args.insecure:
        gateway_headers["Authorization"] = f"Bearer {API_KEY}"
    runs: dict[tuple[str, int], list[Result]] = {}
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        child([*me, "upstream"]) as (up_pid, up_url),
        contextlib.ExitStack() as extra,
    ):
        targets: list[tuple[str, str, list[int], dict[str, str]]] = [
            ("direct", up_url, [up_pid], headers)
        ]
        for workers in args.workers:
            gateway = [
                *me,
                "gateway",
                "--upstream",
                up_url,
                *(["--insecure"] if args.insecure else []),
            ]
            if workers > 1:
                gateway += ["--port", str(free_port())]
            gw_pids: list[int] = []
            for _ in range(workers):
                gw_pid, gw_url = extra.enter_context(child(gateway))
                gw_pids.append(gw_pid)
            name = "gateway" if workers == 1 else f"gateway x{workers}"
            targets.append((name, gw_url, gw_pids, gateway_headers))
        if args.baseline:
            base_pid, base_url = extra.enter_context(
                child(
                    [
                        *me,
                        "gateway",
                        "--upstream",
                        up_url,
                        *(["--insecure"] if args.insecure else []),
                    ],
                    env={"PYTHONPATH": str(Path(args.baseline).resolve())},
                )
            )
            targets.append(("gateway-baseline", base_url, [base_pid], gateway_headers))
        if args.with_naive:
            naive_pid, naive_url = extra.enter_context(child([*me, "naive", "--upstream", up_url]))
            targets.append(("naive-proxy", naive_url, [naive_pid], headers))
        if router:
            port = free_port()
            router_pid, router_url = extra.enter_context(
                child(
                    [
                        router,
                        "--worker-urls",
                        up_url,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--policy",
                        "round_robin",
                    ],
                    url=f"http://127.0.0.1:{port}",
                    log=Path(tmp) / "vllm-router.log",
                )
            )
            _wait_http(f"{router_url}/v1/chat/completions")
            targets.append(("vllm-router", router_url, [router_pid], headers))
        if litellm:
            litellm_url, litellm_pids = _start_litellm(litellm, up_url, Path(tmp), extra)
            litellm_headers = {**headers, "Authorization": f"Bearer {LITELLM_KEY}"}
            targets.append(("litellm", litellm_url, litellm_pids, litellm_headers))
        if args.pin:
            # One core for the target, the other for the load generator and the upstream: less
            # noise, and every target (multi-threaded vllm-router too) gets the same one core.
            _pin([up_pid], LOAD_CPU)
            for name, _, pids, _ in targets:
                if name != "direct":
                    _pin([p for pid in pids for p in (pid, *_children(pid))], TARGET_CPU)
        for _ in range(args.rounds):
            for concurrency in args.concurrency:
                for name, url, pids, hdrs in targets:
                    runs.setdefault((name, concurrency), []).append(
                        _measure(
                            name,
                            url,
                            pids=pids,
                            concurrency=concurrency,
                            args=args,
                            headers=hdrs,
                            script_dir=Path(tmp),
                        )
                    )
    results = [_median(found) for found in runs.values()]
    results.sort(key=lambda r: (r.concurrency, [t[0] for t in targets].index(r.target)))
    auth = "off" if args.insecure else "admin token"
    rounds = f"; median of {args.rounds} rounds" if args.rounds > 1 else ""
    pinned = "; pinned: targets on CPU 1, wrk and upstream on CPU 0" if args.pin else ""
    print(
        f"driver: {args.driver}; {args.seconds:.0f} s per run{rounds}{pinned}; gateway auth: {auth}; "
        f"gateway workers: {' and '.join(map(str, args.workers))}; cores: {os.cpu_count()}; "
        f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}"
    )
    print(_report(results))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


LOAD_CPU = "0"
TARGET_CPU = "1"
"""With ``--pin``: the CPUs of the load generator and upstream, and of the target measured."""


def _pin(pids: Sequence[int], cpus: str) -> None:
    """Every thread of ``pids`` onto ``cpus`` (threads started later inherit it)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", cpus, str(pid)], check=True, capture_output=True)


LITELLM_KEY = "sk-litellm-bench-0123456789abcdef"
"""LiteLLM's master key (it wants one of at least 20 characters)."""


def _start_litellm(
    executable: str, upstream: str, tmp: Path, stack: contextlib.ExitStack
) -> tuple[str, list[int]]:
    """LiteLLM proxy, one worker, no database, forwarding model ``m`` to the upstream as an
    OpenAI-compatible provider."""
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-upstream-unused\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pid, _ = stack.enter_context(
        child(
            [
                executable,
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            url=url,
            log=tmp / "litellm.log",
            # No network here: use the bundled model cost map instead of fetching it.
            env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
        )
    )
    try:
        _wait_http(f"{url}/v1/chat/completions", timeout=180.0)
    except RuntimeError:
        print((tmp / "litellm.log").read_text()[-3000:])
        raise
    return url, [pid, *_children(pid)]


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (LiteLLM may run its server in a child process)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            child_pid = int(entry.name)
            found += [child_pid, *_children(child_pid)]
    return found


def _wait_http(url: str, *, timeout: float = 20.0) -> None:
    """Until ``url`` answers a POST at all (any status: it is up)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url, data=REQUEST_BODY, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


if __name__ == "__main__":
    main()
