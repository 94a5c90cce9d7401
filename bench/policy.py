"""Policy decisions: latency of ``CompiledPolicies.decide`` (budget p99 <= 200 us, issue 5) and
compile time.

Builds a realistic governance set: 10 namespaces, 1,000 agents, 200 ModelDeployments (a fifth of
them critical), 50 Policy statements in 13 Policy objects (per-namespace permits scoped
``principal in``/``resource in`` a namespace, per-owner embedding permits and model rules in
``when`` clauses, token, hour and intent forbids on the context, write rules, grant-request rules
with ``@approval``) and 100 active grants that open deployments of other namespaces to single
agents. Then times ``decide`` with ``time.perf_counter_ns`` (wall) and ``time.thread_time_ns`` (CPU
of this thread, which leaves out time the scheduler gave other processes) over ``--decisions``
random gateway requests (``infer``/``embed`` by a random agent on a random deployment, 80 % in its
own namespace, with a random token estimate, priority and hour; one in ten names a purpose or a
grant), requests of grant holders naming their grant, and Control API ``update`` writes with the
written object overlaid:

- **miss**: a compiled set that remembers no decision (``decision_cache_size=0``), slices built:
  every decision goes to Cedar, as a decision-cache miss does;
- **first pass**: a fresh compiled set, so slices are built on first use as well;
- **warm**: the same requests again on a compiled set that remembered them;
- **new contexts**: the same agents and deployments with fresh random token estimates, priorities
  and hours on the warm set: decisions are remembered per class of context (the values the slice
  can tell apart), so most of these are hits too; the hit rate is printed.

Every stream is timed ``--runs`` times, each with the collector as configured and with
``gc.freeze()`` after compile (what a long-lived process can do after each compile); p50/p99 are
given as the best and the median of the runs. Writes are never remembered (the written object
overlays the graph). Then the floor (an empty policy set) and the public ``cedarpy.is_authorized``
wrapper, both on the miss path. Compile time: cold (a fresh engine), and recompiles after one grant
changed and with nothing changed.

    .venv/bin/python bench/policy.py [--decisions 20000] [--runs 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import time
import timeit
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aviator.api.principal import Principal
from aviator.policy import engine as policy_engine
from aviator.policy import entities as ent

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
NAMESPACES = [f"team-{i}" for i in range(10)]
MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen-2.5-7b", "mistral-7b", "embed-small"]
OWNERS = [f"owner-{i}" for i in range(20)]
PURPOSES = ["summaries", "support", "batch-eval", "prod-chat", "research"]


def build_objects(
    *, agents: int, deployments: int, grants: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    agent_objs: list[dict[str, Any]] = [
        {
            "metadata": {"namespace": NAMESPACES[i % 10], "name": f"agent-{i}"},
            "spec": {"owner": OWNERS[i % 20], "purpose": PURPOSES[i % 5]},
        }
        for i in range(agents)
    ]
    md_objs: list[dict[str, Any]] = [
        {
            "metadata": {"namespace": NAMESPACES[i % 10], "name": f"md-{i}"},
            "spec": {
                "model": {"name": MODELS[i % 5]},
                "priority": ("critical", "standard", "standard", "standard", "sheddable")[i % 5],
            },
        }
        for i in range(deployments)
    ]
    grant_objs = []
    for i in range(grants):
        agent = agent_objs[rng.randrange(agents)]
        ns = agent["metadata"]["namespace"]
        others = [m for m in md_objs if m["metadata"]["namespace"] != ns]
        picked = rng.sample(others, 2)
        grant_objs.append(
            {
                "metadata": {"namespace": ns, "name": f"grant-{i}"},
                "spec": {
                    "agent": agent["metadata"]["name"],
                    "actions": ["infer", "embed"] if i % 2 else ["infer"],
                    "resources": [
                        f'ModelDeployment::"{m["metadata"]["namespace"]}/{m["metadata"]["name"]}"'
                        for m in picked
                    ],
                    "purpose": f"purpose-{i}",
                    "durationSeconds": 3600,
                },
                "status": {
                    "phase": "Active",
                    "expiresAt": (NOW + timedelta(minutes=5 + i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            }
        )
    return agent_objs, md_objs, grant_objs


def build_policies() -> list[tuple[str, str]]:
    """13 Policy objects, 50 statements."""
    policies: list[tuple[str, str]] = []
    per_ns = "\n".join(
        f'@id("{ns}-inference")\n'
        f'permit (principal in Namespace::"{ns}", action in Action::"inference",\n'
        f'        resource in Namespace::"{ns}")\n'
        f"when {{ context.estimatedTokens <= 16000 }};\n"
        for ns in NAMESPACES
    )
    policies.append(("namespace-inference", per_ns))  # 10
    per_owner = "\n".join(
        f'permit (principal is Agent, action == Action::"embed", resource is ModelDeployment)\n'
        f'when {{ principal.owner == "{owner}" && resource.model like "embed-*" }};\n'
        for owner in OWNERS[:10]
    )
    policies.append(("owner-embeddings", per_owner))  # 10
    policies.append(
        (
            "inference-guardrails",
            """
