"""Routing quality on a shared-prefix workload: round-robin vs load vs prefix-aware (vs vllm-router).

The workload of llm-d's and inference-perf's ``shared_prefix`` benchmark, scaled to one machine:
``--groups`` groups, each with its own long system prompt (``--system-tokens``), every request a
group's system prompt plus a fresh question (``--question-tokens``) answering
``--output-tokens`` tokens, groups picked uniformly at random, arrivals Poisson at each rate of
the ladder (``--rates``, requests per simulated second) for ``--seconds`` each, after
``--warmup`` seconds at the first rate that are not measured (they fill the caches).

As in llm-d's benchmark, the groups' prefixes together are more than one replica's KV cache holds
(default: 16 x 2,500 tokens against an L4's 18,736), so a router that spreads every group over
every replica evicts prefixes it will need again, while one that keeps each group on one replica
fits its share. ``--kv-cache-blocks`` overrides the simulators' KV cache size.

Starts, each in its own process on 127.0.0.1: ``--replicas`` simulators timed like
``--device-profile`` (default an L4: slow prefill, small KV cache, so whether a prompt's prefix is
cached decides its TTFT), and for each policy a fresh router in front of them — the aviator gateway
with preset ``round-robin``, ``load`` or ``prefix-aware``, and ``vllm-router --policy
cache_aware`` when it is installed (``--vllm-router PATH`` or on PATH). The simulators are
restarted for every policy so each starts with cold caches.

Every request streams with ``stream_options.include_usage``; TTFT is the time to the first content
chunk, the cache-hit share is the sum of ``usage.prompt_tokens_details.cached_tokens`` over the
sum of prompt tokens. ``--time-scale`` runs the simulators faster than real time; all figures are
reported in simulated seconds (divided by the scale). The load generator, the router and the
simulators share the machine's cores, so each row also gives the 1-minute load average at its end:
above the core count, the load generator may be what limits. The closing summary gives, per rate,
round-robin's TTFT p90 over prefix-aware's and prefix-aware's against vllm-router's.

    .venv/bin/python bench/routing.py [--replicas 4] [--rates 2 4 6 8 10] [--seconds 20]
        [--policies round-robin load prefix-aware vllm-router] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from procs import Synced, child, free_port, run_forever, until_signalled

MODEL = "bench/llama-3.1-8b"
_COMMON_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year"
)
WORDS = _COMMON_WORDS.split()


def text(rng: random.Random, tokens: int) -> str:
    """Pseudo-English of about ``tokens`` tokens (the simulator's tokenizer: ~1.4 per word)."""
    return " ".join(rng.choice(WORDS) for _ in range(int(tokens / 1.4)))


# -- the gateway child ---------------------------------------------------------------------------


async def _gateway_main(preset: str, endpoints: list[str]) -> None:
    import logging

    from aviator.gateway.app import Gateway, GatewayServer
    from aviator.gateway.auth import Credentials
    from aviator.gateway.endpoints import EndpointTable
    from aviator.gateway.governance import Governance
    from aviator.gateway.models import ModelDirectory
    from aviator.settings import GatewaySettings

    logging.basicConfig(level=logging.WARNING)
    table = EndpointTable()
    for i, url in enumerate(endpoints):
        table.apply(
            "ADDED",
            {
                "metadata": {"name": f"replica-{i}", "namespace": "bench"},
                "spec": {"model": {"name": MODEL}},
                "status": {"endpoint": url, "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )
    directory = ModelDirectory()
    directory.apply(
        "ADDED",
        {
            "metadata": {"name": "bench", "namespace": "bench"},
            "spec": {"model": {"name": MODEL}, "routing": {"preset": preset}},
        },
    )
    gateway = Gateway(
        settings=GatewaySettings(host="127.0.0.1", port=0),
        table=table,
        feed=Synced(),
        authenticator=Credentials(insecure=True),
        governance=Governance(view=None, insecure=True),
        directory=directory,
    )
    server = GatewayServer(gateway, shutdown_grace_s=1.0)
    await server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        await until_signalled()
    finally:
        await server.stop()


# -- load ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    ttft_s: float = 0.0
    e2e_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


async def _one(session: aiohttp.ClientSession, url: str, body: bytes) -> Outcome:
    started = time.perf_counter()
    first: float | None = None
    usage: dict[str, Any] = {}
    try:
        async with session.post(
            url + "/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            if resp.status != 200:
                await resp.read()
                return Outcome(ok=False)
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                chunk = orjson.loads(line[6:])
                if first is None and any(
                    (c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()
                ):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except (aiohttp.ClientError, TimeoutError):
        return Outcome(ok=False)
    end = time.perf_counter()
    details = usage.get("prompt_tokens_details") or {}
    return Outcome(
        ok=first is not None,
        ttft_s=(first or end) - started,
        e2e_s=end - started,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        cached_tokens=int(details.get("cached_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens", 0)),
    )


async def _drive(
    url: str, *, rate: float, seconds: float, args: argparse.Namespace, phase: str
) -> list[Outcome]:
    """Poisson arrivals at ``rate`` real requests/s for ``seconds``; wait for all to finish.

    The groups' system prompts are the same in every phase; the questions and arrivals are drawn
    per ``phase``, so no phase repeats an earlier one's whole prompts (which would hit the cache
    past the shared prefix)."""
    rng = random.Random(f"{args.seed}/{phase}")
    systems = [
        text(random.Random(args.seed * 1000 + g), args.system_tokens) for g in range(args.groups)
    ]
    tasks: list[asyncio.Task[Outcome]] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        deadline = time.perf_counter() + seconds
        next_at = time.perf_counter()
        while next_at < deadline:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            body = orjson.dumps(
                {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": rng.choice(systems)},
                        {"role": "user", "content": text(rng, args.question_tokens)},
                    ],
                    "max_tokens": args.output_tokens,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
            tasks.append(asyncio.create_task(_one(session, url, body)))
            next_at += rng.expovariate(rate)
        return list(await asyncio.gather(*tasks))


# -- report ----------------------------------------------------------------------------------------


@dataclass
class Row:
    policy: str
    rate: float
    """Requests per simulated second offered."""
    requests: int
    errors: int
    ttft_p50_s: float
    ttft_p90_s: float
    e2e_p90_s: float
    output_tok_s: float
    cache_hit_pct: float
    load_avg: float
    """The machine's 1-minute load average when the rate's last request finished."""


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _row(policy: str, rate: float, outcomes: list[Outcome], *, scale: float, wall_s: float) -> Row:
    ok = [o for o in outcomes if o.ok]
    prompt = sum(o.prompt_tokens for o in ok)
    return Row(
        policy=policy,
        rate=rate,
        requests=len(outcomes),
        errors=len(outcomes) - len(ok),
        ttft_p50_s=_quantile([o.ttft_s / scale for o in ok], 0.5),
        ttft_p90_s=_quantile([o.ttft_s / scale for o in ok], 0.9),
        e2e_p90_s=_quantile([o.e2e_s / scale for o in ok], 0.9),
        output_tok_s=sum(o.output_tokens for o in ok) / (wall_s / scale),
        cache_hit_pct=100 * sum(o.cached_tokens for o in ok) / prompt if prompt else 0.0,
        load_avg=os.getloadavg()[0],
    )


def _report(rows: list[Row]) -> str:
    lines = [
        f"{'policy':<14}{'rate':>6}{'reqs':>6}{'err':>5}{'TTFT p50':>10}{'TTFT p90':>10}"
        f"{'e2e p90':>9}{'out tok/s':>11}{'cache hit':>11}{'load':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r.policy:<14}{r.rate:>6g}{r.requests:>6}{r.errors:>5}{r.ttft_p50_s:>9.3f}s"
            f"{r.ttft_p90_s:>9.3f}s{r.e2e_p90_s:>8.2f}s{r.output_tok_s:>11.0f}"
            f"{r.cache_hit_pct:>10.1f}%{r.load_avg:>6.1f}"
        )
    return "\n".join(lines)


def _summary(rows: list[Row]) -> str:
    """Per rate: round-robin's TTFT p90 over prefix-aware's, and prefix-aware's over vllm-router's
    (below 1: prefix-aware is faster)."""
    p90 = {(r.policy, r.rate): r.ttft_p90_s for r in rows}
    lines = []
    for rate in sorted({r.rate for r in rows}):
        aware = p90.get(("prefix-aware", rate))
        if aware is None:
            continue
        parts = [f"rate {rate:g}: prefix-aware TTFT p90 {aware:.3f} s"]
        if (rr := p90.get(("round-robin", rate))) is not None:
            parts.append(f"round-robin / prefix-aware = {rr / aware:.1f}x")
        if (vr := p90.get(("vllm-router", rate))) is not None:
            parts.append(f"prefix-aware / vllm-router = {aware / vr:.2f}")
        lines.append("; ".join(parts))
    return "\n".join(lines)


# -- the parent ------------------------------------------------------------------------------------


def _sim_args(port: int, args: argparse.Namespace, index: int) -> list[str]:
    return [
        sys.executable, "-m", "aviator.sim", "--host", "127.0.0.1", "--port", str(port),
        "--model", MODEL, "--device-profile", args.device_profile, "--model-class", "8b",
        "--time-scale", str(args.time_scale), "--seed", str(index),
        *([] if args.kv_cache_blocks is None else ["--kv-cache-blocks", str(args.kv_cache_blocks)]),
    ]  # fmt: skip


async def _wait_ready(urls: list[str], *, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        for url in urls:
            while True:
                try:
                    async with session.get(url + path) as resp:
                        if resp.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url}{path} did not answer within {timeout:.0f}s")
                await asyncio.sleep(0.1)


def _run_policy(policy: str, args: argparse.Namespace, router: str | None, tmp: Path) -> list[Row]:
    import contextlib

    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        urls = []
        for i in range(args.replicas):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(child(_sim_args(port, args, i), url=url, log=tmp / f"sim-{i}.log"))
            urls.append(url)
        asyncio.run(_wait_ready(urls, path="/health"))
        if policy == "vllm-router":
            assert router is not None
            port = free_port()
            _, front = stack.enter_context(
                child(
                    [router, "--worker-urls", *urls, "--host", "127.0.0.1", "--port", str(port),
                     "--policy", "cache_aware"],
                    url=f"http://127.0.0.1:{port}",
                    log=tmp / "vllm-router.log",
                )
            )  # fmt: skip
            asyncio.run(_wait_ready([front], path="/health"))
        else:
            me = [sys.executable, str(Path(__file__).resolve())]
            endpoints = [arg for url in urls for arg in ("--endpoint", url)]
            _, front = stack.enter_context(child([*me, "gateway", "--preset", policy, *endpoints]))
        if args.warmup > 0:
            asyncio.run(
                _drive(
                    front,
                    rate=args.rates[0] / args.time_scale,
                    seconds=args.warmup,
                    args=args,
                    phase="warmup",
                )
            )
        for rate in args.rates:
            real_rate = rate / args.time_scale
            started = time.perf_counter()
            outcomes = asyncio.run(
                _drive(front, rate=real_rate, seconds=args.seconds, args=args, phase=f"{rate:g}")
            )
            row = _row(
                policy, rate, outcomes, scale=args.time_scale, wall_s=time.perf_counter() - started
            )
            print(_report([row]).splitlines()[1], flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "role", nargs="?", default="bench", choices=["bench", "gateway"], help=argparse.SUPPRESS
    )
    parser.add_argument("--endpoint", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="prefix-aware", help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--device-profile", default="l4-24gb")
    parser.add_argument("--kv-cache-blocks", type=int, help="KV cache size of each simulator.")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--system-tokens", type=int, default=2500)
    parser.add_argument("--question-tokens", type=int, default=100)
    parser.add_argument("--output-tokens", type=int, default=30)
    parser.add_argument("--rates", type=float, nargs="+", default=[2, 4, 6, 8, 10])
    parser.add_argument("--seconds", type=float, default=20.0, help="Real seconds per rate.")
    parser.add_argument(
        "--warmup", type=float, default=10.0, help="Real seconds at the first rate, not measured."
    )
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--policies", nargs="+", default=["round-robin", "load", "prefix-aware", "vllm-router"]
    )
    parser.add_argument("--vllm-router", help="Path of the vllm-router executable.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if min(args.rates) <= 0 or args.seconds <= 0 or args.time_scale <= 0:
        parser.error("--rates, --seconds and --time-scale must be positive")
    if args.warmup < 0 or args.groups < 1 or args.replicas < 1:
        parser.error("--warmup must be >= 0, --groups and --replicas >= 1")
    if args.role == "gateway":
        run_forever(_gateway_main(args.preset, args.endpoint))
        return
    router = args.vllm_router or shutil.which("vllm-router")
    policies = list(args.policies)
    if "vllm-router" in policies and router is None:
        print("vllm-router is not installed (pip install vllm-router): skipped", flush=True)
        policies.remove("vllm-router")
    print(
        f"{args.replicas} x {args.device_profile} simulators; {args.groups} groups x "
        f"{args.system_tokens}-token system prompt + {args.question_tokens}-token question, "
        f"{args.output_tokens} output tokens; {args.warmup:g} s warm-up, {args.seconds:g} s per "
        f"rate; time scale {args.time_scale:g} (figures in simulated seconds)",
        flush=True,
    )
    print(_report([]), flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            rows.extend(_run_policy(policy, args, router, Path(tmp)))
    print()
    print(_report(rows))
    print()
    print(_summary(rows))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
