"""The gateway's metrics: OTel GenAI names, buckets and labels, and what the request path feeds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aviator.gateway import metrics as gm
from aviator.gateway.endpoints import EndpointTable
from aviator.gateway.usage import Usage

from .conftest import COMPLETION, FakeUpstream, Harness, replica, sample

Start = Callable[..., Awaitable[FakeUpstream]]

USAGE = {
    "prompt_tokens": 300,
    "completion_tokens": 20,
    "total_tokens": 320,
    "prompt_tokens_details": {"cached_tokens": 256},
}
GENAI = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "aviator"}


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def bounds(samples: list[Sample], **labels: str) -> list[float]:
    return [
        float(s.labels["le"])
        for s in samples
        if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def fed_metrics() -> tuple[gm.GatewayMetrics, EndpointTable]:
    table = EndpointTable()
    table.apply("ADDED", replica("a", model="m"))
    m = gm.GatewayMetrics(table=table)
    m.observe(operation="chat", model="m", code=200, duration_s=0.3)
    m.observe(operation="chat", model="m", code=502, duration_s=1.5)
    m.first_byte("chat", "m", 0.05)
    m.used("chat", "m", Usage(prompt_tokens=300, completion_tokens=20, cached_tokens=256))
    m.used("embeddings", "m", Usage(prompt_tokens=9, completion_tokens=0, cached_tokens=None))
    m.routed("m", "default/a")
    return m, table


# -- names, types, buckets and labels, rendered and parsed back ----------------------------------


def test_genai_histograms_have_the_otel_names_buckets_and_labels() -> None:
    m, _ = fed_metrics()
    found = families(m.render().decode())
    inf = float("inf")

    kind, samples = found["gen_ai_client_operation_duration_seconds"]
    assert kind == "histogram"
    assert bounds(samples, error_type="") == [*gm.DURATION_BUCKETS, inf]
    assert tuple(0.01 * 2**i for i in range(14)) == gm.DURATION_BUCKETS
    count = {s.labels["error_type"]: s.value for s in samples if s.name.endswith("_count")}
    assert count == {"": 1, "502": 1}
    assert {k for s in samples for k in s.labels} == {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "error_type",
        "le",
    }

    kind, samples = found["gen_ai_server_time_to_first_token_seconds"]
    assert kind == "histogram"
    assert bounds(samples, gen_ai_operation_name="chat") == [*gm.TTFT_BUCKETS, inf]
    assert bounds(samples, gen_ai_operation_name="embeddings") == []  # no TTFT for embeddings
    assert gm.TTFT_BUCKETS[0] == 0.001 and gm.TTFT_BUCKETS[-1] == 10.0
    assert sample(m.render().decode(), "gen_ai_server_time_to_first_token_seconds_count",
                  gen_ai_request_model="m", **GENAI) == 1  # fmt: skip

    kind, samples = found["gen_ai_client_token_usage"]
    assert kind == "histogram"
    assert bounds(samples, gen_ai_token_type="input", gen_ai_operation_name="chat") == [
        *gm.TOKEN_BUCKETS,
        inf,
    ]
    assert tuple(4**i for i in range(14)) == gm.TOKEN_BUCKETS
    sums = {
        (s.labels["gen_ai_operation_name"], s.labels["gen_ai_token_type"]): s.value
        for s in samples
        if s.name == "gen_ai_client_token_usage_sum"
    }
    # Embeddings report input tokens only.
    assert sums == {("chat", "input"): 300, ("chat", "output"): 20, ("embeddings", "input"): 9}


def test_aviator_counters_and_gauges() -> None:
    m, _ = fed_metrics()
    text = m.render().decode()
    assert sample(text, "aviator_gateway_prompt_tokens_total", model="m") == 309
    assert sample(text, "aviator_gateway_prompt_cached_tokens_total", model="m") == 256
    keep = 1 - gm.CACHE_RATIO_DECAY  # the embeddings answer came later, with nothing cached
    assert sample(text, "aviator_gateway_prompt_cache_hit_ratio", model="m") == pytest.approx(
        256 * keep / (300 * keep + 9)
    )
    assert (
        sample(text, "aviator_gateway_routing_decisions_total", model="m", replica="default/a") == 1
    )
    kinds = {name: kind for name, (kind, _) in families(text).items()}
    assert kinds["aviator_gateway_routing_decisions"] == "counter"
    assert kinds["aviator_gateway_prompt_cache_hit_ratio"] == "gauge"


def test_policy_decisions_are_a_histogram_in_seconds_down_to_10_us() -> None:
    m = gm.GatewayMetrics(table=EndpointTable())
    for seconds in (0.000004, 0.00003, 0.00015, 0.0002, 0.3):
        m.governance.decided.observe(seconds)
    kind, samples = families(m.render().decode())["aviator_gateway_policy_decision_seconds"]
    assert kind == "histogram"
    assert bounds(samples) == [*gm.POLICY_DECISION_BUCKETS, float("inf")]
    assert gm.POLICY_DECISION_BUCKETS[0] == 0.00001 and 0.0002 in gm.POLICY_DECISION_BUCKETS
    cumulative = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    # "Less or equal": 200 us lands in the 200 us bucket, the budget; 0.3 s only in +Inf.
    assert (cumulative["1e-05"], cumulative["5e-05"], cumulative["0.0002"]) == (1, 2, 4)
    assert (cumulative["0.1"], cumulative["+Inf"]) == (4, 5)
    text = m.render().decode()
    assert sample(text, "aviator_gateway_policy_decision_seconds_count") == 5
    assert sample(text, "aviator_gateway_policy_decision_seconds_sum") == pytest.approx(0.300384)


def test_the_recent_cache_ratio_follows_the_latest_answers() -> None:
    m, _ = fed_metrics()
    for _ in range(200):
        m.used("chat", "m", Usage(prompt_tokens=100, completion_tokens=1, cached_tokens=0))
    ratio = sample(m.render().decode(), "aviator_gateway_prompt_cache_hit_ratio", model="m")
    assert ratio is not None and ratio < 0.01


def test_no_cache_ratio_without_reported_cached_tokens() -> None:
    table = EndpointTable()
    table.apply("ADDED", replica("a", model="m"))
    m = gm.GatewayMetrics(table=table)
    m.used("chat", "m", Usage(prompt_tokens=10, completion_tokens=1, cached_tokens=None))
    text = m.render().decode()
    assert sample(text, "aviator_gateway_prompt_tokens_total", model="m") == 10
    assert sample(text, "aviator_gateway_prompt_cached_tokens_total", model="m") == 0
    assert sample(text, "aviator_gateway_prompt_cache_hit_ratio", model="m") is None
    # Once one answer reports cached tokens, the answers that did not count as 0 cached.
    m.used("chat", "m", Usage(prompt_tokens=10, completion_tokens=1, cached_tokens=10))
    ratio = sample(m.render().decode(), "aviator_gateway_prompt_cache_hit_ratio", model="m")
    keep = 1 - gm.CACHE_RATIO_DECAY
    assert ratio == pytest.approx(10 / (10 * keep + 10))


def test_series_of_replicas_that_left_are_dropped_after_one_last_scrape() -> None:
    m, table = fed_metrics()
    table.apply("DELETED", replica("a", model="m"))
    name = "aviator_gateway_routing_decisions_total"
    assert sample(m.render().decode(), name, replica="default/a") == 1  # exported once more
    assert sample(m.render().decode(), name, replica="default/a") is None
    assert sample(m.render().decode(), "aviator_gateway_prompt_cache_hit_ratio") is None


def test_a_replica_still_routed_keeps_its_series() -> None:
    m, table = fed_metrics()
    table.apply("ADDED", replica("a", model="m", ready=False))
    m.render()
    m.routed("m", "default/a")  # picked between two scrapes: not dropped yet
    name = "aviator_gateway_routing_decisions_total"
    assert sample(m.render().decode(), name, replica="default/a") == 2


# -- the request path feeds them -----------------------------------------------------------------


async def answer_with_usage(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    return web.json_response({**COMPLETION, "usage": USAGE})


async def stream_with_usage(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n')
    await up.proceed.wait()
    # The usage event arrives in two reads.
    await resp.write(b'data: {"choices":[],"usage":{"prompt_tokens":300,"comp')
    await asyncio.sleep(0.01)
    await resp.write(b'letion_tokens":20,"prompt_tokens_details":{"cached_tokens":256}}}\n\n')
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def answer_400(up: FakeUpstream, request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"message": "no", "usage": USAGE}}, status=400)


async def test_a_json_answer_feeds_tokens_ttft_and_the_cache_counters(
    harness: Harness, upstreams: Start
) -> None:
    harness.add("a", await upstreams("a", answer_with_usage))
    status, _, _ = await harness.chat()
    assert status == 200
    text = await harness.metrics()
    labels = {**GENAI, "gen_ai_request_model": "m"}
    assert sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 300
    assert sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 20
    assert sample(text, "gen_ai_server_time_to_first_token_seconds_count", **labels) == 1
    assert sample(text, "aviator_gateway_prompt_cached_tokens_total", model="m") == 256
    assert (
        sample(text, "aviator_gateway_routing_decisions_total", model="m", replica="default/a") == 1
    )


async def test_a_stream_feeds_ttft_at_its_first_byte_and_tokens_at_its_end(
    harness: Harness, upstreams: Start
) -> None:
    up = await upstreams("a", stream_with_usage)
    harness.add("a", up)
    labels = {**GENAI, "gen_ai_request_model": "m"}
    async with harness.client.post(
        "/v1/chat/completions",
        data=orjson.dumps({"model": "m", "stream": True}),
        headers={"Authorization": "Bearer sk-test-0123456789"},
    ) as resp:
        assert resp.status == 200
        await resp.content.readline()
        mid = await harness.metrics()
        assert sample(mid, "gen_ai_server_time_to_first_token_seconds_count", **labels) == 1
        assert sample(mid, "gen_ai_client_token_usage_count", **labels) is None
        up.proceed.set()
        await resp.read()
    text = await harness.metrics()
    assert sample(text, "gen_ai_server_time_to_first_token_seconds_count", **labels) == 1
    assert sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **labels) == 300
    assert sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == 20
    assert sample(text, "aviator_gateway_prompt_tokens_total", model="m") == 300


async def test_an_unsuccessful_answer_feeds_neither_ttft_nor_tokens(
    harness: Harness, upstreams: Start
) -> None:
    harness.add("a", await upstreams("a", answer_400))
    status, _, _ = await harness.chat()
    assert status == 400
    text = await harness.metrics()
    assert sample(text, "gen_ai_server_time_to_first_token_seconds_count") is None
    assert sample(text, "gen_ai_client_token_usage_count") is None
    assert sample(text, "gen_ai_client_operation_duration_seconds_count", error_type="400") == 1


def test_embeddings_report_input_tokens_and_no_ttft() -> None:
    m, _ = fed_metrics()
    meter = m.answer(
        operation="embeddings",
        model="m",
        status=200,
        content_type="application/json",
        started=0.0,
    )
    meter.whole(orjson.dumps({"data": [], "usage": {"prompt_tokens": 5, "total_tokens": 5}}))
    text = m.render().decode()
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert sample(text, ttft, gen_ai_operation_name="embeddings") is None
    assert (
        sample(
            text,
            "gen_ai_client_token_usage_sum",
            gen_ai_operation_name="embeddings",
            gen_ai_token_type="input",
        )
        == 9 + 5
    )
    assert (
        sample(
            text,
            "gen_ai_client_token_usage_count",
            gen_ai_operation_name="embeddings",
            gen_ai_token_type="output",
        )
        is None
    )


# -- the lock-free series render exactly as prometheus_client's ---------------------------------


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_lock_free_series_render_like_prometheus_client() -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    theirs, ours = CollectorRegistry(), CollectorRegistry()
    labels = ["op", "model"]
    buckets = gm.DURATION_BUCKETS
    h1 = Histogram("h_seconds", "A histogram.", labels, buckets=buckets, registry=theirs)
    h2 = gm._Histogram("h_seconds", "A histogram.", labels, buckets=gm.DURATION_BUCKETS)
    t1 = Histogram("t", "Tokens.", labels, buckets=gm.TOKEN_BUCKETS, registry=theirs)
    t2 = gm._Histogram("t", "Tokens.", labels, buckets=gm.TOKEN_BUCKETS)
    c1 = Counter("c", "A counter.", labels, registry=theirs)
    c2 = gm._Counter("c", "A counter.", labels)
    g1 = Gauge("g", "A gauge.", labels, registry=theirs)
    g2 = gm._Gauge("g", "A gauge.", labels)
    for collector in (h2, t2, c2, g2):
        ours.register(collector)
    # Values on, just below and just above bucket bounds, and beyond the last one.
    for value in (0.0, 0.01, 0.0100001, 0.3, 0.32, 81.92, 100.0, 1e-9):
        h1.labels("chat", "m").observe(value)
        h2.labels("chat", "m").observe(value)
    h1.labels("embeddings", "").observe(1.0)
    h2.labels("embeddings", "").observe(1.0)
    for tokens in (0, 1, 3, 4, 5, 67108864, 67108865, 300):
        t1.labels("chat", "m").observe(tokens)
        t2.labels("chat", "m").observe(tokens)
    c1.labels("chat", "m").inc()
    c2.labels("chat", "m").inc()
    c1.labels("chat", "m").inc(41.5)
    c2.labels("chat", "m").inc(41.5)
    g1.labels("chat", "m").inc()
    g2.labels("chat", "m").inc()
    g1.labels("chat", "m").inc()
    g2.labels("chat", "m").inc()
    g1.labels("chat", "m").dec()
    g2.labels("chat", "m").dec()
    g1.labels("chat", "x")
    g2.labels("chat", "x")
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))


def test_lock_free_series_check_their_label_count() -> None:
    h = gm._Histogram("h", "A histogram.", ["a", "b"], buckets=gm.TTFT_BUCKETS)
    with pytest.raises(ValueError, match="expected 2 label values"):
        h.labels("only-one")
    with pytest.raises(ValueError, match="expected 1 label values"):
        gm._Counter("c", "A counter.", ["a"]).labels("x", "y")
