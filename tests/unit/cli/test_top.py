"""``aviator top``: rows from engine metrics (pure), and the command against a real Control API."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web

from aviator.api import kinds
from aviator.cli import top, topview
from aviator.cli.topview import ReplicaInfo, Sample, histogram_quantile

from .conftest import ApiServer, make_app

INF = math.inf
TTFT_LE = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, INF)


def exposition(
    *,
    running: int = 0,
    waiting: int = 0,
    kv: float = 0.0,
    hits: int = 0,
    queries: int = 0,
    stop: int = 0,
    length: int = 0,
    ttft: Sequence[int] = (),
    engines: int = 1,
) -> str:
    """vLLM-shaped metrics: ``ttft`` gives per-bucket (not cumulative) counts over ``TTFT_LE``;
    with ``engines`` > 1 every series is repeated per engine (values split evenly)."""
    lines = []
    per = [*ttft, *[0] * (len(TTFT_LE) - len(ttft))]
    for e in range(engines):
        lb = f'engine="{e}",model_name="m"'
        lines += [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{lb}}} {running / engines}",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{lb}}} {waiting / engines}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{lb}}} {kv}",
            "# TYPE vllm:prefix_cache_hits counter",
            f"vllm:prefix_cache_hits_total{{{lb}}} {hits / engines}",
            "# TYPE vllm:prefix_cache_queries counter",
            f"vllm:prefix_cache_queries_total{{{lb}}} {queries / engines}",
            "# TYPE vllm:request_success counter",
            f'vllm:request_success_total{{{lb},finished_reason="stop"}} {stop / engines}',
            f'vllm:request_success_total{{{lb},finished_reason="length"}} {length / engines}',
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ]
        cumulative = 0.0
        for le, n in zip(TTFT_LE, per, strict=True):
            cumulative += n / engines
            bound = "+Inf" if math.isinf(le) else repr(le)
            lines.append(
                f'vllm:time_to_first_token_seconds_bucket{{{lb},le="{bound}"}} {cumulative}'
            )
        lines.append(f"vllm:time_to_first_token_seconds_count{{{lb}}} {cumulative}")
    return "\n".join(lines) + "\n"


REPLICA = ReplicaInfo(
    namespace="default", name="chat-a", model="m", node="local", endpoint="http://127.0.0.1:1"
)


# -- histogram_quantile, as Prometheus computes it ----------------------------------------------


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 0.0), (0.2, 10.0), (0.4, 20.0), (INF, 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.2)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)


def test_quantile_starts_the_first_bucket_at_zero() -> None:
    assert histogram_quantile(0.5, [(1.0, 4.0), (INF, 4.0)]) == pytest.approx(0.5)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.9, [(0.5, 1.0), (1.0, 2.0), (INF, 10.0)]) == 1.0


def test_quantile_without_observations_or_buckets_is_none() -> None:
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 3.0)]) is None  # no +Inf bucket: not a histogram


def test_quantile_extremes() -> None:
    buckets = [(0.1, 1.0), (INF, 1.0)]
    assert histogram_quantile(0.0, buckets) == -INF
    assert histogram_quantile(1.0, buckets) == INF


# -- parsing a scrape --------------------------------------------------------------------------


def test_a_sample_sums_engines_and_averages_kv() -> None:
    text = exposition(
        running=4,
        waiting=2,
        kv=0.25,
        hits=30,
        queries=40,
        stop=6,
        length=2,
        ttft=[0, 0, 0, 0, 8],
        engines=2,
    )
    s = topview.parse_sample(text, at=5.0)
    assert (s.running, s.waiting, s.kv_cache_usage) == (4, 2, 0.25)
    assert (s.prefix_hits, s.prefix_queries, s.requests) == (30, 40, 8)
    assert s.ttft_buckets[-1] == (INF, 8)
    assert [le for le, _ in s.ttft_buckets] == sorted(TTFT_LE)


def test_an_exposition_without_vllm_series_gives_an_empty_sample() -> None:
    s = topview.parse_sample("# TYPE up gauge\nup 1\n", at=0.0)
    assert s == Sample(at=0.0)
    assert topview.row_of(REPLICA, s).running is None


def test_the_kv_gauge_of_older_vllm_is_read_too() -> None:
    text = 'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\nvllm:num_requests_waiting 3\n'
    s = topview.parse_sample(text, at=0.0)
    assert (s.kv_cache_usage, s.waiting) == (0.5, 3)


# -- rows --------------------------------------------------------------------------------------


def test_one_sample_gives_cumulative_ratio_and_median_and_no_rate() -> None:
    s = topview.parse_sample(exposition(hits=30, queries=40, stop=4, ttft=[0, 0, 0, 0, 4]), at=1.0)
    row = topview.row_of(REPLICA, s)
    assert row.cache_hit == pytest.approx(0.75)
    assert row.ttft_p50_s == pytest.approx(0.03)  # half of 4 in (0.02, 0.04]
    assert row.requests_per_s is None


def test_two_samples_give_rates_over_the_interval() -> None:
    old = topview.parse_sample(
        exposition(hits=30, queries=40, stop=4, ttft=[0, 0, 0, 0, 4]), at=10.0
    )
    new = topview.parse_sample(
        exposition(
            running=2,
            kv=0.1,
            hits=30 + 10,
            queries=40 + 100,
            stop=4 + 6,
            ttft=[0, 0, 0, 0, 4, 0, 0, 0, 6],
        ),
        at=12.0,
    )
    row = topview.row_of(REPLICA, new, old)
    assert row.running == 2 and row.kv_cache_usage == 0.1
    assert row.cache_hit == pytest.approx(0.1)
    assert row.ttft_p50_s == pytest.approx(0.175)  # the 6 new ones, all in (0.1, 0.25]
    assert row.requests_per_s == pytest.approx(3.0)


def test_no_new_requests_shows_dashes_not_zeros() -> None:
    s1 = topview.parse_sample(exposition(hits=3, queries=4, stop=1, ttft=[1]), at=1.0)
    s2 = topview.parse_sample(exposition(hits=3, queries=4, stop=1, ttft=[1]), at=3.0)
    row = topview.row_of(REPLICA, s2, s1)
    assert (row.cache_hit, row.ttft_p50_s, row.requests_per_s) == (None, None, 0.0)
    _, cells = topview.table([row], all_namespaces=False)
    assert cells[0][-4:] == ["0.0", "-", "-", "0.0"]


def test_a_restarted_engine_is_read_from_its_new_sample_alone() -> None:
    old = topview.parse_sample(exposition(hits=50, queries=60, stop=9, ttft=[9]), at=1.0)
    new = topview.parse_sample(exposition(hits=1, queries=2, stop=1, ttft=[1]), at=3.0)
    row = topview.row_of(REPLICA, new, old)
    assert row.cache_hit == pytest.approx(0.5)
    assert row.requests_per_s is None


def test_an_unreadable_replica_keeps_its_row_with_dashes() -> None:
    row = topview.row_of(REPLICA, None, error="no answer")
    headers, cells = topview.table([row], all_namespaces=True)
    assert headers[0] == "NAMESPACE"
    assert cells == [["default", "m", "chat-a", "local", "-", "-", "-", "-", "-", "-"]]
    assert row.to_json()["error"] == "no answer"


def test_rows_are_sorted_and_formatted() -> None:
    a = topview.row_of(
        ReplicaInfo("b-ns", "z", "m2", "n1", "http://x"),
        topview.parse_sample(exposition(running=3, kv=0.125, hits=1, queries=3), at=0.0),
    )
    b = topview.row_of(
        ReplicaInfo("a-ns", "y", "m1", "n2", "http://y"),
        topview.parse_sample(exposition(ttft=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]), at=0.0),
    )
    headers, cells = topview.table([a, b], all_namespaces=False)
    assert headers == list(topview.HEADERS)
    assert cells[0][:2] == ["m1", "y"] and cells[0][7] == "750ms"
    assert cells[1] == ["m2", "z", "n1", "3", "0", "12.5", "33.3", "-", "-"]


def test_replica_info_needs_ready_and_an_endpoint() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"model": {"name": "m"}, "node": "gpu-1"},
        "status": {"endpoint": "http://h:1/", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert ReplicaInfo.of(obj) == ReplicaInfo("ns", "r", "m", "gpu-1", "http://h:1")
    assert ReplicaInfo.of({**obj, "status": {**obj["status"], "conditions": []}}) is None
    assert ReplicaInfo.of({**obj, "status": {"conditions": obj["status"]["conditions"]}}) is None


# -- the command ---------------------------------------------------------------------------------


@pytest.fixture
def engine(api: ApiServer) -> Iterator[str]:
    """A fake engine's ``/metrics`` on the API server's loop; returns its URL."""
    text = exposition(running=1, waiting=2, kv=0.5, hits=3, queries=4, stop=5, ttft=[0, 0, 2])

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = api.call(start)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        api.call(runner.cleanup)


def ready_replica(
    api: ApiServer, name: str, *, model: str, endpoint: str, ns: str = "default"
) -> None:
    api.create(
        kinds.REPLICA,
        {
            "apiVersion": "aviator.dev/v1alpha1",
            "kind": "Replica",
            "metadata": {"name": name},
            "spec": {"model": {"name": model}, "engine": "sim", "node": "local"},
        },
        namespace=ns,
    )
    api.set_status(
        kinds.REPLICA,
        name,
        {
            "phase": "Running",
            "endpoint": endpoint,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ],
        },
        namespace=ns,
    )


@pytest.fixture
def top_app(api: ApiServer) -> ApiServer:
    api.app = make_app()
    api.app.command("top")(top.top)
    return api


def test_top_once_json_lists_ready_replicas_with_their_numbers(
    top_app: ApiServer, engine: str
) -> None:
    ready_replica(top_app, "chat-a", model="m", endpoint=engine)
    ready_replica(top_app, "chat-b", model="m", endpoint="http://127.0.0.1:9")  # nobody listens
    ready_replica(top_app, "other", model="m2", endpoint=engine)
    ready_replica(top_app, "elsewhere", model="m", endpoint=engine, ns="team")

    result = top_app.run(["top", "--once", "-o", "json", "--model", "m"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)["items"]
    assert [i["replica"] for i in items] == ["chat-a", "chat-b"]
    a, b = items
    assert (a["running"], a["waiting"], a["kvCacheUsage"]) == (1, 2, 0.5)
    assert a["prefixCacheHitRatio"] == 0.75
    assert a["ttftP50Seconds"] == pytest.approx(0.0075)
    assert a["requestsPerSecond"] is None and "error" not in a
    assert b["running"] is None and "127.0.0.1:9" in b["error"]


def test_top_once_prints_a_table_and_warns_about_unreadable_replicas(
    top_app: ApiServer, engine: str
) -> None:
    ready_replica(top_app, "chat-a", model="m", endpoint=engine)
    ready_replica(top_app, "chat-b", model="m", endpoint="http://127.0.0.1:9")
    ready_replica(top_app, "elsewhere", model="m", endpoint=engine, ns="team")

    result = top_app.run(["top"])  # stdout is not a terminal: one table
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "MODEL",
        "REPLICA",
        "NODE",
        "RUNNING",
        "WAITING",
        "KV%",
        "CACHE-HIT%",
        "TTFT",
        "p50",
        "REQ/S",
    ]
    assert lines[1].split() == ["m", "chat-a", "local", "1", "2", "50.0", "75.0", "8ms", "-"]
    assert lines[2].split() == ["m", "chat-b", "local"] + ["-"] * 6
    assert len(lines) == 3
    assert "warning: chat-b:" in result.stderr

    everywhere = top_app.run(["top", "-A"])
    assert everywhere.exit_code == 0
    assert everywhere.stdout.splitlines()[0].startswith("NAMESPACE")
    assert any(line.startswith("team ") for line in everywhere.stdout.splitlines())


def test_top_without_replicas_says_so(top_app: ApiServer) -> None:
    result = top_app.run(["top", "--once", "--model", "nope"])
    assert result.exit_code == 0
    assert result.stdout.strip() == "No Ready replicas in namespace default, model nope."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "yaml"], "top only knows json"),
        (["--interval", "soon"], "invalid duration"),
        (["--interval", "10ms"], "at least"),
    ],
)
def test_top_usage_errors_exit_2(top_app: ApiServer, args: list[str], message: str) -> None:
    result = top_app.run(["top", *args])
    assert result.exit_code == 2
    assert message in result.stderr
