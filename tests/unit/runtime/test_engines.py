"""Engine adapters: exact command lines, endpoints, probe paths, lookup."""

from __future__ import annotations

import sys

import pytest

from aviator.api.errors import Invalid
from aviator.api.modeldeployment import SimulatorOptions
from aviator.runtime import engines
from aviator.runtime.engines import (
    ExternalEngine,
    LlamaCppEngine,
    SglangEngine,
    SimEngine,
    VllmEngine,
    for_engine,
)

from .runtime_helpers import make_replica


def test_sim_argv_with_simulator_options():
    replica = make_replica(args=["--seed", "7"])
    replica.spec.simulator = SimulatorOptions(
        ttft_ms=12.5, itl_ms=3.0, max_num_seqs=8, max_waiting=20
    )
    assert SimEngine().argv(replica, host="127.0.0.1", port=40123) == [
        sys.executable,
        "-m",
        "aviator.sim",
        "--host",
        "127.0.0.1",
        "--port",
        "40123",
        "--model",
        "test-model",
        "--ttft-ms",
        "12.5",
        "--itl-ms",
        "3.0",
        "--max-num-seqs",
        "8",
        "--max-waiting",
        "20",
        "--seed",
        "7",
    ]


def test_sim_argv_defaults_when_simulator_unset():
    argv = SimEngine().argv(make_replica(), host="127.0.0.1", port=1)
    assert argv[-8:] == [
        "--ttft-ms",
        "40.0",
        "--itl-ms",
        "8.0",
        "--max-num-seqs",
        "64",
        "--max-waiting",
        "1000",
    ]


def test_sim_argv_passes_the_device_profile():
    replica = make_replica(args=["--time-scale", "0.1"])
    replica.spec.simulator = SimulatorOptions(
        max_num_seqs=1024, device_profile="h100-sxm-80gb", model_class="70b", tensor_parallel=4
    )
    argv = SimEngine().argv(replica, host="127.0.0.1", port=1)
    assert argv[-12:] == ["--max-num-seqs", "1024", "--max-waiting", "1000",
                          "--device-profile", "h100-sxm-80gb", "--model-class", "70b",
                          "--tensor-parallel", "4", "--time-scale", "0.1"]  # fmt: skip
    replica.spec.simulator = SimulatorOptions(device_profile="l4-24gb")
    argv = SimEngine().argv(replica, host="127.0.0.1", port=1)
    assert argv[-4:] == ["--device-profile", "l4-24gb", "--time-scale", "0.1"]


def test_sim_endpoint_health_env():
    sim = SimEngine()
    assert sim.endpoint(make_replica(), 40123) == "http://127.0.0.1:40123"
    assert sim.health_path == "/health"
    assert sim.env(make_replica()) == {"PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"}


def test_vllm_argv_strips_hf_scheme_from_source():
    replica = make_replica(engine="vllm", args=["--max-model-len", "4096"])
    replica.spec.model.name = "llama"
    replica.spec.model.source = "hf://meta-llama/Llama-3.1-8B-Instruct"
    assert VllmEngine().argv(replica, host="127.0.0.1", port=8001) == [
        "vllm",
        "serve",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--max-model-len",
        "4096",
    ]


@pytest.mark.parametrize(
    ("source", "weights"),
    [(None, "test-model"), ("/models/llama", "/models/llama"), ("s3://b/llama", "s3://b/llama")],
)
def test_vllm_argv_weights_fall_back_to_the_model_name(source, weights):
    replica = make_replica(engine="vllm")
    replica.spec.model.source = source
    assert VllmEngine().argv(replica, host="127.0.0.1", port=1) == [
        "vllm",
        "serve",
        weights,
        "--served-model-name",
        "test-model",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
    ]


def test_vllm_endpoint_and_hint():
    vllm = VllmEngine()
    assert vllm.endpoint(make_replica(engine="vllm"), 8001) == "http://127.0.0.1:8001"
    assert vllm.health_path == "/health"
    assert vllm.install_hint == "install vLLM or use engine sim"


def test_external_runs_nothing_and_strips_the_url():
    replica = make_replica(engine="external", url="http://10.0.0.5:8000/")
    external = ExternalEngine()
    assert external.argv(replica, host="127.0.0.1", port=1) is None
    assert external.endpoint(replica, None) == "http://10.0.0.5:8000"
    assert external.health_path == "/v1/models"
    assert external.env(replica) == {}


def test_external_without_url_is_invalid():
    with pytest.raises(Invalid) as info:
        ExternalEngine().endpoint(make_replica(engine="external"), None)
    assert info.value.causes[0].field == "spec.external.url"


def test_for_engine():
    assert isinstance(for_engine("sim"), SimEngine)
    assert isinstance(for_engine("vllm"), VllmEngine)
    assert isinstance(for_engine("external"), ExternalEngine)
    assert isinstance(for_engine("sglang"), SglangEngine)
    assert isinstance(for_engine("llamacpp"), LlamaCppEngine)
    assert {name: adapter.name for name, adapter in engines.builtin_engines().items()} == {
        "sim": "sim",
        "vllm": "vllm",
        "sglang": "sglang",
        "llamacpp": "llamacpp",
        "external": "external",
    }
    with pytest.raises(Invalid, match="unknown engine 'llama-server'"):
        for_engine("llama-server")
