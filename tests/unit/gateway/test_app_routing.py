"""The gateway with its model directory: 404 vs 503, routing presets, session affinity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .conftest import API_KEY, CHAT_BODY, FakeUpstream, Harness

Start = Callable[..., Awaitable[FakeUpstream]]


def deployment(model: str = "m", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "namespace": "default"},
        "spec": {"model": {"name": model}, **spec},
    }


async def test_a_deployed_model_without_ready_replicas_is_503_an_unknown_one_404(
    harness: Harness,
) -> None:
    harness.gateway.directory.apply("ADDED", deployment("scaled-to-zero"))
    status, _, body = await harness.chat({**CHAT_BODY, "model": "scaled-to-zero"})
    assert status == 503, body
    status, _, body = await harness.chat({**CHAT_BODY, "model": "nobody-serves-this"})
    assert status == 404 and orjson.loads(body)["error"]["code"] == "model_not_found"
    async with harness.client.get(
        "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as resp:
        listed = [m["id"] for m in (await resp.json())["data"]]
    assert "scaled-to-zero" in listed


async def test_session_affinity_through_the_gateway(harness: Harness, upstreams: Start) -> None:
    harness.gateway.directory.apply("ADDED", deployment(routing={"preset": "session"}))
    for name in ("a", "b", "c"):
        harness.add(name, await upstreams(name))
    seen = set()
    for _ in range(4):
        status, headers, _ = await harness.chat(headers={"x-session-id": "user-42"})
        assert status == 200
        seen.add(headers["x-aviator-replica"])
    assert len(seen) == 1


async def test_round_robin_preset_spreads_evenly(harness: Harness, upstreams: Start) -> None:
    harness.gateway.directory.apply("ADDED", deployment(routing={"preset": "round-robin"}))
    for name in ("a", "b"):
        harness.add(name, await upstreams(name))
    replicas = [(await harness.chat())[1]["x-aviator-replica"] for _ in range(4)]
    assert sorted(replicas) == ["default/a", "default/a", "default/b", "default/b"]


async def test_prefix_aware_default_keeps_a_shared_prompt_on_one_replica(
    harness: Harness, upstreams: Start
) -> None:
    for name in ("a", "b", "c"):
        harness.add(name, await upstreams(name))
    system = {"role": "system", "content": "You are the ACME helpdesk. Be brief and exact. " * 40}
    seen = set()
    for question in ("one", "two", "three", "four"):
        body = {**CHAT_BODY, "messages": [system, {"role": "user", "content": question}]}
        status, headers, _ = await harness.chat(body)
        assert status == 200
        seen.add(headers["x-aviator-replica"])
    assert len(seen) == 1
