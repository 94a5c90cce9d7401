"""Failure injection: the decisions, and what a client sees."""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
import pytest

from aviator.api.errors import BadRequest
from aviator.sim import SimOptions
from aviator.sim.faults import CRASH_EXIT_CODE, FAULT_HEADER, Fault, Faults

from .helpers import Client, MakeClient, chat_body, sim_of


def faults(**options: object) -> Faults:
    return Faults(SimOptions(model="m", **options))  # type: ignore[arg-type]


def test_off_by_default() -> None:
    f = faults()
    assert not f.enabled
    assert all(f.decide("crash") is None for _ in range(100))  # headers are ignored


def test_rates_are_reproducible_draws() -> None:
    decisions = [faults(error_rate=0.3, spike_rate=0.2, seed=7) for _ in range(2)]
    runs = [[f.decide(None) for _ in range(1000)] for f in decisions]
    assert runs[0] == runs[1]
    kinds = [d.kind if d else None for d in runs[0]]
    assert 250 < kinds.count("error") < 350
    assert 100 < kinds.count("spike") < 180  # 20 % of the 70 % left
    assert next(d for d in runs[0] if d and d.kind == "spike").delay_s == pytest.approx(1.0)


def test_crash_after_n_requests() -> None:
    f = faults(crash_after=2)
    assert [f.decide(None), f.decide(None)] == [None, None]
    assert f.decide(None) == Fault("crash")


@pytest.mark.parametrize(
    ("header", "fault"),
    [
        ("error", Fault("error", status=500)),
        ("Error=503", Fault("error", status=503)),
        (" spike ", Fault("spike", delay_s=0.5)),
        ("spike=200", Fault("spike", delay_s=0.1)),
        ("crash", Fault("crash")),
    ],
)
def test_headers_when_allowed(header: str, fault: Fault) -> None:
    f = faults(allow_fault_headers=True, spike_ms=1000, time_scale=0.5)
    assert f.decide(header) == fault


@pytest.mark.parametrize(
    "header", ["boom", "error=200", "error=x", "spike=-1", "spike=nan", "crash=1"]
)
def test_a_malformed_header_is_refused_naming_it(header: str) -> None:
    with pytest.raises(BadRequest) as info:
        faults(allow_fault_headers=True).decide(header)
    assert info.value.causes[0].field == FAULT_HEADER


async def post(
    client: Client, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    resp = await client.post(
        "/v1/chat/completions", data=orjson.dumps(chat_body(max_tokens=3)), headers=headers
    )
    return resp.status, orjson.loads(await resp.read())


async def test_the_header_does_nothing_unless_allowed(make_client: MakeClient) -> None:
    client = await make_client()
    crashed: list[bool] = []
    sim_of(client).crash = lambda: crashed.append(True)
    for value in ("error", "crash", "spike"):
        status, _ = await post(client, {FAULT_HEADER: value})
        assert status == 200
    assert not crashed


async def test_an_injected_error_comes_before_any_byte(make_client: MakeClient) -> None:
    client = await make_client(allow_fault_headers=True)
    status, body = await post(client, {FAULT_HEADER: "error=503"})
    assert status == 503
    assert body["error"] == {
        "message": "injected fault: the simulator answers 503 on purpose",
        "type": "server_error",
        "param": None,
        "code": "injected_fault",
    }
    assert sim_of(client).engine.scheduler.num_running == 0
    status, body = await post(client, {FAULT_HEADER: "nonsense"})
    assert status == 400
    assert body["error"]["param"] == FAULT_HEADER  # type: ignore[index]


async def test_error_rate_one_fails_every_request(make_client: MakeClient) -> None:
    client = await make_client(error_rate=1.0)
    assert [(await post(client))[0] for _ in range(3)] == [500, 500, 500]
    assert sim_of(client).metrics.prompt_tokens == 0  # the engine never saw them


async def test_a_spike_delays_the_first_byte(make_client: MakeClient) -> None:
    client = await make_client(allow_fault_headers=True)
    started = time.monotonic()
    status, _ = await post(client, {FAULT_HEADER: "spike=150"})
    assert status == 200
    assert time.monotonic() - started >= 0.15


async def test_a_crash_calls_the_crash_hook(make_client: MakeClient) -> None:
    client = await make_client(crash_after=1)
    crashed: list[bool] = []
    sim_of(client).crash = lambda: crashed.append(True)
    assert (await post(client))[0] == 200
    status, _ = await post(client)
    assert crashed == [True]
    assert status == 503  # only because the test's hook returns; the real one never does


async def test_the_process_exits_on_crash() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from aviator.sim.faults import crash; crash()",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == CRASH_EXIT_CODE
    assert b"injected crash" in err
