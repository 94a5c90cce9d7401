"""Observability end to end: the gateway's GenAI metrics count what the answers said, and
``aviator top`` reads both replicas' engines."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.plane import REPO, PlaneProcess, wait_until

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SYSTEM = (
    "You are the flight deck assistant of a small regional airline. Answer briefly, cite the "
    "operations manual where you can, and never guess a number you do not know for certain."
)


def series(gw: httpx.Client, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels`` (None: none)."""
    found = None
    for family in text_string_to_metric_families(gw.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                found = (found or 0.0) + float(s.value)
    return found


def cached(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def test_gateway_metrics_count_the_answers_and_top_shows_both_replicas(
    plane: PlaneProcess,
) -> None:
    plane.apply(REPO / "examples" / "quickstart.yaml")
    plane.wait_for_condition("modeldeployments", "chat", "Available", timeout=30)

    usages: list[dict[str, Any]] = []
    with plane.gateway() as gw:
        for question in ("flaps at 15 degrees?", "crosswind limit?", "fuel reserve?"):
            body = {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                ],
                "max_tokens": 12,
            }
            resp = gw.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            usages.append(resp.json()["usage"])

        streamed = {
            "model": MODEL,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "go"}],
            "max_tokens": 9,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with gw.stream("POST", "/v1/chat/completions", json=streamed) as stream:
            assert stream.status_code == 200
            events = [line for line in stream.iter_lines() if line.startswith("data: {")]
        final = orjson.loads(events[-1].removeprefix("data: "))
        assert final["choices"] == [] and final["usage"]["completion_tokens"] > 0
        usages.append(final["usage"])

        genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": MODEL}
        # The stream's usage is recorded right after its last byte went out: poll, do not race.
        wait_until(
            lambda: (
                series(gw, "gen_ai_client_token_usage_count", gen_ai_token_type="output")
                == len(usages)
            ),
            timeout=10,
            message="token usage of all four answers recorded",
        )
        prompt = sum(u["prompt_tokens"] for u in usages)
        completion = sum(u["completion_tokens"] for u in usages)
        usage_sum = "gen_ai_client_token_usage_sum"
        assert series(gw, usage_sum, gen_ai_token_type="input", **genai) == prompt
        assert series(gw, usage_sum, gen_ai_token_type="output", **genai) == completion
        assert series(gw, "aviator_gateway_prompt_tokens_total", model=MODEL) == prompt
        assert series(gw, "aviator_gateway_prompt_cached_tokens_total", model=MODEL) == sum(
            cached(u) for u in usages
        )
        assert series(gw, "gen_ai_server_time_to_first_token_seconds_count", **genai) == len(usages)
        ttft_sum = series(gw, "gen_ai_server_time_to_first_token_seconds_sum", **genai)
        assert ttft_sum is not None and 0 < ttft_sum / len(usages) < 5
        duration = "gen_ai_client_operation_duration_seconds_count"
        assert series(gw, duration, error_type="", gen_ai_provider_name="aviator", **genai) == 4
        assert series(gw, "aviator_gateway_routing_decisions_total", model=MODEL) == 4

    top, table = plane.cli_concurrently(("top", "--once", "-o", "json"), ("top",))
    assert top.returncode == 0, top.stderr
    items = orjson.loads(top.stdout)["items"]
    assert len(items) == 2
    assert {i["model"] for i in items} == {MODEL}
    assert {i["node"] for i in items} == {"local"}
    for item in items:
        assert "error" not in item, item
        assert item["running"] >= 0 and item["waiting"] >= 0
        assert 0 <= item["kvCacheUsage"] <= 1
        assert item["prefixCacheHitRatio"] is None or 0 <= item["prefixCacheHitRatio"] <= 1
        assert item["requestsPerSecond"] is None  # one scrape: no rate
    medians = [i["ttftP50Seconds"] for i in items if i["ttftP50Seconds"] is not None]
    assert medians, "the replicas that served requests report a TTFT median"
    assert all(0.01 < m < 1.0 for m in medians)  # the simulator's TTFT is 40 ms

    assert table.returncode == 0, table.stderr  # not a terminal: one table
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["MODEL", "REPLICA", "NODE"]
    assert len(lines) == 3
