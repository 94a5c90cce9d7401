"""Cost of governance in the gateway's request path: throughput, latency and CPU per request with
governance off and on, and how long the policy decisions take inside the gateway under that load.

One fast upstream (``bench/gateway.py``'s fixed 259-byte chat completion, answered by a bare
asyncio protocol: with it the load generator's core is 32-48 % busy instead of 85-100 % with the
aiohttp server, and keeps room for the audit writers; ``--upstream aiohttp`` for that server)
behind five gateway processes, each composed as ``aviator gateway`` composes it but with fixed
objects in place of the Control API:

- ``off``: ``--insecure``, no audit log: no authentication, no policy, no budgets, nothing
  recorded (what ``bench/gateway.py --insecure`` measures);
- ``off-objects``: the same with the bench's objects loaded (routing configuration and priorities
  from the ModelDeployment): the control that tells governance's cost from the objects';
- ``admin``: the admin token (admitted without a policy evaluation), audit log on;
- ``agent``: the production path: agent JWTs (ES256, from a ``KeyRing`` in a temporary directory,
  verified by ``TokenVerifier`` against a JWKS file), the Policies of ``examples/governance.yaml``
  decided by the compiled Cedar set of a ``PolicyView`` (whose ``agents-use-their-namespace``
  permits the bench agents on the bench ModelDeployment of their namespace), per-agent budgets
  (large enough never to refuse, but reserved and settled on every request) and the audit log on;
- ``agent-noaudit``: the same without the audit log, to tell its cost from the rest.

The Policies, Agents and the ModelDeployment go through the Control API's admission
(``admission.admit`` and the Cedar checks) before the gateways load them. Requests vary: they
cycle through ``--variants`` bodies with prompts of 16 to 4,000 characters, ``max_tokens`` from 16
to 1,024, sent by ``--agents`` agents, one in eight declaring an intent (``x-aviator-intent``), so
that the token estimates, the decision cache and the token cache see many keys; every target gets
the same requests (only the credential differs). A discarded 1 s warm-up per target comes first;
then ``--rounds`` rounds, each measuring every target at every concurrency (wrk, or the aiohttp
driver), in an order rotated per round. ``--targets off agent`` measures only those two (``off``,
the reference, always is), alternating: the runs compared are then seconds apart, and many short
rounds (``--seconds 2 --rounds 25``) outvote the moments the shared machine is slower. The cost
of each governed target is taken per round against ``off`` of the same round (paired), and its
median and range over the rounds are printed: throughput lost and CPU per request added. CPU per
request is the gateway process's own; its audit writer process's CPU per request is printed
apart, and the two together against ``off`` (the writer needs a core: on a host with one to spare
it takes nothing from the gateway; on this 2-core machine, with ``--pin``, the gateway has CPU 1
to itself and the writer shares CPU 0 with wrk and the upstream, which leave it room, or
``--writer-cpu target`` puts it on the gateway's core, the strictest case). The load average
is recorded with every run, since the machine is shared.

Saturated throughput on a shared 2-core machine swings with the neighbours (and so does CPU per
request, which grows when fewer requests share each wake-up). ``--paced R`` offers every target
the same load instead, about R requests per second (each wrk connection waits ``c / R`` seconds
before each request, so the rate achieved is a little lower, by the latency's share), and compares
CPU per request at that load: the gateway's event loop is what saturates, so the throughput lost
at saturation is ``1 - 1 / (1 + CPU added)``, the figure the budget is checked against then.

The decision latency in the request path is read from the gateways' own
``aviator_gateway_policy_decision_seconds`` histogram, scraped before and after every run: its
p50/p99 are interpolated within buckets as PromQL's ``histogram_quantile`` does, and the share of
decisions within the 200 us budget is exact (200 us is a bucket bound).

``--profile N`` then runs the ``off`` and ``agent`` gateways once more, each profiled with
cProfile for one run at the highest concurrency (after a 1 s warm-up; timed in the event loop
thread's CPU time, so neither start-up nor other processes count, and neither does the audit
log's writer thread), and prints each one's CPU per request by component (auth, policy, budgets,
audit, the rest of the gateway, aiohttp, ...) and the ``agent`` gateway's top N functions by own
time. Profiling slows everything down: its figures are for attribution only.

``--together`` runs ``off`` and each governed target *at the same time* instead, both pinned to
CPU 1 (each with its own wrk on CPU 0), and compares their CPU per request over the same
seconds: on a shared host whatever slows the core then slows both alike, and the paired costs
spread by one or two points instead of the ±20 of runs taken one after another. The core's
scheduler switches between the two every few milliseconds (about 200 switches a second each,
counted in /proc), so each runs with its caches warm. Throughput at saturation scales with
1 / CPU per request, so the throughput lost is ``1 - CPU(off) / CPU(target)``: the figure the
budget is checked against in this mode.

``--native`` runs every target from a copy of the tree whose governance cores are compiled with
mypyc (``tools/native.py``), as in a wheel built with the native hook (``hatch_build.py``).

    .venv/bin/python bench/governance.py [--seconds 10] [--concurrency 1 16] [--rounds 3]
        [--agents 8] [--variants 512] [--seed 7] [--driver auto|wrk|aiohttp]
        [--paced REQ_PER_S] [--instructions] [--profile N] [--json] [--pin] [--native]
        [--writer-cpu target|load] [--targets NAME ...] [--upstream raw|aiohttp] [--together]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway import (
    API_KEY,
    LOAD_CPU,
    MODEL,
    TARGET_CPU,
    Request,
    Result,
    _children,
    _measure,
    _median,
    _pin,
)
from procs import child, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "examples" / "governance.yaml"
NAMESPACE = "default"
DEPLOYMENT = "bench"
DECISION_METRIC = "aviator_gateway_policy_decision_seconds"
BUDGET_S = 0.0002
"""Issue 5: p99 of a decision in the request path at most 200 us."""
COST_BUDGET = 0.15
"""Issue 5: governance may cost at most 15 % of the gateway's throughput."""
INTENTS = ("summaries", "support", "batch-eval", "research")
WORDS = ("the", "gateway", "agent", "policy", "token", "budget", "answer", "model", "request")