@id("token-ceiling")
forbid (principal, action in Action::"inference", resource)
when { context.estimatedTokens > 32000 };
@id("critical-needs-intent")
forbid (principal is Agent, action in Action::"inference", resource is ModelDeployment)
when { resource.priority == "critical" && context.intent == "" && context.grant == "" };
@id("sheddable-off-hours")
forbid (principal, action == Action::"infer", resource is ModelDeployment)
when { resource.priority == "sheddable" && context.hour >= 8 && context.hour < 9 };
@id("model-mismatch")
forbid (principal, action in Action::"inference", resource is ModelDeployment)
when { context.model != resource.model };
""",
        )
    )  # 4
    policies.append(
        (
            "big-models",
            """
forbid (principal is Agent, action == Action::"infer", resource is ModelDeployment)
when { resource.model like "*-70b" && context.estimatedTokens > 8000 && principal.purpose != "prod-chat" };
forbid (principal is Agent, action == Action::"infer", resource is ModelDeployment)
when { resource.model like "*-70b" && context.priority == "sheddable" };
""",
        )
    )  # 2
    for n, ns in enumerate(NAMESPACES[:6]):
        policies.append(
            (
                f"{ns}-maintenance",
                f"""
forbid (principal, action in Action::"inference", resource in Namespace::"{ns}")
when {{ context.hour == {n + 1} }};
permit (principal in Namespace::"{ns}", action == Action::"update", resource in Namespace::"{ns}")
when {{ resource is ModelDeployment && resource.priority != "critical" }};
forbid (principal is Agent, action == Action::"delete", resource in Namespace::"{ns}")
when {{ resource is ModelDeployment && resource.priority == "critical" }};
""",
            )
        )  # 18
    policies.append(
        (
            "governance-is-admin-only",
            """
forbid (principal is Agent, action in Action::"write", resource is Policy);
forbid (principal is Agent, action in Action::"write", resource is Agent);
""",
        )
    )  # 2
    policies.append(
        (
            "grant-requests",
            """
@approval("auto")
permit (principal is Agent, action == Action::"requestGrant", resource is Grant)
when { resource.agent == principal && ["infer", "embed"].containsAll(resource.actions)
       && [principal.namespace].containsAll(resource.namespaces) && resource.durationSeconds <= 3600 };
@approval("human")
permit (principal is Agent, action == Action::"requestGrant", resource is Grant)
when { resource.agent == principal };
forbid (principal, action == Action::"requestGrant", resource is Grant)
when { resource.kinds.contains("Policy") };
""",
        )
    )  # 3
    policies.append(
        (
            "approvers",
            """
