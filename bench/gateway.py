"""Added latency and throughput of the gateway: a fast upstream direct vs through the gateway.

Starts, each in its own process on 127.0.0.1: a minimal aiohttp upstream that answers every
``POST /v1/chat/completions`` with a fixed 259-byte chat completion (as in
shared/reference/peers.md), and the gateway routing one model to it (its endpoint table filled
directly, no Control API; API-key authentication on unless ``--no-auth``). Then it drives each
target with a bounded load — ``wrk -t1 -cC -dTs --latency`` when wrk is installed, else an aiohttp
client (N requests or T seconds, whichever ends first) — at each concurrency, and prints p50/p99
latency and req/s for both, the gateway's added latency and its share of direct throughput, and
the gateway's own CPU time per request. ``--with-naive`` adds peers.md's 25-line aiohttp proxy
as a same-run reference. With ``--vllm-router PATH`` (or ``vllm-router`` on PATH
and ``--with-vllm-router``) the Rust router is measured in the same run, as DESIGN.md §10 asks.

Everything shares the machine's cores, so figures are relative; run it on an idle machine.

    .venv/bin/python bench/gateway.py [--seconds 10] [--requests 50000] [--concurrency 1 16]
        [--driver auto|wrk|aiohttp] [--no-auth] [--with-naive] [--with-vllm-router]
        [--vllm-router PATH] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
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


async def _gateway_main(upstream: str, *, no_auth: bool) -> None:
    import logging

    from prometheus_client import disable_created_metrics

    from aviator.gateway.app import Gateway, GatewayServer
    from aviator.gateway.auth import ApiKeyAuthenticator, Authenticator, NoAuth
    from aviator.gateway.endpoints import EndpointTable
    from aviator.settings import GatewaySettings

    logging.basicConfig(level=logging.WARNING)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    table = EndpointTable()
    table.apply(
        "ADDED",
        {
            "metadata": {"name": "bench-0", "namespace": "default"},
            "spec": {"model": {"name": MODEL}},
            "status": {"endpoint": upstream, "conditions": [{"type": "Ready", "status": "True"}]},
        },
    )
    authenticator: Authenticator = NoAuth() if no_auth else ApiKeyAuthenticator([API_KEY])
    gateway = Gateway(
        settings=GatewaySettings(host="127.0.0.1", port=0),
        table=table,
        feed=Synced(),
        authenticator=authenticator,
    )
    server = GatewayServer(gateway, shutdown_grace_s=1.0)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        await until_signalled()
    finally:
        await server.stop()


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


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def _run_wrk(
    url: str, *, concurrency: int, seconds: float, headers: dict[str, str], script_dir: Path
) -> tuple[int, int, float, float, float]:
    script = script_dir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = '{REQUEST_BODY.decode()}'"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.MULTILINE))
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
    url: str, *, concurrency: int, requests: int, seconds: float, headers: dict[str, str]
) -> tuple[int, int, float, float, float]:
    latencies: list[float] = []
    errors = 0
    target = f"{url}/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(target, data=REQUEST_BODY) as resp:
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
    pid: int | None,
    concurrency: int,
    args: argparse.Namespace,
    headers: dict[str, str],
    script_dir: Path,
) -> Result:
    cpu_before = cpu_seconds(pid) if pid else 0.0
    if args.driver == "wrk":
        n, errors, rate, p50, p99 = _run_wrk(
            url,
            concurrency=concurrency,
            seconds=args.seconds,
            headers=headers,
            script_dir=script_dir,
        )
    else:
        n, errors, rate, p50, p99 = asyncio.run(
            _drive(
                url,
                concurrency=concurrency,
                requests=args.requests,
                seconds=args.seconds,
                headers=headers,
            )
        )
    cpu = (cpu_seconds(pid) - cpu_before) * 1e3 / n if pid and n else None
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
    )


def _report(results: list[Result]) -> str:
    lines = [
        f"{'target':<14} {'c':>3} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'errors':>6} "
        f"{'cpu ms/req':>10}"
    ]
    for r in results:
        cpu = f"{r.cpu_ms_per_req:.3f}" if r.cpu_ms_per_req is not None else "-"
        lines.append(
            f"{r.target:<14} {r.concurrency:>3} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "upstream", "gateway", "naive"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each run.")
    parser.add_argument(
        "--requests", type=int, default=50_000, help="Request cap per run (aiohttp driver)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--driver", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--no-auth", action="store_true", help="Run the gateway without API keys.")
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
    parser.add_argument("--json", action="store_true", help="Print the results as JSON too.")
    args = parser.parse_args()

    if args.role == "upstream":
        run_forever(_upstream_main())
        return
    if args.role == "gateway":
        run_forever(_gateway_main(args.upstream, no_auth=args.no_auth))
        return
    if args.role == "naive":
        run_forever(_naive_main(args.upstream))
        return

    if args.driver == "auto":
        args.driver = "wrk" if shutil.which("wrk") else "aiohttp"
    router = args.vllm_router or (shutil.which("vllm-router") if args.with_vllm_router else None)
    me = [sys.executable, str(Path(__file__).resolve())]
    headers = {"Content-Type": "application/json"}
    gateway_headers = dict(headers)
    if not args.no_auth:
        gateway_headers["Authorization"] = f"Bearer {API_KEY}"
    results: list[Result] = []
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        child([*me, "upstream"]) as (up_pid, up_url),
        child([*me, "gateway", "--upstream", up_url, *(["--no-auth"] if args.no_auth else [])]) as (
            gw_pid,
            gw_url,
        ),
        contextlib.ExitStack() as extra,
    ):
        targets: list[tuple[str, str, int | None, dict[str, str]]] = [
            ("direct", up_url, up_pid, headers),
            ("gateway", gw_url, gw_pid, gateway_headers),
        ]
        if args.with_naive:
            naive_pid, naive_url = extra.enter_context(child([*me, "naive", "--upstream", up_url]))
            targets.append(("naive-proxy", naive_url, naive_pid, headers))
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
            targets.append(("vllm-router", router_url, router_pid, headers))
        for concurrency in args.concurrency:
            for name, url, pid, hdrs in targets:
                results.append(
                    _measure(
                        name,
                        url,
                        pid=pid,
                        concurrency=concurrency,
                        args=args,
                        headers=hdrs,
                        script_dir=Path(tmp),
                    )
                )
    auth = "off" if args.no_auth else "API key"
    print(
        f"driver: {args.driver}; {args.seconds:.0f} s per run; gateway auth: {auth}; "
        f"cores: {os.cpu_count()}; load average before: {load_before:.2f}"
    )
    print(_report(results))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))


def _wait_http(url: str, *, timeout: float = 20.0) -> None:
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
