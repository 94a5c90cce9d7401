"""Engine ``vllm``: ``vllm serve`` from the PATH (vLLM is not a dependency of aviator)."""

from __future__ import annotations

from aviator.api.replica import Replica
from aviator.runtime.engines.base import LOOPBACK

__all__ = ["VllmEngine"]

_HF_SCHEME = "hf://"


class VllmEngine:
    name = "vllm"
    health_path = "/health"
    install_hint = "install vLLM or use engine sim"

    def argv(self, replica: Replica, *, host: str, port: int) -> list[str]:
        model = replica.spec.model
        weights = (model.source or model.name).removeprefix(_HF_SCHEME)
        return [
            "vllm",
            "serve",
            weights,
            "--served-model-name",
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
        return {"PYTHONUNBUFFERED": "1"}