# -- the governed world: objects, tokens, requests -----------------------------------------------


def bench_manifest(agents: int) -> str:
    """The bench's own objects: the ModelDeployment serving the bench model and ``agents`` Agents
    in its namespace, with budgets far above what a run uses (so they never refuse, but every
    request still reserves and settles)."""
    docs = [
        f"""apiVersion: aviator.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {DEPLOYMENT}, namespace: {NAMESPACE}}}
spec:
  model: {{name: {MODEL}}}
  engine: sim
"""
    ]
    for i in range(agents):
        docs.append(
            f"""apiVersion: aviator.dev/v1alpha1
kind: Agent
metadata: {{name: bench-{i}, namespace: {NAMESPACE}}}
spec:
  owner: bench
  purpose: governance benchmark
  budgets:
    tokensPerMinute: 1000000000000
    tokensPerDay: 1000000000000000
    maxConcurrentRequests: 100000
"""
        )
    return "---\n".join(docs)


def admitted_objects(agents: int) -> list[dict[str, Any]]:
    """The Policies of ``examples/governance.yaml`` and the bench's objects, as the Control API
    would store them (admitted, defaulted, Cedar checked); raises on the first invalid one."""
    from aviator.api import admission, errors
    from aviator.cli import manifests
    from aviator.policy.validation import CHECKS

    documents = [
        *manifests.load([POLICIES]),
        *manifests.parse_text(bench_manifest(agents), source="bench"),
    ]
    objects = []
    for version, doc in enumerate(documents, start=1):
        namespace = manifests.resolve_namespace(doc, NAMESPACE)
        obj = admission.admit(
            manifests.desired_object(doc, namespace), kind=doc.kind, namespace=namespace
        )
        causes = [cause for check in CHECKS for cause in check(doc.kind, obj)]
        if causes:
            raise errors.Invalid(f"{doc.ref} is invalid", kind=doc.kind.kind, causes=tuple(causes))
        obj["metadata"]["resourceVersion"] = str(version)
        objects.append(obj)
    return objects


def agent_tokens(keys: Path, agents: int) -> tuple[list[str], dict[str, Any]]:
    """A token for each bench agent (audience ``gateway``, the longest lifetime allowed), and the
    JWKS that verifies them."""
    from aviator.api.agent import DEFAULT_AUDIENCE
    from aviator.identity import tokens
    from aviator.identity.keys import KeyRing
    from aviator.settings import IdentitySettings

    identity = IdentitySettings()
    ring = KeyRing.load_or_create(keys)
    minted = [
        tokens.mint(
            key=ring.active,
            issuer=identity.effective_issuer,
            trust_domain=identity.trust_domain,
            namespace=NAMESPACE,
            name=f"bench-{i}",
            audience=DEFAULT_AUDIENCE,
            ttl_s=tokens.HARD_MAX_TTL_S,
            now=time.time(),
        ).token
        for i in range(agents)
    ]
    return minted, ring.jwks()


@dataclass(frozen=True, slots=True)
class Variant:
    """One request of the cycle: who sends it, what it declares, its body."""

    agent: int
    intent: str | None
    body: bytes


def variants(rng: random.Random, *, count: int, agents: int) -> list[Variant]:
    """``count`` chat requests: prompts of 16 to 4,000 characters (log-uniform), ``max_tokens``
    16 to 1,024, a random agent each, one in eight declaring an intent."""
    found = []
    for _ in range(count):
        chars = int(16 * (250 ** rng.random()))
        prompt = ""
        while len(prompt) < chars:
            prompt += rng.choice(WORDS) + " "
        messages = [{"role": "user", "content": prompt[:chars]}]
        if rng.random() < 0.25:
            messages.insert(0, {"role": "system", "content": "Answer briefly."})
        body = orjson.dumps(
            {"model": MODEL, "messages": messages, "max_tokens": 2 ** rng.randint(4, 10)}
        )
        intent = rng.choice(INTENTS) if rng.random() < 0.125 else None
        found.append(Variant(agent=rng.randrange(agents), intent=intent, body=body))
    return found


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    flags: tuple[str, ...]
    """``bench/gateway.py gateway`` options."""
    credential: str
    """``none``, ``admin`` or ``agent``."""

    @property
    def decides(self) -> bool:
        return self.credential == "agent"


