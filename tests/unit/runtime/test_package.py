"""The public surface of aviator.runtime."""

from __future__ import annotations

import aviator.runtime
import aviator.runtime.engines


def test_exported_members():
    assert set(aviator.runtime.__all__) == {"ExitInfo", "LocalRuntime", "Phase", "ProcessState"}
    assert set(aviator.runtime.engines.__all__) == {
        "LOOPBACK",
        "EngineAdapter",
        "ExternalEngine",
        "LlamaCppEngine",
        "SglangEngine",
        "SimEngine",
        "VllmEngine",
        "builtin_engines",
        "for_engine",
    }
    for module in (aviator.runtime, aviator.runtime.engines):
        for name in module.__all__:
            assert hasattr(module, name)
