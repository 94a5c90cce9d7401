"""Engine ``sglang``: the exact ``python -m sglang.launch_server`` command line, endpoint, env."""

from __future__ import annotations

import sys

import pytest

from aviator.runtime.engines import SglangEngine

from .runtime_helpers import make_replica


def sglang_replica(source: str | None, *, name: str = "llama", args: list[str] | None = None):
    replica = make_replica(engine="sglang", args=args)
    replica.spec.model.name = name
    replica.spec.model.source = source
    return replica


def test_argv_hf_source_with_engine_args_appended():
    replica = sglang_replica(
        "hf://meta-llama/Llama-3.1-8B-Instruct", args=["--tp", "2", "--mem-fraction-static", "0.8"]
    )
    assert SglangEngine().argv(replica, host="127.0.0.1", port=8001) == [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--tp",
        "2",
        "--mem-fraction-static",
        "0.8",
    ]


@pytest.mark.parametrize(
    ("source", "model_path"),
    [
        (None, "llama"),  # the served name doubles as the repo id or path, as with vLLM
        ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("/models/llama", "/models/llama"),
        ("file:///models/llama", "/models/llama"),
        ("file://localhost/models/llama", "/models/llama"),
        ("s3://bucket/llama", "s3://bucket/llama"),
    ],
)
def test_argv_model_path(source, model_path):
    argv = SglangEngine().argv(sglang_replica(source), host="127.0.0.1", port=1)
    assert argv == [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model_path,
        "--served-model-name",
        "llama",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
    ]


def test_endpoint_health_hint():
    sglang = SglangEngine()
    assert sglang.name == "sglang"
    assert sglang.endpoint(sglang_replica(None), 30000) == "http://127.0.0.1:30000"
    assert sglang.health_path == "/health"
    assert sys.executable in sglang.install_hint and "engine sim" in sglang.install_hint


def test_env_makes_health_answer_without_generating():
    env = SglangEngine().env(sglang_replica(None))
    assert env == {
        "PYTHONUNBUFFERED": "1",
        "PYTHONSAFEPATH": "1",
        "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "0",
    }