_GOVERNED = ("--objects", "{objects}", "--jwks", "{jwks}")
TARGETS = (
    Target("off", ("--insecure",), "none"),
    # The control: governance off, but the same objects (routing configuration, priorities).
    Target("off-objects", ("--insecure", "--objects", "{objects}"), "none"),
    Target("admin", (*_GOVERNED, "--audit-file", "{audit}"), "admin"),
    Target("agent", (*_GOVERNED, "--audit-file", "{audit}"), "agent"),
    Target("agent-noaudit", _GOVERNED, "agent"),
)
TARGETS_BY_NAME = {t.name: t for t in TARGETS}


def requests_of(target: Target, cycle: Sequence[Variant], tokens: Sequence[str]) -> list[Request]:
    """The cycle of requests as ``target`` is sent them: the same bodies and intents, the target's
    credential."""
    sent: list[Request] = []
    for v in cycle:
        headers: dict[str, str] = {}
        if target.credential == "admin":
            headers["Authorization"] = f"Bearer {API_KEY}"
        elif target.credential == "agent":
            headers["Authorization"] = f"Bearer {tokens[v.agent]}"
        if v.intent is not None:
            headers["x-aviator-intent"] = v.intent
        sent.append((headers, v.body))
    return sent


# -- the decision histogram ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative counts per upper bound (the last ``inf``) and the sum, as scraped."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total_s: float

    @property
    def count(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def __sub__(self, earlier: Histogram) -> Histogram:
        if earlier.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.total_s - earlier.total_s,
        )

    def __add__(self, other: Histogram) -> Histogram:
        if not self.bounds:
            return other
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return Histogram(
            self.bounds,
            tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
            self.total_s + other.total_s,
        )

    def quantile(self, q: float) -> float:
        """PromQL's ``histogram_quantile``: linear within the bucket holding rank ``q * count``
        (from 0 for the first bucket); in the ``+Inf`` bucket, the highest finite bound."""
        if self.count == 0:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if bound == float("inf"):
                    return lower
                if cumulative == below:
                    return bound
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return lower

    def share_within(self, bound: float) -> float:
        """The fraction of observations at most ``bound`` (one of the bucket bounds)."""
        return self.cumulative[self.bounds.index(bound)] / self.count if self.count else 0.0


EMPTY = Histogram((), (), 0.0)


