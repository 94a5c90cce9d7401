from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aviator.sim.engine import ConstantLatency, FinishReason, Scheduler
from aviator.sim.metrics import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, Histogram, SimMetrics

from .helpers import FakeClock

REQUIRED = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
}


def parse(metrics: SimMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def run_requests(metrics: SimMetrics, *, count: int, max_num_seqs: int = 1) -> None:
    clock = FakeClock()
    sched = Scheduler(
        max_num_seqs=max_num_seqs, max_waiting=100, latency=ConstantLatency(ttft_s=0.05, itl_s=0.02),
        clock=clock, kv_cache_blocks=100, observer=metrics,
    )  # fmt: skip
    for _ in range(count):
        sched.add(num_prompt_tokens=20, max_output_tokens=4, end_reason=FinishReason.STOP)
    clock.now = 100.0
    sched.advance()


def test_exposition_has_vllm_names_types_and_labels_without_created_series() -> None:
    metrics = SimMetrics(model_name="m", kv_cache_blocks=100)
    text = metrics.exposition().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in REQUIRED.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert sample.labels["model_name"] == "m"
            assert sample.labels["engine"] == "0"
    assert "_created" not in text
    assert "vllm:prompt_tokens_total{" in text
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort"}
    info = families["vllm:cache_config_info"].samples[0].labels
    assert (info["block_size"], info["num_gpu_blocks"]) == ("16", "100")


def test_histograms_use_vllm_buckets() -> None:
    samples = parse(SimMetrics(model_name="m", kv_cache_blocks=1))
    for name, buckets in (
        ("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
        ("vllm:inter_token_latency_seconds", ITL_BUCKETS),
        ("vllm:e2e_request_latency_seconds", E2E_BUCKETS),
        ("vllm:request_queue_time_seconds", E2E_BUCKETS),
    ):
        les = [dict(k)["le"] for k in samples[name + "_bucket"]]
        assert les == [*(str(b) for b in buckets), "+Inf"]
    assert TTFT_BUCKETS[0] == 0.001 and TTFT_BUCKETS[-1] == 2560.0
    assert E2E_BUCKETS[0] == 0.3 and E2E_BUCKETS[-1] == 7680.0


def test_metrics_move_with_the_engine() -> None:
    metrics = SimMetrics(model_name="m", kv_cache_blocks=100)
    run_requests(metrics, count=3)
    s = parse(metrics)
    labels = (("engine", "0"), ("model_name", "m"))
    assert s["vllm:prompt_tokens_total"][labels] == 60
    assert s["vllm:prefix_cache_queries_total"][labels] == 60
    assert s["vllm:prefix_cache_hits_total"][labels] == 0
    assert s["vllm:generation_tokens_total"][labels] == 12
    assert (
        s["vllm:request_success_total"][(*labels[:1], ("finished_reason", "stop"), labels[1])] == 3
    )
    assert s["vllm:time_to_first_token_seconds_count"][labels] == 3
    # One slot: the second waits 0.11 s (0.05 + 3 * 0.02), the third 0.22 s.
    assert abs(s["vllm:request_queue_time_seconds_sum"][labels] - 0.33) < 1e-9
    assert abs(s["vllm:time_to_first_token_seconds_sum"][labels] - (0.15 + 0.33)) < 1e-9
    assert s["vllm:inter_token_latency_seconds_count"][labels] == 9
    assert abs(s["vllm:inter_token_latency_seconds_sum"][labels] - 9 * 0.02) < 1e-9
    assert s["vllm:e2e_request_latency_seconds_count"][labels] == 3
    assert s["vllm:num_requests_running"][labels] == 0


def test_each_instance_has_its_own_registry() -> None:
    a = SimMetrics(model_name="a", kv_cache_blocks=1)
    b = SimMetrics(model_name="b", kv_cache_blocks=1)
    run_requests(a, count=2)
    assert a.registry is not b.registry
    assert parse(b)["vllm:prompt_tokens_total"][(("engine", "0"), ("model_name", "b"))] == 0


def test_histogram_takes_repeated_observations_at_once() -> None:
    hist = Histogram([0.1, 1.0])
    hist.observe(0.05, 3)
    hist.observe(0.1)
    hist.observe(5.0, 2)
    assert hist.cumulative() == [("0.1", 4.0), ("1.0", 4.0), ("+Inf", 6.0)]
    assert (hist.count, hist.sum) == (6, 0.05 * 3 + 0.1 + 10.0)