permit (principal is Agent, action == Action::"approve", resource is Grant)
when { principal.purpose == "research" && resource.namespace == principal.namespace };
""",
        )
    )  # 1
    return policies


Request = tuple[Principal, str, ent.EntityUid | ent.Entity, dict[str, Any] | None]


def percentiles(samples: Sequence[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "p50": ordered[n // 2] / 1000,
        "p90": ordered[int(n * 0.9)] / 1000,
        "p99": ordered[int(n * 0.99)] / 1000,
        "max": ordered[-1] / 1000,
    }


def timed(
    compiled: policy_engine.CompiledPolicies, requests: Sequence[Request]
) -> tuple[list[int], list[int], float]:
    """Wall (``perf_counter_ns``) and CPU (``thread_time_ns``) time of each decision, and the
    allow rate."""
    wall, cpu = [], []
    allowed = 0
    decide = compiled.decide
    for principal, action, resource, context in requests:
        start_cpu = time.thread_time_ns()
        start = time.perf_counter_ns()
        decision = decide(principal, action, resource, context)
        wall.append(time.perf_counter_ns() - start)
        cpu.append(time.thread_time_ns() - start_cpu)
        allowed += decision.allowed
    return wall, cpu, allowed / len(requests)


class Runs:
    """Percentiles of each run of one stream; printed as best / median of the runs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.wall: list[dict[str, float]] = []
        self.cpu: list[dict[str, float]] = []
        self.allowed = 0.0
        self.hits: list[float] = []

    def add(self, measured: tuple[list[int], list[int], float], hits: float | None = None) -> None:
        wall, cpu, self.allowed = measured
        self.wall.append(percentiles(wall))
        self.cpu.append(percentiles(cpu))
        if hits is not None:
            self.hits.append(hits)

    def line(self) -> str:
        def both(runs: list[dict[str, float]], key: str) -> str:
            values = [r[key] for r in runs]
            return f"{min(values):7.1f} /{statistics.median(values):7.1f}"

        hits = f" | hits {statistics.median(self.hits):6.1%}" if self.hits else ""
        return (
            f"{self.label:44s} wall p50 {both(self.wall, 'p50')}  p99 {both(self.wall, 'p99')}"
            f" | cpu p50 {both(self.cpu, 'p50')}  p99 {both(self.cpu, 'p99')}"
            f" | allowed {self.allowed:5.1%}{hits}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--grants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    cpu_model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu_model = next(
            (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?"
        )
    print(
        f"python {platform.python_version()} on {platform.machine()} ({cpu_model}), "
        f"{os.cpu_count()} CPUs, cedarpy {importlib.metadata.version('cedarpy')}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # How fast this interpreter runs right now, to compare runs on a shared machine.
    calibration = min(timeit.repeat("sum(range(1000))", number=1000, repeat=5)) * 1000
    print(f"calibration: sum(range(1000)) takes {calibration:.1f} µs")
    agents, deployments, grants = build_objects(
        agents=args.agents, deployments=args.deployments, grants=args.grants, rng=rng
    )
    policies = build_policies()

    def compile_with(
        engine: policy_engine.PolicyEngine, grant_objs: list[dict[str, Any]]
    ) -> tuple[float, policy_engine.CompiledPolicies]:
        start = time.perf_counter()
        result = engine.compile(
            policies, now=NOW, grants=grant_objs, agents=agents, deployments=deployments
        )
        return time.perf_counter() - start, result

    cold = [compile_with(policy_engine.PolicyEngine(), grants)[0] for _ in range(args.runs)]
    engine = policy_engine.PolicyEngine()
    compile_with(engine, grants)
    same = [compile_with(engine, grants)[0] for _ in range(args.runs)]
    changed = []
    for run in range(args.runs):
        # One more grant each time: its statement and the slices of its agent are new.
        extra = {**grants[0], "metadata": {**grants[0]["metadata"], "name": f"extra-{run}"}}
        grants = [*grants, extra]
        changed.append(compile_with(engine, grants)[0])
    grants = grants[: args.grants]
    _, compiled = compile_with(engine, grants)
    print(
        f"compiled: {len(policies)} Policy objects, {len(compiled.statements)} statements "
        f"({len(compiled.active_grants)} of them grants), {len(compiled.index)} entities"
    )
    for label, times in (
        ("compile, cold engine", cold),
        ("recompile, one grant added", changed),
        ("recompile, nothing changed", same),
    ):
        print(
            f"{label:28s} best {min(times) * 1000:6.1f} ms, median "
            f"{statistics.median(times) * 1000:6.1f} ms"
        )

    def principal(obj: dict[str, Any]) -> Principal:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        return Principal(
            kind="agent", id=f"spiffe://aviator.local/ns/{ns}/agent/{name}", namespace=ns, name=name
        )

    def request(
        agent: dict[str, Any], md: dict[str, Any], *, intent: str = "", grant: str = ""
    ) -> Request:
        uid = ent.object_uid("ModelDeployment", md["metadata"]["namespace"], md["metadata"]["name"])
        action = "embed" if md["spec"]["model"]["name"].startswith("embed") else "infer"
        context = policy_engine.inference_context(
            model=md["spec"]["model"]["name"],
            estimated_tokens=rng.choice((200, 1500, 6000, 12000, 40000)),
            priority=rng.choice(("critical", "standard", "sheddable")),
            now=NOW.replace(hour=rng.randrange(24)),
            intent=intent,
            grant=grant,
        )
        return principal(agent), action, uid, context

    # Mostly the agent's own namespace (where standing policy applies), some elsewhere.
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for md in deployments:
        by_ns.setdefault(md["metadata"]["namespace"], []).append(md)
    gateway: list[Request] = []
    pairs: list[tuple[dict[str, Any], dict[str, Any], str, str]] = []
    for _ in range(args.decisions):
        agent = rng.choice(agents)
        own = by_ns[agent["metadata"]["namespace"]]
        md = rng.choice(own) if rng.random() < 0.8 else rng.choice(deployments)
        roll = rng.random()
        intent = rng.choice(PURPOSES) if roll < 0.05 else ""
        named = "grant-0" if 0.05 <= roll < 0.1 else ""
        pairs.append((agent, md, intent, named))
        gateway.append(request(agent, md, intent=intent, grant=named))
    # The same agents, deployments and declared intents; new token estimates, priorities, hours.
    fresh = [request(agent, md, intent=intent, grant=named) for agent, md, intent, named in pairs]
    sizes = [len(compiled.statements_for(*r[:3])) for r in gateway]
    print(
        f"statements evaluated per gateway request: mean {statistics.fmean(sizes):.1f}, "
        f"max {max(sizes)} (of {len(compiled.statements)})"
    )

    agent_by_key = {f"{a['metadata']['namespace']}/{a['metadata']['name']}": a for a in agents}
    md_by_ref = {
        f'ModelDeployment::"{m["metadata"]["namespace"]}/{m["metadata"]["name"]}"': m
        for m in deployments
    }
    granted: list[Request] = []
    for _ in range(args.decisions // 4):
        grant = rng.choice(grants)
        agent = agent_by_key[f"{grant['metadata']['namespace']}/{grant['spec']['agent']}"]
        md = md_by_ref[rng.choice(grant["spec"]["resources"])]
        granted.append(request(agent, md, grant=grant["metadata"]["name"]))

    writes: list[Request] = []
    for _ in range(args.decisions // 10):
        agent = rng.choice(agents)
        md = rng.choice(by_ns[agent["metadata"]["namespace"]])
        entity = ent.deployment_entity(
            {**md, "spec": {**md["spec"], "priority": rng.choice(("standard", "critical"))}}
        )
        writes.append((principal(agent), "update", entity, None))

    # "warm" means something only if the cache holds a stream: the default holds these.
    print(f"decision cache: {policy_engine.DECISION_CACHE_SIZE} entries per compiled set")
    streams = (
        ("gateway requests (infer/embed)", gateway),
        ("requests naming their grant", granted),
        ("Control API update (object overlaid)", writes),
    )
    results: dict[str, Runs] = {}

    def runs(label: str) -> Runs:
        return results.setdefault(label, Runs(label))

    uncached_engine = policy_engine.PolicyEngine(decision_cache_size=0)
    for _ in range(args.runs):
        for frozen in (False, True):
            tag = " [gc.freeze]" if frozen else ""
            for name, stream in streams:
                gc.collect()
                _, first = compile_with(policy_engine.PolicyEngine(), grants)
                _, uncached = compile_with(uncached_engine, grants)
                if frozen:
                    gc.freeze()
                runs(f"{name}, first pass{tag}").add(timed(first, stream))
                timed(uncached, stream)  # build its slices
                runs(f"{name}, miss{tag}").add(timed(uncached, stream))
                if stream is not writes:
                    runs(f"{name}, warm{tag}").add(timed(first, stream))
                if stream is gateway:
                    before = len(first._decisions)  # white-box: what was remembered
                    measured = timed(first, fresh)
                    hits = 1 - (len(first._decisions) - before) / len(fresh)
                    runs(f"{name}, new contexts{tag}").add(measured, hits)
                if frozen:
                    gc.unfreeze()
                del first, uncached
    for stream_runs in results.values():
        print(stream_runs.line())

    # The floor: the same requests against an empty policy set (context check, request encoding,
    # Cedar building the request, the answer), on the miss path.
    empty = uncached_engine.compile([], now=NOW, agents=agents, deployments=deployments)
    floor = Runs("floor: gateway requests, no statements, miss")
    public = Runs("gateway requests via cedarpy.is_authorized, miss")
    _, uncached = compile_with(uncached_engine, grants)
    timed(uncached, gateway)
    for _ in range(args.runs):
        gc.collect()
        floor.add(timed(empty, gateway))
        raw = policy_engine._RAW_AUTHORIZE
        policy_engine._RAW_AUTHORIZE = None  # the public cedarpy.is_authorized wrapper
        try:
            public.add(timed(uncached, gateway))
        finally:
            policy_engine._RAW_AUTHORIZE = raw
    print(floor.line())
    print(public.line())
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
