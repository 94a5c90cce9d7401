from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import aviator.sim

MODULES = [
    "driver", "engine", "faults", "kvcache", "latency", "metrics", "openai_api", "options",
    "process", "server", "textgen", "tokenizer",
]  # fmt: skip


def test_package_exports_exactly_its_public_names() -> None:
    exported = aviator.sim.__all__
    assert len(set(exported)) == len(exported)
    # Exports resolve lazily (PEP 562): each name in __all__ is one the package knows how to load,
    # and loading it gives the object its module defines.
    assert set(aviator.sim._EXPORTS) == set(exported)
    for name in exported:
        module = importlib.import_module(f"aviator.sim.{aviator.sim._EXPORTS[name]}")
        assert getattr(aviator.sim, name) is getattr(module, name)
    with pytest.raises(AttributeError):
        _ = aviator.sim.no_such_name


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(f"aviator.sim.{name}")
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    assert all(hasattr(module, item) for item in exported)
    assert module.__doc__


def test_the_constant_latency_simulator_does_not_import_the_profiles() -> None:
    # Profiles pull in pydantic (~0.3 s of start-up): only a --device-profile run pays for it.
    code = (
        "import sys; from aviator.sim import SimOptions; from aviator.sim.server import SimServer; "
        "SimServer(SimOptions(model='m')); assert 'aviator.placement' not in sys.modules; "
        "SimServer(SimOptions(model='m', device_profile='h100-sxm-80gb')); "
        "assert 'aviator.placement.profiles' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_device_profile_run_does_not_import_pydantic() -> None:
    # The profiles are plain tables: an engine started with --device-profile skips pydantic too.
    code = (
        "import sys; from aviator.sim import SimOptions; from aviator.sim.server import SimServer; "
        "SimServer(SimOptions(model='m', device_profile='h100-sxm-80gb')); "
        "assert 'pydantic' not in sys.modules, sorted(m for m in sys.modules if 'aviator' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
