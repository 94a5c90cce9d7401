"""Engine ``llamacpp``: llama.cpp's ``llama-server`` from the PATH (not a dependency of aviator).

The command is ``llama-server <model> --alias <name> --host … --port …`` followed by
``spec.engineArgs``, where ``<model>`` comes from ``spec.model``:

- ``source: hf://<org>/<repo>[:<quant>]`` → ``-hf <org>/<repo>[:<quant>]``: llama-server downloads
  the GGUF from the Hub (``quant`` picks the file; its default is ``Q4_K_M``). A gated repo needs
  ``HF_TOKEN`` in ``spec.env``.
- ``source: http(s)://…`` → ``--model-url …``: llama-server downloads that GGUF file.
- ``source: file:///path/model.gguf``, a plain path, or no source (the model name is then taken as
  a path) → ``-m <path>``.

Readiness is ``GET /health``: 503 while the model loads, 200 once it is loaded and the server is
ready. Flags and endpoint: ggml-org/llama.cpp ``tools/server/README.md``.
"""

from __future__ import annotations

from aviator.api.replica import Replica
from aviator.runtime.engines.base import LOOPBACK
from aviator.runtime.engines.sources import HF_SCHEME, file_path

__all__ = ["LlamaCppEngine"]

_URL_SCHEMES = ("https://", "http://")


def _model_args(source: str) -> list[str]:
    if source.startswith(HF_SCHEME):
        return ["-hf", source.removeprefix(HF_SCHEME)]
    if source.startswith(_URL_SCHEMES):
        return ["--model-url", source]
    return ["-m", file_path(source) or source]


class LlamaCppEngine:
    name = "llamacpp"
    health_path = "/health"
    install_hint = "install llama.cpp (llama-server on PATH) or use engine sim"

    def argv(self, replica: Replica, *, host: str, port: int) -> list[str]:
        model = replica.spec.model
        return [
            "llama-server",
            *_model_args(model.source or model.name),
            "--alias",
            model.name,
            "--host",
            host,
            "--port",
            str(port),
            *replica.spec.engine_args,
        ]

    def endpoint(self, replica: Replica, port: int | None) -> str:
        return f"http://{LOOPBACK}:{port}"

    def env(self, replica: Replica) -> dict[str, str]:
        return {}
