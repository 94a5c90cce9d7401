"""The gateway's HTTP server alone: aviator's ``HttpServer`` against aiohttp's ``web``.

Each server runs in its own process on 127.0.0.1 with uvloop and answers every ``POST
/v1/chat/completions`` with the fixed 259-byte chat completion of ``bench/gateway.py`` after
reading the body: no gateway behind it, so what is measured is the server layer the gateway
replaced (request parsing, request and response objects, the task per request, writing). wrk
drives each (``-t1 -cC``) for ``--seconds`` per run, the targets interleaved over ``--rounds``;
reported per target: median req/s, p50, and the server process's CPU per request (user +
system) and, with ``--instructions`` (needs perf), its user-space instructions per request.

    .venv/bin/python bench/http_server.py [--seconds 5] [--rounds 3] [--concurrency 16]
        [--instructions]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from gateway import API_KEY, Result, _answer, _measure
from governance import counting_instructions
from procs import child, run_forever, until_signalled

TARGETS = ("aiohttp-web", "aviator-httpserver")


async def _aiohttp_main() -> None:
    from aiohttp import web

    body = _answer()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await until_signalled()
    await runner.cleanup()


async def _aviator_main() -> None:
    from aviator.gateway.server import HttpServer, Request, Response

    body = _answer()
    headers = [("content-type", "application/json")]

    async def chat(request: Request) -> Response:
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return Response(200, body, headers=headers)
        return Response(404)

    server = HttpServer(
        chat,
        errors=lambda status, message, request: Response(status, message.encode()),
        max_body_bytes=1 << 20,
    )
    await server.start("127.0.0.1", 0)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await until_signalled()
    await server.close(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", *TARGETS])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--instructions", action="store_true")
    args = parser.parse_args()
    if args.role == "aiohttp-web":
        run_forever(_aiohttp_main())
        return
    if args.role == "aviator-httpserver":
        run_forever(_aviator_main())
        return
    args.driver = "wrk"
    me = [sys.executable, str(Path(__file__).resolve())]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    runs: dict[str, list[tuple[Result, float | None]]] = {name: [] for name in TARGETS}
    with (
        tempfile.TemporaryDirectory() as tmp,
        child([*me, "aiohttp-web"]) as (aio_pid, aio_url),
        child([*me, "aviator-httpserver"]) as (av_pid, av_url),
    ):
        started = {"aiohttp-web": (aio_pid, aio_url), "aviator-httpserver": (av_pid, av_url)}
        for name, (pid, url) in started.items():  # warm up
            _measure(name, url, pids=[pid], concurrency=args.concurrency, args=args,
                     headers=headers, script_dir=Path(tmp), seconds=1.0)  # fmt: skip
        for round_ in range(args.rounds):
            order = TARGETS if round_ % 2 == 0 else TARGETS[::-1]
            for name in order:
                pid, url = started[name]
                with counting_instructions([pid], enabled=args.instructions) as counted:
                    result = _measure(
                        name,
                        url,
                        pids=[pid],
                        concurrency=args.concurrency,
                        args=args,
                        headers=headers,
                        script_dir=Path(tmp),
                    )
                per_request = counted[0] / result.requests if counted and result.requests else None
                runs[name].append((result, per_request))
                print(
                    f"round {round_ + 1} {name:<19} {result.req_s:>8.0f} req/s, "
                    f"cpu {result.cpu_ms_per_req} ms/req",
                    flush=True,
                )
    print(f"\nconcurrency {args.concurrency}; medians of {args.rounds} rounds of {args.seconds} s")
    print(f"{'server':<19} {'req/s':>8} {'p50 ms':>7} {'CPU us/req':>10} {'instr/req':>10}")
    for name, found in runs.items():
        results = [r for r, _ in found]
        cpus = [r.cpu_ms_per_req for r in results if r.cpu_ms_per_req is not None]
        counts = [c for _, c in found if c]
        instructions = f"{statistics.median(counts) / 1e3:.0f}k" if counts else "-"
        print(
            f"{name:<19} {statistics.median(r.req_s for r in results):>8.0f} "
            f"{statistics.median(r.p50_ms for r in results):>7.3f} "
            f"{statistics.median(cpus) * 1e3:>10.1f} {instructions:>10}"
        )


if __name__ == "__main__":
    main()
