"""Engine ``sglang``: SGLang's OpenAI-compatible server (SGLang is not a dependency of aviator).

The command is ``python -m sglang.launch_server --model-path … --served-model-name … --host …
--port …`` followed by ``spec.engineArgs``. SGLang is a Python package, so the interpreter matters:
this adapter runs the plane's own interpreter (``sys.executable``), which is where the plane looks
for SGLang too (``aviator.controllers.scheduling.installed_engines`` asks
``importlib.util.find_spec("sglang")`` of this interpreter). Install SGLang into the environment
aviator runs from and the plane offers the engine; it is then importable by the engines it starts.
``python -m sglang.launch_server`` is used rather than the newer ``sglang serve`` command because
every SGLang release has it. Flags: docs.sglang.io ``advanced_features/server_arguments`` and
``sgl-project/sglang`` ``python/sglang/srt/server_args.py``.

Readiness is ``GET /health``: 503 while the server starts (until its warm-up request succeeded),
200 after. By default (``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION`` true) SGLang answers it only
after generating a token and at least one second of waiting, longer than the runtime's probe
timeout, so :meth:`SglangEngine.env` turns that off: ``/health`` then answers at once (SGLang's
``/health_generate`` still does the generation check). The variable exists since SGLang PR #13320
(November 2025); releases between PR #8444 (July 2025, which made ``/health`` generate) and it
cannot be probed within the timeout and never become Ready.
"""

from __future__ import annotations

import sys

from aviator.api.replica import Replica
from aviator.runtime.engines.base import LOOPBACK
from aviator.runtime.engines.sources import HF_SCHEME, file_path

__all__ = ["SglangEngine"]


def _model_path(source: str) -> str:
    """``--model-path``: a Hugging Face repo id or a local directory, as SGLang takes either."""
    return file_path(source) or source.removeprefix(HF_SCHEME)


class SglangEngine:
    name = "sglang"
    health_path = "/health"
    install_hint = f"install SGLang for {sys.executable} (pip install sglang) or use engine sim"

    def argv(self, replica: Replica, *, host: str, port: int) -> list[str]:
        model = replica.spec.model
        return [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model-path",
            _model_path(model.source or model.name),
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
        return {
            "PYTHONUNBUFFERED": "1",
            # A directory named "sglang" in the plane's working directory cannot shadow the
            # installed package (``-m`` would otherwise put the working directory first).
            "PYTHONSAFEPATH": "1",
            "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION": "0",
        }
