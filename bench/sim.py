"""Throughput of the built-in simulator (``aviator sim``) with zero latency, non-streaming.

Starts ``python -m aviator.sim --ttft-ms 0 --itl-ms 0 --port 0`` on 127.0.0.1, drives it with
aiohttp clients over keep-alive connections for a bounded number of requests and a bounded time,
and prints JSON: achieved req/s, client-observed latency percentiles, and the server's own CPU time,
whence ``req_per_server_cpu_s`` -- the rate one fully busy core would sustain. On a small machine
the client competes with the server for cores, so the last figure is the fairer capacity number.

    .venv/bin/python bench/sim.py [--requests 20000] [--seconds 20] [--concurrency 64]
        [--stream] [--max-tokens 16] [--clients 1] [--ttft-ms 0] [--itl-ms 0]
        [--device-profile h100-sxm-80gb --time-scale 0.01]

With ``--device-profile`` the server runs vLLM's step loop timed by that profile instead of the
constant latencies (scaled by ``--time-scale``; 0 makes every step instant).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

_LISTENING = re.compile(rb"http://127\.0\.0\.1:(\d+)")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aviator.sim", "--model", "bench", "--port", "0",
         "--max-num-seqs", "1024", *extra],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        match = _LISTENING.search(line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    raise RuntimeError("the simulator did not start")


async def _load(
    url: str, *, requests: int, seconds: float, concurrency: int, body: bytes, stream: bool
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"done": len(latencies), "errors": errors, "elapsed": elapsed, "latencies": latencies}


def _client(args: argparse.Namespace, port: int, share: int) -> dict[str, Any]:
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": "Say something about control planes."}],
        "max_tokens": args.max_tokens,
        "ignore_eos": True,
        "stream": args.stream,
    }
    return asyncio.run(
        _load(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            requests=share,
            seconds=args.seconds,
            concurrency=args.concurrency,
            body=json.dumps(body).encode(),
            stream=args.stream,
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=64, help="connections per client process")
    p.add_argument("--clients", type=int, default=1, help="client processes")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--ttft-ms", type=float, default=0.0)
    p.add_argument("--itl-ms", type=float, default=0.0)
    p.add_argument("--device-profile", default=None)
    p.add_argument("--time-scale", type=float, default=1.0)
    args = p.parse_args()
    server = ["--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms)]
    server += ["--time-scale", str(args.time_scale)]
    if args.device_profile:
        server += ["--device-profile", args.device_profile]
    proc, port = _start_server(server)
    try:
        # Warm-up (connection setup, first-call caches), not measured.
        _client(argparse.Namespace(**{**vars(args), "seconds": 5.0}), port, 500)
        cpu_before = _cpu_seconds(proc.pid)
        share = args.requests // args.clients
        if args.clients == 1:
            results = [_client(args, port, share)]
        else:
            with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
                results = pool.starmap(_client, [(args, port, share)] * args.clients)
        server_cpu = _cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    done = sum(r["done"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    q = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "benchmark": "sim non-streaming" if not args.stream else "sim streaming",
                "requests": done,
                "errors": sum(r["errors"] for r in results),
                "concurrency": args.concurrency * args.clients,
                "max_tokens": args.max_tokens,
                "ttft_ms": args.ttft_ms,
                "itl_ms": args.itl_ms,
                "device_profile": args.device_profile,
                "time_scale": args.time_scale,
                "elapsed_s": round(elapsed, 3),
                "req_per_s": round(done / elapsed, 1),
                "latency_ms": {"p50": round(q[49] * 1e3, 3), "p99": round(q[98] * 1e3, 3)},
                "server_cpu_s": round(server_cpu, 3),
                "req_per_server_cpu_s": round(done / server_cpu, 1) if server_cpu else None,
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
