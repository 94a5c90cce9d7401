"""Engine ``llamacpp``: the exact ``llama-server`` command line, endpoint, env."""

from __future__ import annotations

import pytest

from aviator.runtime.engines import LlamaCppEngine

from .runtime_helpers import make_replica


def llama_replica(source: str | None, *, name: str = "gemma", args: list[str] | None = None):
    replica = make_replica(engine="llamacpp", args=args)
    replica.spec.model.name = name
    replica.spec.model.source = source
    return replica


def test_argv_hf_source_with_quant_and_engine_args_appended():
    replica = llama_replica(
        "hf://ggml-org/gemma-3-1b-it-GGUF:Q8_0", args=["-c", "8192", "-ngl", "99"]
    )
    assert LlamaCppEngine().argv(replica, host="127.0.0.1", port=8001) == [
        "llama-server",
        "-hf",
        "ggml-org/gemma-3-1b-it-GGUF:Q8_0",
        "--alias",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "-c",
        "8192",
        "-ngl",
        "99",
    ]


@pytest.mark.parametrize(
    ("source", "model_args"),
    [
        ("hf://ggml-org/gemma-3-1b-it-GGUF", ["-hf", "ggml-org/gemma-3-1b-it-GGUF"]),
        ("file:///models/gemma-q4.gguf", ["-m", "/models/gemma-q4.gguf"]),
        ("file://localhost/models/gemma-q4.gguf", ["-m", "/models/gemma-q4.gguf"]),
        ("/models/gemma-q4.gguf", ["-m", "/models/gemma-q4.gguf"]),
        ("models/gemma-q4.gguf", ["-m", "models/gemma-q4.gguf"]),
        (None, ["-m", "gemma"]),  # no source: the name is taken as a path
        (
            "https://example.com/gemma-q4.gguf",
            ["--model-url", "https://example.com/gemma-q4.gguf"],
        ),
    ],
)
def test_argv_model_source(source, model_args):
    argv = LlamaCppEngine().argv(llama_replica(source), host="127.0.0.1", port=1)
    assert argv == [
        "llama-server",
        *model_args,
        "--alias",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
    ]


def test_endpoint_health_env_hint():
    llama = LlamaCppEngine()
    replica = llama_replica(None)
    assert llama.name == "llamacpp"
    assert llama.endpoint(replica, 8080) == "http://127.0.0.1:8080"
    assert llama.health_path == "/health"
    assert llama.env(replica) == {}
    assert llama.install_hint == "install llama.cpp (llama-server on PATH) or use engine sim"