def parse_histogram(text: str, name: str) -> Histogram:
    """The unlabelled histogram ``name`` of a Prometheus exposition."""
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        buckets = sorted(
            (float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{name}_bucket"
        )
        total = next(s.value for s in family.samples if s.name == f"{name}_sum")
        return Histogram(tuple(b for b, _ in buckets), tuple(c for _, c in buckets), total)
    raise ValueError(f"no histogram {name} in the exposition")


def scrape(url: str) -> Histogram:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return parse_histogram(resp.read().decode(), DECISION_METRIC)


# -- running -------------------------------------------------------------------------------------


@dataclass
class Run:
    result: Result
    round: int
    decisions: Histogram = EMPTY
    instructions: float | None = None
    """User-space instructions the gateway process (all threads) retired per request."""
    writer_instructions: float | None = None
    """The same for its audit writer process (``aviator.audit.writer``), if it has one."""
    writer_cpu_ms: float | None = None
    """CPU time of the audit writer process per request (ms), if it has one."""


_PERF_STAT = ("perf", "stat", "-x", ",", "-e", "instructions:u")


def writer_cpu_of(args: argparse.Namespace) -> str:
    """The CPU ``--pin`` gives the audit writer processes."""
    return TARGET_CPU if args.writer_cpu == "target" else LOAD_CPU


@contextlib.contextmanager
def counting_instructions(pids: Sequence[int], *, enabled: bool) -> Iterator[list[int]]:
    """Count the user-space instructions processes ``pids`` (every thread) retire in the block
    with ``perf stat``; the count is appended to the yielded list at the end (nothing when not
    ``enabled``, no pids, or perf could not count). Instructions do not depend on what else the
    machine runs, which CPU time and throughput on a shared machine do."""
    found: list[int] = []
    if not enabled or not pids:
        yield found
        return
    with tempfile.TemporaryDirectory() as name:
        out = Path(name) / "perf.txt"
        perf = subprocess.Popen(
            [*_PERF_STAT, "-o", str(out), "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.2)  # attached well before the run starts (the gateway idles meanwhile)
        try:
            yield found
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=10)
            match = re.search(r"^(\d+),[^,]*,instructions:u", out.read_text(), re.MULTILINE)
            if match:
                found.append(int(match.group(1)))


@dataclass
class Row:
    """One target at one concurrency, over the rounds."""

    target: str
    concurrency: int
    median: Result
    req_s_range: tuple[float, float]
    cpu_range: tuple[float, float] | None
    load_range: tuple[float, float]
    decisions: int = 0
    decision_p50_us: float | None = None
    decision_p99_us: float | None = None
    decision_mean_us: float | None = None
    within_budget: float | None = None
    req_s_cost: tuple[float, float, float] | None = None
    """Throughput lost against ``off`` of the same round: median, min, max."""
    cpu_cost: tuple[float, float, float] | None = None
    """CPU per request added against ``off`` of the same round: median, min, max."""
    instructions: float | None = None
    """Median instructions per request (``--instructions``)."""
    instructions_cost: tuple[float, float, float] | None = None
    """Instructions per request added against ``off`` of the same round: median, min, max."""
    writer_instructions: float | None = None
    """Median instructions per request of the audit writer process."""
    writer_cpu_ms: float | None = None
    """Median CPU per request of the audit writer process (ms)."""
    total_cpu_cost: tuple[float, float, float] | None = None
    """CPU per request of the gateway and its writer together, added against ``off``."""


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def summarise(runs: dict[tuple[str, int], list[Run]], *, targets: Sequence[Target]) -> list[Row]:
    rows = []
    for target in targets:
        for (name, concurrency), found in runs.items():
            if name != target.name:
                continue
            results = [r.result for r in found]
            cpus = [r.cpu_ms_per_req for r in results if r.cpu_ms_per_req is not None]
            row = Row(
                target=name,
                concurrency=concurrency,
                median=_median(results),
                req_s_range=(min(r.req_s for r in results), max(r.req_s for r in results)),
                cpu_range=(min(cpus), max(cpus)) if cpus else None,
                load_range=(
                    min(r.load or 0.0 for r in results),
                    max(r.load or 0.0 for r in results),
                ),
            )
            if target.decides:
                merged = EMPTY
                for run in found:
                    merged = merged + run.decisions
                row.decisions = int(merged.count)
                if merged.count:
                    row.decision_p50_us = merged.quantile(0.5) * 1e6
                    row.decision_p99_us = merged.quantile(0.99) * 1e6
                    row.decision_mean_us = merged.total_s / merged.count * 1e6
                    row.within_budget = merged.share_within(BUDGET_S)
            counts = [r.instructions for r in found if r.instructions]
            if counts:
                row.instructions = statistics.median(counts)
            writer = [r.writer_instructions for r in found if r.writer_instructions]
            if writer:
                row.writer_instructions = statistics.median(writer)
            writer_cpu = {r.round: r.writer_cpu_ms for r in found if r.writer_cpu_ms is not None}
            if writer_cpu:
                row.writer_cpu_ms = statistics.median(writer_cpu.values())
            if name != "off":
                off_runs = {r.round: r for r in runs[("off", concurrency)]}
                added = []
                for r in found:
                    base = off_runs[r.round].instructions if r.round in off_runs else None
                    if r.instructions and base:
                        added.append(r.instructions / base - 1)
                if added:
                    row.instructions_cost = _spread(added)
                off = {r.round: r.result for r in runs[("off", concurrency)]}
                paired = [(r.result, off[r.round]) for r in found if r.round in off]
                row.req_s_cost = _spread([1 - mine.req_s / base.req_s for mine, base in paired])
                cpu_pairs = [
                    (mine.cpu_ms_per_req, base.cpu_ms_per_req)
                    for mine, base in paired
                    if mine.cpu_ms_per_req and base.cpu_ms_per_req
                ]
                if cpu_pairs:
                    row.cpu_cost = _spread([m / b - 1 for m, b in cpu_pairs])
                totals = [
                    (mine + writer_cpu.get(r.round, 0.0), base)
                    for r in found
                    if r.round in off
                    and (mine := r.result.cpu_ms_per_req)
                    and (base := off[r.round].cpu_ms_per_req)
                ]
                if writer_cpu and totals:
                    row.total_cpu_cost = _spread([m / b - 1 for m, b in totals])
            rows.append(row)
    rows.sort(key=lambda r: r.concurrency)
    return rows


def report(rows: Sequence[Row], *, paced: float | None = None, together: bool = False) -> str:
    lines = [
        f"{'target':<14} {'c':>3} {'req/s':>7} {'(min-max)':>13} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu ms/req':>10} {'(min-max)':>13} {'req/s cost':>17} {'cpu cost':>17} "
        f"{'load':>9}"
    ]

    def cost(spread: tuple[float, float, float] | None) -> str:
        if spread is None:
            return "-"
        median, low, high = spread
        return f"{median:+.1%} ({low:+.0%}..{high:+.0%})"

    for r in rows:
        m = r.median
        cpu = f"{m.cpu_ms_per_req:.3f}" if m.cpu_ms_per_req is not None else "-"
        cpu_range = f"({r.cpu_range[0]:.3f}-{r.cpu_range[1]:.3f})" if r.cpu_range else ""
        lines.append(
            f"{r.target:<14} {r.concurrency:>3} {m.req_s:>7.0f} "
            f"{f'({r.req_s_range[0]:.0f}-{r.req_s_range[1]:.0f})':>13} {m.p50_ms:>7.3f} "
            f"{m.p99_ms:>7.3f} {cpu:>10} {cpu_range:>13} {cost(r.req_s_cost):>17} "
            f"{cost(r.cpu_cost):>17} {f'{r.load_range[0]:.1f}-{r.load_range[1]:.1f}':>9}"
        )
    if any(r.instructions for r in rows):
        lines.append("")
        lines.append("user-space instructions per request of the gateway process (perf stat):")
        for r in rows:
            if r.instructions:
                writer = (
                    f"   + audit writer process {r.writer_instructions / 1e3:.0f}k"
                    if r.writer_instructions
                    else ""
                )
                lines.append(
                    f"  {r.target:<14} c={r.concurrency:<3} {r.instructions / 1e3:7.0f}k"
                    f"{'' if r.instructions_cost is None else '  ' + cost(r.instructions_cost)}"
                    f"{writer}"
                )
    lines.append("")
    lines.append("policy decisions in the request path (aviator_gateway_policy_decision_seconds):")
    for r in rows:
        if r.decision_p99_us is None:
            continue
        assert r.decision_p50_us is not None
        assert r.within_budget is not None
        lines.append(
            f"  {r.target:<14} c={r.concurrency:<3} {r.decisions:>8} decisions: "
            f"p50 {r.decision_p50_us:6.1f} us, p99 {r.decision_p99_us:6.1f} us, "
            f"mean {r.decision_mean_us:6.1f} us; {r.within_budget:.2%} within 200 us "
            f"(p99 <= 200 us: {'met' if r.decision_p99_us <= BUDGET_S * 1e6 else 'NOT met'})"
        )
    if any(r.writer_cpu_ms is not None for r in rows):
        lines.append("")
        lines.append(
            "CPU per request of the audit writer process (not in the cpu column: on a host with a "
            "core to spare it is not the gateway's):"
        )
        for r in rows:
            if r.writer_cpu_ms is not None:
                total = (
                    ""
                    if r.total_cpu_cost is None
                    else f"; gateway and writer together {cost(r.total_cpu_cost)} against off"
                )
                lines.append(
                    f"  {r.target:<14} c={r.concurrency:<3} {r.writer_cpu_ms:.4f} ms{total}"
                )
    lines.append("")
    for r in rows:
        if r.target != "agent" or r.req_s_cost is None:
            continue
        if together:
            if r.cpu_cost is None:
                continue
            median, low, high = (1 - 1 / (1 + c) for c in r.cpu_cost)
            verdict = "holds" if median <= COST_BUDGET else "does NOT hold"
            lines.append(
                f"governance on (agent, audit on) vs off at c={r.concurrency}, both on one core "
                f"at the same time: the gateway's CPU per request {r.cpu_cost[0]:+.1%}, so "
                f"{median:.1%} of its throughput at saturation (median of paired rounds, "
                f"{low:.1%}..{high:.1%}; the audit writer's CPU apart, above); the <= 15 % "
                f"budget {verdict}"
            )
            continue
        if paced:
            if r.cpu_cost is None:
                continue
            # At the same offered load, throughput at saturation scales with 1 / CPU per request
            # (the gateway's event loop is what saturates).
            lost = 1 - 1 / (1 + r.cpu_cost[0])
            verdict = "holds" if lost <= COST_BUDGET else "does NOT hold"
            lines.append(
                f"governance on (agent, audit on) vs off at c={r.concurrency}, paced at about "
                f"{paced:.0f} req/s: the gateway's CPU per request {r.cpu_cost[0]:+.1%} (median "
                f"of paired rounds), so {lost:.1%} of its throughput at saturation with the audit "
                f"writer on a core of its own; the <= 15 % budget {verdict}"
            )
            if r.total_cpu_cost is not None:
                lost = 1 - 1 / (1 + r.total_cpu_cost[0])
                lines.append(
                    f"  with the writer's CPU on the same core: {r.total_cpu_cost[0]:+.1%}, so "
                    f"{lost:.1%} (the budget {'holds' if lost <= COST_BUDGET else 'does NOT hold'}"
                    " there)"
                )
            continue
        verdict = "holds" if r.req_s_cost[0] <= COST_BUDGET else "does NOT hold"
        lines.append(
            f"governance on (agent, audit on) vs off at c={r.concurrency}: throughput "
            f"{r.req_s_cost[0]:+.1%} lost (median of paired rounds); the <= 15 % budget {verdict}"
        )
    return "\n".join(lines)


def _native() -> Any:
    """``tools/native.py``, from the repository's root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tools.native")


@contextlib.contextmanager
def gateways(
    targets: Sequence[Target],
    *,
    upstream: str,
    tmp: Path,
    paths: dict[str, str],
    wrap: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[dict[str, tuple[int, str]]]:
    """Start a gateway per target (``wrap``: a command to run ``bench/gateway.py`` under; ``env``:
    added to their environment); yield name → (pid, url) once all answer /health."""
    me = str(Path(__file__).resolve().parent / "gateway.py")
    with contextlib.ExitStack() as stack:
        started = {}
        for target in targets:
            flags = [
                flag.format(**paths, audit=str(tmp / f"audit-{target.name}.db"))
                for flag in target.flags
            ]
            started[target.name] = stack.enter_context(
                child(
                    [sys.executable, *wrap, me, "gateway", "--upstream", upstream, *flags], env=env
                )
            )
        for _, url in started.values():
            _until_healthy(url)
        yield started


def _until_healthy(url: str, *, timeout: float = 20.0) -> None:
    """Until the gateway's /health answers 200 (its policies compiled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A 503 (still syncing) raises HTTPError, an OSError, like a refused connection.
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=1) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy within {timeout:.0f}s")


def _all_admitted(name: str, concurrency: int, result: Result) -> None:
    if result.errors:
        raise RuntimeError(
            f"{name} c={concurrency}: {result.errors} of {result.requests} "
            "requests failed; governance must admit every bench request"
        )


def _writer_ms(writers: Sequence[int], cpu_before: float, result: Result) -> float | None:
    """CPU per request (ms) the audit writer processes spent since ``cpu_before``."""
    if not writers or not result.requests:
        return None
    return (sum(cpu_seconds(w) for w in writers) - cpu_before) * 1e3 / result.requests


def measure_all(
    args: argparse.Namespace,
    *,
    targets: Sequence[Target],
    started: dict[str, tuple[int, str]],
    sent: dict[str, list[Request]],
    tmp: Path,
) -> dict[tuple[str, int], list[Run]]:
    headers = {"Content-Type": "application/json"}
    for target in targets:  # warm-up: connections, token and decision caches, slices
        pid, url = started[target.name]
        _measure(
            target.name,
            url,
            pids=[pid],
            concurrency=max(args.concurrency),
            args=args,
            headers=headers,
            script_dir=tmp,
            requests=sent[target.name],
            seconds=1.0,
        )
    runs: dict[tuple[str, int], list[Run]] = {}
    for round_ in range(args.rounds):
        order = [*targets[round_ % len(targets) :], *targets[: round_ % len(targets)]]
        for concurrency in args.concurrency:
            # Paced: every connection waits so that together they offer about --paced req/s.
            delay_ms = concurrency * 1e3 / args.paced if args.paced else None
            for target in order:
                pid, url = started[target.name]
                writers = _children(pid)  # the audit writer process, when it has one
                before = scrape(url) if target.decides else EMPTY
                writer_before = sum(cpu_seconds(w) for w in writers)
                with (
                    counting_instructions([pid], enabled=args.instructions) as counted,
                    counting_instructions(writers, enabled=args.instructions) as counted_writer,
                ):
                    result = _measure(
                        target.name,
                        url,
                        pids=[pid],  # the gateway's own; the writer's is counted apart
                        concurrency=concurrency,
                        args=args,
                        headers=headers,
                        script_dir=tmp,
                        requests=sent[target.name],
                        delay_ms=delay_ms,
                    )
                _all_admitted(target.name, concurrency, result)
                writer_ms = _writer_ms(writers, writer_before, result)
                decisions = scrape(url) - before if target.decides else EMPTY
                per_request = counted[0] / result.requests if counted and result.requests else None
                writer = (
                    counted_writer[0] / result.requests
                    if counted_writer and result.requests
                    else None
                )
                runs.setdefault((target.name, concurrency), []).append(
                    Run(result, round_, decisions, per_request, writer, writer_ms)
                )
                counts = f", {per_request / 1e3:.0f}k instructions/req" if per_request else ""
                if writer_ms is not None:
                    counts += f", writer cpu {writer_ms:.4f} ms/req"
                print(
                    f"round {round_ + 1} c={concurrency:<3} {target.name:<14} "
                    f"{result.req_s:>7.0f} req/s, cpu {result.cpu_ms_per_req} ms/req{counts}, "
                    f"load {result.load}",
                    flush=True,
                )
    return runs


def measure_together(
    args: argparse.Namespace,
    *,
    targets: Sequence[Target],
    started: dict[str, tuple[int, str]],
    sent: dict[str, list[Request]],
    tmp: Path,
) -> dict[tuple[str, int], list[Run]]:
    """``--together``: each governed target and ``off`` at the same time on one core, a pair per
    target, concurrency and round (numbered apart, so that ``summarise`` pairs each with its
    own ``off``)."""
    governed = [t for t in targets if t.name != "off"]
    headers = {"Content-Type": "application/json"}
    for target in targets:
        (tmp / target.name).mkdir(exist_ok=True)  # each wrk its own script

    def both(target: Target, concurrency: int, seconds: float | None) -> dict[str, Run]:
        found: dict[str, Run] = {}
        befores = {}
        for name in ("off", target.name):
            pid, url = started[name]
            writers = _children(pid)
            befores[name] = (
                scrape(url) if TARGETS_BY_NAME[name].decides else EMPTY,
                writers,
                sum(cpu_seconds(w) for w in writers),
            )

        def one(name: str) -> None:
            pid, url = started[name]
            result = _measure(
                name,
                url,
                pids=[pid],
                concurrency=concurrency,
                args=args,
                headers=headers,
                script_dir=tmp / name,
                requests=sent[name],
                seconds=seconds,
            )
            before, writers, writer_before = befores[name]
            decisions = scrape(url) - before if TARGETS_BY_NAME[name].decides else EMPTY
            found[name] = Run(
                result, -1, decisions, None, None, _writer_ms(writers, writer_before, result)
            )

        threads = [threading.Thread(target=one, args=(name,)) for name in ("off", target.name)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, run in found.items():
            _all_admitted(name, concurrency, run.result)
        return found

    for target in governed:  # warm-up: connections, token and decision caches, slices
        both(target, max(args.concurrency), 1.0)
    runs: dict[tuple[str, int], list[Run]] = {}
    pair = 0
    for round_ in range(args.rounds):
        order = [*governed[round_ % len(governed) :], *governed[: round_ % len(governed)]]
        for concurrency in args.concurrency:
            for target in order:
                found = both(target, concurrency, None)
                for name, run in found.items():
                    run.round = pair
                    runs.setdefault((name, concurrency), []).append(run)
                pair += 1
                off, mine = found["off"].result, found[target.name].result
                print(
                    f"round {round_ + 1} c={concurrency:<3} off {off.req_s:>6.0f} req/s, cpu "
                    f"{off.cpu_ms_per_req} ms/req; together with {target.name:<14} "
                    f"{mine.req_s:>6.0f} req/s, cpu {mine.cpu_ms_per_req} ms/req; load {mine.load}",
                    flush=True,
                )
    return runs


# -- profiling -----------------------------------------------------------------------------------

COMPONENTS = (
    ("aviator/gateway/auth.py", "auth"),
    ("aviator/identity/", "auth"),
    ("aviator/policy/", "policy"),
    ("aviator/governance/budgets.py", "budgets"),
    ("aviator/governance/", "policy"),
    ("aviator/audit/", "audit"),
    ("aviator/gateway/governance.py", "governance shell"),
    ("aviator/gateway/", "gateway"),
    ("aiohttp/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("orjson", "json"),
    ("json/", "json"),
    ("asyncio/", "event loop"),
    ("uvloop", "event loop"),
    ("cedarpy", "policy"),
    ("sqlite3", "audit"),
)


def component(filename: str, function: str) -> str:
    """Which part of the gateway a profiled function belongs to, by its file (C functions, whose
    file is ``~``, by their name)."""
    where = filename if filename != "~" else function
    for fragment, name in COMPONENTS:
        if fragment in where:
            return name
    return "other"


def profile_breakdown(path: Path) -> tuple[dict[str, float], pstats.Stats]:
    """Own time per component; a C function's (``dict.get``, ``len``) goes to the components of
    its callers, in proportion to the time each call site spent in it."""
    stats = pstats.Stats(str(path))
    own: dict[str, float] = {}
    table = stats.stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, tottime, _, callers) in table.items():
        if filename == "~" and callers and component(filename, function) == "other":
            for (c_file, _, c_function), (_, _, c_tottime, _) in callers.items():
                part = component(c_file, c_function)
                own[part] = own.get(part, 0.0) + c_tottime
            continue
        part = component(filename, function)
        own[part] = own.get(part, 0.0) + tottime
    return own, stats


def profile(
    args: argparse.Namespace,
    *,
    upstream: str,
    tmp: Path,
    paths: dict[str, str],
    sent: dict[str, list[Request]],
) -> str:
    chosen = [t for t in TARGETS if t.name in ("off", "agent")]
    concurrency = max(args.concurrency)
    done: dict[str, int] = {}
    out = {t.name: tmp / f"profile-{t.name}.out" for t in chosen}
    for target in chosen:
        profiled = Target(
            target.name, (*target.flags, "--profile-file", str(out[target.name])), target.credential
        )
        with gateways([profiled], upstream=upstream, tmp=tmp, paths=paths) as started:
            pid, url = started[target.name]
            for seconds, on in ((1.0, False), (args.seconds, True)):  # warm-up, then profiled
                if on:
                    os.kill(pid, signal.SIGUSR1)
                result = _measure(
                    target.name,
                    url,
                    pids=[pid],
                    concurrency=concurrency,
                    args=args,
                    headers={"Content-Type": "application/json"},
                    script_dir=tmp,
                    requests=sent[target.name],
                    seconds=seconds,
                )
            os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out[target.name].exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target.name}: no profile written")
                time.sleep(0.05)
            done[target.name] = result.requests
    lines = [f"profile (cProfile, c={concurrency}; own time per request, us):"]
    breakdowns = {}
    for target in chosen:
        own, stats = profile_breakdown(out[target.name])
        breakdowns[target.name] = {k: v * 1e6 / done[target.name] for k, v in own.items()}
    parts = sorted(
        {p for b in breakdowns.values() for p in b}, key=lambda p: -breakdowns["agent"].get(p, 0)
    )
    lines.append(f"  {'component':<18} {'off':>8} {'agent':>8} {'added':>8}")
    for part in parts:
        off, agent = breakdowns["off"].get(part, 0.0), breakdowns["agent"].get(part, 0.0)
        lines.append(f"  {part:<18} {off:8.1f} {agent:8.1f} {agent - off:+8.1f}")
    total_off, total_agent = sum(breakdowns["off"].values()), sum(breakdowns["agent"].values())
    lines.append(
        f"  {'total':<18} {total_off:8.1f} {total_agent:8.1f} {total_agent - total_off:+8.1f}"
    )
    _, stats = profile_breakdown(out["agent"])
    stats.sort_stats("tottime")
    width = max(len(k[2]) for k in stats.stats)  # type: ignore[attr-defined]
    lines.append(f"agent gateway, top {args.profile} functions by own time (us per request):")
    ranked = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    for (filename, line, function), (_, calls, tottime, cumtime, _) in ranked[: args.profile]:
        where = f"{Path(filename).name}:{line}" if filename != "~" else "~"
        lines.append(
            f"  {tottime * 1e6 / done['agent']:7.1f} own {cumtime * 1e6 / done['agent']:8.1f} cum "
            f"{calls / done['agent']:5.1f} calls  {function[: min(width, 50)]} ({where})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each run.")
    parser.add_argument(
        "--requests", type=int, default=50_000, help="Request cap per run (aiohttp driver)."
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--agents", type=int, default=8, help="Agents sending the requests.")
    parser.add_argument("--variants", type=int, default=512, help="Distinct requests cycled.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--paced",
        type=float,
        metavar="REQ_PER_S",
        help="Offer about this many requests per second (wrk, each connection delayed) instead "
        "of saturating: the gateways then compare by CPU per request at the same load.",
    )
    parser.add_argument("--driver", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="Also profile the off and agent gateways and print the top N functions.",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="Also count each gateway's user-space instructions per request (needs perf).",
    )
    parser.add_argument("--json", action="store_true", help="Print the results as JSON too.")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="Pin each gateway (and its audit writer) to CPU 1, wrk and the upstream to CPU 0.",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=[t.name for t in TARGETS],
        default=[t.name for t in TARGETS],
        help="The gateways measured (off, the reference, always is). Fewer targets put the runs "
        "compared closer in time: `--targets off agent` alternates the two, run after run.",
    )
    parser.add_argument(
        "--upstream",
        choices=["raw", "aiohttp"],
        default="raw",
        help="The fixed-answer upstream: a bare asyncio protocol (raw: far cheaper per request, "
        "so that the load's core has room) or the aiohttp server bench/gateway.py measures with.",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="Run every gateway from a copy of the tree with the governance cores compiled by "
        "mypyc (tools/native.py; as a wheel built with the native hook has them).",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="Run off and each governed target at the same time on one core (implies --pin; "
        "wrk) and compare their CPU per request: far less spread on a shared host.",
    )
    parser.add_argument(
        "--writer-cpu",
        choices=["target", "load"],
        default="target",
        help="With --pin: the CPU of the audit writer processes: the gateway's (target: "
        "the strictest, the writer takes from the gateway's core) or the load's (load: as on a "
        "host with a core to spare, the writer off the gateway's core).",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.agents < 1 or args.variants < 1:
        parser.error("--rounds, --agents and --variants must be at least 1")
    if args.driver == "auto":
        args.driver = "wrk" if shutil.which("wrk") else "aiohttp"
    if args.paced is not None and (args.paced <= 0 or args.driver != "wrk"):
        parser.error("--paced needs a positive rate and wrk")
    if args.instructions and not shutil.which("perf"):
        parser.error("--instructions needs perf (linux-tools)")
    if args.together:
        if args.driver != "wrk" or args.paced or args.instructions:
            parser.error("--together needs wrk, and takes neither --paced nor --instructions")
        if (os.cpu_count() or 1) < 2:
            parser.error("--together needs two CPUs: the gateways on one, the load on the other")
        args.pin = True

    cycle = variants(random.Random(args.seed), count=args.variants, agents=args.agents)
    load_before = os.getloadavg()
    me = [sys.executable, str(Path(__file__).resolve().parent / "gateway.py")]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "objects.json").write_bytes(orjson.dumps(admitted_objects(args.agents)))
        tokens, jwks = agent_tokens(tmp / "keys", args.agents)
        (tmp / "jwks.json").write_bytes(orjson.dumps(jwks))
        paths = {"objects": str(tmp / "objects.json"), "jwks": str(tmp / "jwks.json")}
        env = None
        if args.native:  # every gateway from one tree, with the governance cores compiled
            print("compiling the governance cores with mypyc (tools/native.py) ...", flush=True)
            _native().compile_cores(into=tmp / "native")
            env = {"PYTHONPATH": str(tmp / "native")}
        chosen = [t for t in TARGETS if t.name == "off" or t.name in args.targets]
        sent = {t.name: requests_of(t, cycle, tokens) for t in TARGETS}
        upstream_role = "raw-upstream" if args.upstream == "raw" else "upstream"
        with child([*me, upstream_role]) as (up_pid, upstream):
            with gateways(chosen, upstream=upstream, tmp=tmp, paths=paths, env=env) as started:
                if args.pin:  # each gateway (and its audit writer) on CPU 1; wrk, upstream on 0
                    _pin([up_pid], LOAD_CPU)
                    for pid, _ in started.values():
                        _pin([pid], TARGET_CPU)
                        _pin(_children(pid), writer_cpu_of(args))
                measure = measure_together if args.together else measure_all
                runs = measure(args, targets=chosen, started=started, sent=sent, tmp=tmp)
            profiled = ""
            if args.profile:  # after the measured gateways stopped: they would share the cores
                profiled = profile(args, upstream=upstream, tmp=tmp, paths=paths, sent=sent)
        rows = summarise(runs, targets=chosen)
    print(
        f"driver: {args.driver}; {args.seconds:.0f} s per run; median of {args.rounds} rounds; "
        f"{f'paced at about {args.paced:.0f} req/s; ' if args.paced else 'saturating; '}"
        f"{'pinned: gateways on CPU 1, wrk and upstream on CPU 0; ' if args.pin else ''}"
        f"{'together: off and each governed gateway at once, sharing CPU 1; ' if args.together else ''}"
        f"{f'audit writers on CPU {writer_cpu_of(args)}; ' if args.pin else ''}"
        f"{args.agents} agents, {args.variants} request variants; cores: {os.cpu_count()}; "
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}, after: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(report(rows, paced=args.paced, together=args.together))
    if profiled:
        print(profiled)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
