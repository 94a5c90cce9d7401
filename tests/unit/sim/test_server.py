"""The HTTP surface, through aiohttp's test client: shapes, streaming, errors, metrics, aborts."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aviator.sim import SimOptions, serve, textgen
from aviator.sim.engine import FinishReason
from aviator.sim.tokenizer import Tokenizer, render_chat

from .helpers import (
    MODEL,
    Client,
    MakeClient,
    chat_body,
    eventually,
    sim_of,
    sse_json,
)

tok = Tokenizer()


async def post(client: Client, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=orjson.dumps(body))
    return resp.status, orjson.loads(await resp.read())


async def metric_values(client: Client) -> dict[str, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            key = sample.name
            if "finished_reason" in sample.labels:
                key += ":" + sample.labels["finished_reason"]
            if "le" not in sample.labels:
                values[key] = sample.value
    return values


# -- shapes


async def test_chat_completion_has_the_openai_shape_and_tokenizer_usage(client: Client) -> None:
    content = "Tell me about control planes."
    status, body = await post(client, "/v1/chat/completions", chat_body(content))
    assert status == 200
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 60
    assert body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    text = choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == tok.count(render_chat([("user", content)]))
    assert usage["completion_tokens"] == tok.count(text) == 16  # the default max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_completion_has_the_openai_shape(client: Client) -> None:
    status, body = await post(
        client, "/v1/completions", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5}
    )
    assert status == 200
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert set(choice) == {"index", "text", "logprobs", "finish_reason"}
    assert tok.count(choice["text"]) == body["usage"]["completion_tokens"] == 5
    assert body["usage"]["prompt_tokens"] == tok.count("<|begin_of_text|>Once upon a time")


async def test_completion_accepts_token_ids_and_single_item_lists(client: Client) -> None:
    _, body = await post(client, "/v1/completions", {"model": MODEL, "prompt": [1, 2, 3, 4]})
    assert body["usage"]["prompt_tokens"] == 4
    _, listed = await post(client, "/v1/completions", {"model": MODEL, "prompt": [[1, 2, 3, 4]]})
    assert listed["choices"][0]["text"] == body["choices"][0]["text"]
    _, text = await post(client, "/v1/completions", {"model": MODEL, "prompt": ["hi"]})
    assert text["usage"]["prompt_tokens"] == tok.count("<|begin_of_text|>hi")


async def test_answers_are_deterministic_per_prompt_and_seed(make_client: MakeClient) -> None:
    a, b, seeded = await make_client(), await make_client(), await make_client(seed=42)
    texts = []
    for client, body in (
        (a, chat_body("same prompt")),
        (b, chat_body("same prompt")),
        (a, chat_body("other prompt")),
        (seeded, chat_body("same prompt")),
        (a, chat_body("same prompt", seed=5)),
    ):
        _, out = await post(client, "/v1/chat/completions", body)
        texts.append(out["choices"][0]["message"]["content"])
    assert texts[0] == texts[1]
    assert len(set(texts)) == 4


async def test_max_tokens_cuts_and_natural_end_stops(client: Client) -> None:
    _, cut = await post(client, "/v1/chat/completions", chat_body("x", max_tokens=3))
    assert (cut["choices"][0]["finish_reason"], cut["usage"]["completion_tokens"]) == ("length", 3)
    # max_completion_tokens wins over max_tokens, as in vLLM.
    body = chat_body("x", max_tokens=3, max_completion_tokens=7)
    _, both = await post(client, "/v1/chat/completions", body)
    assert both["usage"]["completion_tokens"] == 7
    _, free = await post(client, "/v1/chat/completions", chat_body("x", max_tokens=10_000))
    natural = textgen.natural_length(
        textgen.prompt_key(render_chat([("user", "x")]).encode(), seed=0)
    )
    assert free["choices"][0]["finish_reason"] == "stop"
    assert free["usage"]["completion_tokens"] == natural
    body = chat_body("x", max_tokens=600, ignore_eos=True)
    _, forced = await post(client, "/v1/chat/completions", body)
    assert forced["choices"][0]["finish_reason"] == "length"
    assert forced["usage"]["completion_tokens"] == 600


async def test_chat_content_parts_are_joined(client: Client) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": parts}]}
    _, out = await post(client, "/v1/chat/completions", body)
    assert out["usage"]["prompt_tokens"] == tok.count(render_chat([("user", "a\nb")]))


async def test_models_lists_the_served_model(client: Client) -> None:
    resp = await client.get("/v1/models")
    body = await resp.json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert (model["id"], model["object"], model["owned_by"]) == (MODEL, "model", "aviator-sim")


async def test_health_is_200_while_serving(client: Client) -> None:
    resp = await client.get("/health")
    assert resp.status == 200


# -- streaming


async def test_chat_stream_is_sse_with_role_first_finish_last_then_done(client: Client) -> None:
    _, whole = await post(client, "/v1/chat/completions", chat_body("stream me", max_tokens=6))
    resp = await client.post(
        "/v1/chat/completions", json=chat_body("stream me", max_tokens=6, stream=True)
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    chunks, last = sse_json(await resp.read())
    assert last == "[DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["model"] == MODEL and "usage" not in c for c in chunks)
    first, *tokens, final = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(tokens) == 6
    assert all(t["choices"][0]["finish_reason"] is None for t in tokens)
    text = "".join(t["choices"][0]["delta"]["content"] for t in tokens)
    assert text == whole["choices"][0]["message"]["content"]
    assert final["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }


async def test_stream_usage_chunk_when_include_usage(client: Client) -> None:
    body = chat_body(
        "usage please", max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    resp = await client.post("/v1/chat/completions", json=body)
    chunks, last = sse_json(await resp.read())
    assert last == "[DONE]"
    *others, usage_chunk = chunks
    assert all(c["usage"] is None for c in others)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    prompt = render_chat([("user", "usage please")])
    assert usage_chunk["usage"]["prompt_tokens"] == tok.count(prompt)


async def test_completion_stream_carries_text_chunks(client: Client) -> None:
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 3, "stream": True}
    resp = await client.post("/v1/completions", json=body)
    chunks, last = sse_json(await resp.read())
    assert last == "[DONE]"
    assert [c["object"] for c in chunks] == ["text_completion"] * 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["id"].startswith("cmpl-") for c in chunks)


async def test_stream_paces_tokens_by_ttft_and_itl(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=60, itl_ms=15)
    started = time.monotonic()
    resp = await client.post("/v1/chat/completions", json=chat_body(max_tokens=4, stream=True))
    arrivals = []
    async for line in resp.content:
        if line.startswith(b"data: ") and b'"content"' in line and b'"role"' not in line:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    # No token can arrive before its simulated time (the client's clock started first); late is
    # possible on a busy machine, so the upper bound is loose.
    for i, arrival in enumerate(arrivals):
        assert arrival >= 0.060 + i * 0.015 - 0.002, (i, arrivals)
    assert arrivals[-1] < 2.0


async def test_non_streaming_e2e_is_ttft_plus_decode(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=40, itl_ms=10, time_scale=0.5)
    started = time.monotonic()
    status, _ = await post(client, "/v1/chat/completions", chat_body(max_tokens=5))
    elapsed = time.monotonic() - started
    assert status == 200
    assert 0.5 * (0.040 + 4 * 0.010) - 0.003 <= elapsed < 2.0


# -- errors


@pytest.mark.parametrize(
    ("path", "body", "param", "code"),
    [
        ("/v1/chat/completions", {"messages": []}, "model", "missing_required_parameter"),
        ("/v1/chat/completions", {"model": 3}, "model", None),
        ("/v1/chat/completions", {"model": MODEL}, "messages", "missing_required_parameter"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, "messages", None),
        ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, "messages", None),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "x", "content": "a"}]},
         "messages[0].role", None),
        ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user"}]},
         "messages[0].content", None),
        ("/v1/chat/completions",
         {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
         "messages[0].content[0]", None),
        ("/v1/chat/completions", chat_body(max_tokens=0), "max_tokens", None),
        ("/v1/chat/completions", chat_body(max_tokens="many"), "max_tokens", None),
        ("/v1/chat/completions", chat_body(max_completion_tokens=True), "max_completion_tokens",
         None),
        ("/v1/chat/completions", chat_body(stream="yes"), "stream", None),
        ("/v1/chat/completions", chat_body(n=2), "n", None),
        ("/v1/chat/completions", chat_body(temperature=3), "temperature", None),
        ("/v1/chat/completions", chat_body(stop=[1]), "stop", None),
        ("/v1/chat/completions", chat_body(stream_options={"include_usage": True}),
         "stream_options", None),
        ("/v1/chat/completions", chat_body(stream=True, stream_options={"include_usage": 1}),
         "stream_options.include_usage", None),
        ("/v1/completions", {"model": MODEL}, "prompt", "missing_required_parameter"),
        ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, "prompt", None),
        ("/v1/completions", {"model": MODEL, "prompt": [1, -2]}, "prompt", None),
        ("/v1/completions", {"model": MODEL, "prompt": 7}, "prompt", None),
    ],
)  # fmt: skip
async def test_invalid_requests_get_400_naming_the_param(
    client: Client, path: str, body: dict[str, Any], param: str, code: str | None
) -> None:
    status, out = await post(client, path, body)
    assert status == 400, out
    error = out["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert error["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"'])
async def test_malformed_json_gets_400(client: Client, raw: bytes) -> None:
    resp = await client.post("/v1/chat/completions", data=raw)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None


async def test_unknown_model_gets_404_model_not_found(client: Client) -> None:
    status, out = await post(client, "/v1/completions", {"model": "gpt-4", "prompt": "hi"})
    assert status == 404
    assert out["error"]["code"] == "model_not_found"
    assert out["error"]["type"] == "invalid_request_error"
    assert "gpt-4" in out["error"]["message"]


async def test_context_length_is_enforced(make_client: MakeClient) -> None:
    client = await make_client(max_model_len=64)
    status, out = await post(client, "/v1/chat/completions", chat_body(max_tokens=60))
    assert status == 400
    assert (out["error"]["param"], out["error"]["code"]) == ("messages", "context_length_exceeded")


async def test_oversized_bodies_get_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    body = orjson.dumps(chat_body("x" * 2000))
    resp = await client.post("/v1/chat/completions", data=body)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_too_large"

    async def chunks() -> Any:  # no Content-Length: the limit applies while reading
        yield body

    resp = await client.post("/v1/chat/completions", data=chunks())
    assert resp.status == 413


async def test_full_waiting_queue_gets_503(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=10_000, max_num_seqs=1, max_waiting=1)
    sim = sim_of(client)
    running = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    waiting = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    await eventually(lambda: sim.engine.scheduler.num_waiting == 1)
    resp = await client.post("/v1/chat/completions", json=chat_body())
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    error = (await resp.json())["error"]
    assert (error["type"], error["code"]) == ("server_error", "queue_full")
    for task in (running, waiting):
        task.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)


# -- metrics


async def test_metrics_move_after_requests(client: Client) -> None:
    before = await metric_values(client)
    assert before["vllm:request_success_total:length"] == 0
    await post(client, "/v1/chat/completions", chat_body(max_tokens=5))
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=5, stream=True))
    after = await metric_values(client)
    assert after["vllm:request_success_total:length"] == 2
    assert after["vllm:generation_tokens_total"] == 10
    prompt = render_chat([("user", chat_body()["messages"][0]["content"])])
    assert after["vllm:prompt_tokens_total"] == 2 * tok.count(prompt)
    assert after["vllm:prefix_cache_queries_total"] == after["vllm:prompt_tokens_total"]
    assert after["vllm:time_to_first_token_seconds_count"] == 2
    assert after["vllm:inter_token_latency_seconds_count"] == 8
    assert after["vllm:e2e_request_latency_seconds_count"] == 2
    assert after["vllm:request_queue_time_seconds_count"] == 2


async def test_running_and_waiting_gauges_follow_load(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=10_000, max_num_seqs=1)
    tasks = [
        asyncio.create_task(client.post("/v1/chat/completions", json=chat_body())) for _ in range(3)
    ]
    sim = sim_of(client)
    await eventually(lambda: sim.engine.scheduler.num_waiting == 2)
    values = await metric_values(client)
    assert values["vllm:num_requests_running"] == 1
    assert values["vllm:num_requests_waiting"] == 2
    assert values["vllm:kv_cache_usage_perc"] > 0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# -- disconnects and shutdown


async def test_client_disconnect_frees_the_slot(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=10_000, max_num_seqs=1)
    sim = sim_of(client)
    scheduler = sim.engine.scheduler
    first = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    second = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body()))
    await eventually(lambda: (scheduler.num_running, scheduler.num_waiting) == (1, 1))
    first.cancel()  # the client goes away mid-request
    await asyncio.gather(first, return_exceptions=True)
    await eventually(lambda: (scheduler.num_running, scheduler.num_waiting) == (1, 0))
    assert sim.metrics.success[FinishReason.ABORT] == 1
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    await eventually(lambda: scheduler.num_running == 0)
    assert sim.engine.num_flights == 0


async def test_streaming_disconnect_frees_the_slot(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=0, itl_ms=50, max_num_seqs=1)
    scheduler = sim_of(client).engine.scheduler
    resp = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=1000, ignore_eos=True, stream=True)
    )
    await resp.content.readline()  # the stream has started
    assert scheduler.num_running == 1
    resp.close()
    await eventually(lambda: scheduler.num_running == 0)


async def test_serve_stops_quickly_and_cancels_in_flight_requests() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = SimOptions(model=MODEL, ttft_ms=0, itl_ms=100)
    ready = asyncio.Event()
    server = asyncio.create_task(serve(options, host="127.0.0.1", port=port, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=chat_body(max_tokens=1000, ignore_eos=True, stream=True),
        )
        await resp.content.readline()
        started = time.monotonic()
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        assert time.monotonic() - started < 1.0
        rest = await resp.read()  # the stream ended, without [DONE]
        assert b"[DONE]" not in rest


# -- prefix caching and device profiles


SYSTEM = "You are the support assistant of ExampleCorp; answer in two sentences. " * 20


async def test_cached_tokens_are_reported_for_a_shared_prefix(client: Client) -> None:
    def body(question: str, **extra: Any) -> dict[str, Any]:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        return {"model": MODEL, "messages": messages, "max_tokens": 4, **extra}

    _, cold = await post(client, "/v1/chat/completions", body("How do I reset my password?"))
    assert cold["usage"]["prompt_tokens_details"] is None  # nothing cached yet: null, like vLLM
    _, warm = await post(client, "/v1/chat/completions", body("What are your opening hours?"))
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached % 16 == 0 and cached >= tok.count(SYSTEM) - 16
    assert cached < warm["usage"]["prompt_tokens"]
    resp = await client.post(
        "/v1/chat/completions",
        json=body("Where is my order?", stream=True, stream_options={"include_usage": True}),
    )
    chunks, _ = sse_json(await resp.read())
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": cached}
    values = await metric_values(client)
    assert values["vllm:prefix_cache_hits_total"] == 2 * cached
    assert values["vllm:prefix_cache_queries_total"] == values["vllm:prompt_tokens_total"]


async def test_prefix_caching_can_be_turned_off(make_client: MakeClient) -> None:
    client = await make_client(enable_prefix_caching=False)
    for _ in range(2):
        _, out = await post(client, "/v1/chat/completions", chat_body(SYSTEM, max_tokens=2))
        assert out["usage"]["prompt_tokens_details"] is None
    resp = await client.get("/metrics")
    text = await resp.text()
    assert 'enable_prefix_caching="False"' in text
    values = await metric_values(client)
    assert values["vllm:prefix_cache_queries_total"] == 0


async def test_kv_cache_usage_is_the_share_of_blocks_held(make_client: MakeClient) -> None:
    client = await make_client(ttft_ms=10_000, kv_cache_blocks=100)
    task = asyncio.create_task(client.post("/v1/chat/completions", json=chat_body(SYSTEM)))
    sim = sim_of(client)
    await eventually(lambda: sim.engine.scheduler.num_running == 1)
    prompt_tokens = tok.count(render_chat([("user", SYSTEM)]))
    values = await metric_values(client)
    assert values["vllm:kv_cache_usage_perc"] == pytest.approx(-(-prompt_tokens // 16) / 100)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await eventually(lambda: sim.engine.scheduler.kv_cache_usage == 0)


async def test_a_device_profile_sizes_and_times_the_engine(make_client: MakeClient) -> None:
    client = await make_client(device_profile="l4-24gb", time_scale=0.0)
    sim = sim_of(client)
    config = sim.config
    assert config.profile is not None and config.profile.name == "l4-24gb"
    resp = await client.get("/v1/models")
    [model] = (await resp.json())["data"]
    assert model["max_model_len"] == config.max_model_len == config.num_gpu_blocks * 16 < 131_072
    status, out = await post(client, "/v1/chat/completions", chat_body(max_tokens=5))
    assert (status, out["usage"]["completion_tokens"]) == (200, 5)
    text = await (await client.get("/metrics")).text()
    assert f'num_gpu_blocks="{config.num_gpu_blocks}"' in text
    status, out = await post(
        client, "/v1/chat/completions", chat_body(max_tokens=config.max_model_len)
    )
    assert (status, out["error"]["code"]) == (400, "context_length_exceeded")


async def test_the_next_turn_of_a_conversation_hits_the_previous_answer(client: Client) -> None:
    turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Explain caching."}]
    _, first = await post(
        client, "/v1/chat/completions", {"model": MODEL, "messages": turn, "max_tokens": 100}
    )
    answer = first["choices"][0]["message"]["content"]
    seen = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    follow = [*turn, {"role": "assistant", "content": answer}, {"role": "user", "content": "More?"}]
    _, second = await post(
        client, "/v1/chat/completions", {"model": MODEL, "messages": follow, "max_tokens": 4}
    )
    # Every full block of the first turn's prompt and answer is reused (the last token's KV never
    # was computed, hence seen - 1).
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == (seen - 1) // 16 * 16
