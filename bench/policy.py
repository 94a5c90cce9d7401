"""Policy decisions: latency of ``CompiledPolicies.decide`` (budget p99 ≤ 200 µs, issue 5) and
compile time.

Builds a realistic governance set: 10 namespaces, 1,000 agents, 200 ModelDeployments (a fifth of
them critical), 50 Policy statements in 13 Policy objects — per-namespace permits scoped
``principal in``/``resource in`` a namespace, per-owner embedding permits and model rules in
``when`` clauses, token, hour and intent forbids on the context, write rules, grant-request rules
with ``@approval`` — and 100 active grants that open deployments of other namespaces to single
agents. Then times ``decide`` with ``time.perf_counter_ns`` (wall) and ``time.thread_time_ns`` (CPU
of this thread, which leaves out time the scheduler gave other processes) over ``--decisions``
random gateway requests (``infer``/``embed`` by a random agent on a random deployment, 80 % in its
own namespace, with a random token estimate, priority and hour; one in ten names a purpose or a
grant); then requests of grant holders naming their grant on a granted deployment; then Control API
``update`` writes with the written object overlaid; then the gateway requests through the public
``cedarpy.is_authorized`` wrapper instead of the direct call ``decide`` makes. Each stream runs
twice: the first pass pays for building each slice on first use, the second is the steady state.
Compile time: cold (a fresh engine), and recompiles after one grant changed and with nothing
changed.

    .venv/bin/python bench/policy.py [--decisions 20000] [--runs 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
import timeit
from collections.abc import Callable, Sequence
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
    agent_objs = [
        {
            "metadata": {"namespace": NAMESPACES[i % 10], "name": f"agent-{i}"},
            "spec": {"owner": OWNERS[i % 20], "purpose": PURPOSES[i % 5]},
        }
        for i in range(agents)
    ]
    md_objs = [
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


def percentiles(samples: Sequence[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "p50": ordered[n // 2] / 1000,
        "p90": ordered[int(n * 0.9)] / 1000,
        "p99": ordered[int(n * 0.99)] / 1000,
        "max": ordered[-1] / 1000,
        "mean": statistics.fmean(ordered) / 1000,
    }


def timed(
    calls: Sequence[Callable[[], policy_engine.Decision]],
) -> tuple[list[int], list[int], float]:
    """Wall (``perf_counter_ns``) and CPU (``thread_time_ns``) time of each call, and the allow
    rate."""
    wall, cpu = [], []
    allowed = 0
    for call in calls:
        start_cpu = time.thread_time_ns()
        start = time.perf_counter_ns()
        decision = call()
        wall.append(time.perf_counter_ns() - start)
        cpu.append(time.thread_time_ns() - start_cpu)
        allowed += decision.allowed
    return wall, cpu, allowed / len(calls)


def report(label: str, measured: tuple[list[int], list[int], float]) -> None:
    wall, cpu, allow_rate = measured
    p, c = percentiles(wall), percentiles(cpu)
    print(
        f"{label:40s} n={len(wall):6d}  wall p50 {p['p50']:6.1f}  p90 {p['p90']:6.1f}  "
        f"p99 {p['p99']:7.1f}  max {p['max']:8.1f} µs | cpu p50 {c['p50']:6.1f}  "
        f"p99 {c['p99']:6.1f} µs | allowed {allow_rate:5.1%}"
    )


def cold_then_warm(label: str, calls: Sequence[Callable[[], policy_engine.Decision]]) -> None:
    """The first pass builds each slice on first use (a fresh compiled set); the second is the
    steady state."""
    gc.collect()
    report(f"{label} (first pass)", timed(calls))
    gc.collect()
    report(f"{label}", timed(calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--grants", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
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
    ) -> Callable[[], policy_engine.Decision]:
        who = principal(agent)
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
        shapes.append((who, action, uid))
        return lambda: compiled.decide(who, action, uid, context)

    # Mostly the agent's own namespace (where standing policy applies), some elsewhere.
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for md in deployments:
        by_ns.setdefault(md["metadata"]["namespace"], []).append(md)
    shapes: list[tuple[Principal, str, ent.EntityUid]] = []
    calls = []
    for _ in range(args.decisions):
        agent = rng.choice(agents)
        own = by_ns[agent["metadata"]["namespace"]]
        md = rng.choice(own) if rng.random() < 0.8 else rng.choice(deployments)
        roll = rng.random()
        intent = rng.choice(PURPOSES) if roll < 0.05 else ""
        named = "grant-0" if 0.05 <= roll < 0.1 else ""
        calls.append(request(agent, md, intent=intent, grant=named))
    cold_then_warm("gateway requests (infer/embed)", calls)
    sizes = [len(compiled.statements_for(*shape)) for shape in shapes[: args.decisions]]
    print(
        f"statements evaluated per gateway request: mean {statistics.fmean(sizes):.1f}, "
        f"max {max(sizes)} (of {len(compiled.statements)})"
    )

    agent_by_key = {f"{a['metadata']['namespace']}/{a['metadata']['name']}": a for a in agents}
    md_by_ref = {
        f'ModelDeployment::"{m["metadata"]["namespace"]}/{m["metadata"]["name"]}"': m
        for m in deployments
    }
    granted = []
    for _ in range(args.decisions // 4):
        grant = rng.choice(grants)
        agent = agent_by_key[f"{grant['metadata']['namespace']}/{grant['spec']['agent']}"]
        md = md_by_ref[rng.choice(grant["spec"]["resources"])]
        granted.append(request(agent, md, grant=grant["metadata"]["name"]))
    cold_then_warm("requests naming their grant", granted)

    writes = []
    for _ in range(args.decisions // 10):
        agent = rng.choice(agents)
        md = rng.choice(by_ns[agent["metadata"]["namespace"]])
        who = principal(agent)
        entity = ent.deployment_entity(
            {**md, "spec": {**md["spec"], "priority": rng.choice(("standard", "critical"))}}
        )
        writes.append(lambda who=who, entity=entity: compiled.decide(who, "update", entity))
    cold_then_warm("Control API update (object overlaid)", writes)

    # The floor: the same requests against an empty policy set (context check, request encoding,
    # Cedar building the request, the answer), rebinding the name the calls read.
    full = compiled
    compiled = engine.compile([], now=NOW, agents=agents, deployments=deployments)
    report("floor: same requests, no statements", timed(calls))
    compiled = full

    raw = policy_engine._RAW_AUTHORIZE
    policy_engine._RAW_AUTHORIZE = None  # the public cedarpy.is_authorized wrapper
    try:
        report("gateway requests via cedarpy.is_authorized", timed(calls))
    finally:
        policy_engine._RAW_AUTHORIZE = raw
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
