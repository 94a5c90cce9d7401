"""Reading engine load from a Prometheus exposition: vLLM and SGLang names, label sets, junk."""

from __future__ import annotations

import pytest

from aviator.enginemetrics import EngineLoad, parse_load

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.7
vllm:num_requests_waiting_by_reason{reason="x"} 99
vllm:prompt_tokens_total{model_name="m"} 12345.0
"""


def test_vllm_sums_queues_and_averages_kv_usage_across_label_sets() -> None:
    assert parse_load(VLLM) == EngineLoad(
        running=5.0, waiting=5.0, kv_cache_usage=pytest.approx(0.6)
    )


def test_sglang_names() -> None:
    text = "sglang:num_running_reqs{model_name=\"m\"} 7\nsglang:num_queue_reqs{model_name=\"m\"} 2\n" \
           "sglang:token_usage{model_name=\"m\"} 0.25\nsglang:cache_hit_rate 0.9\n"  # fmt: skip
    assert parse_load(text) == EngineLoad(running=7.0, waiting=2.0, kv_cache_usage=0.25)


def test_old_vllm_kv_gauge_and_unlabelled_samples_with_timestamps() -> None:
    text = "vllm:num_requests_waiting 2 1700000000000\nvllm:gpu_cache_usage_perc 0.4\n"
    assert parse_load(text) == EngineLoad(running=0.0, waiting=2.0, kv_cache_usage=0.4)


def test_label_values_with_spaces_and_braces_do_not_confuse_the_value() -> None:
    text = 'vllm:num_requests_waiting{model_name="a b} c"} 6\n'
    assert parse_load(text) == EngineLoad(running=0.0, waiting=6.0, kv_cache_usage=0.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not metrics at all",
        "# TYPE vllm:num_requests_waiting gauge\n",
        "vllm:num_requests_running 3\n",  # no waiting gauge: not something we can read
        "vllm:num_requests_waiting NaN\n",
        "vllm:num_requests_waiting -1\n",
        'vllm:num_requests_waiting{x="y"}\n',
        "vllm:num_requests_waiting abc\n",
    ],
)
def test_unreadable_expositions_give_none(text: str) -> None:
    assert parse_load(text) is None


def test_the_simulators_own_exposition_is_read() -> None:
    from aviator.sim.metrics import SimMetrics

    metrics = SimMetrics(model_name="m", kv_cache_blocks=100)
    metrics.on_state(num_running=2, num_waiting=3, kv_cache_usage=0.5)
    load = parse_load(metrics.exposition().decode())
    assert load == EngineLoad(running=2.0, waiting=3.0, kv_cache_usage=0.5)
