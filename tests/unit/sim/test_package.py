from __future__ import annotations

import importlib
import inspect

import pytest

import aviator.sim

MODULES = [
    "driver", "engine", "metrics", "openai_api", "options", "process", "server", "textgen",
    "tokenizer",
]  # fmt: skip


def test_package_exports_exactly_its_public_names() -> None:
    exported = aviator.sim.__all__
    assert len(set(exported)) == len(exported)
    public = {
        name
        for name, value in vars(aviator.sim).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(exported)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_what_it_exports(name: str) -> None:
    module = importlib.import_module(f"aviator.sim.{name}")
    exported = module.__all__
    assert len(set(exported)) == len(exported)
    assert all(hasattr(module, item) for item in exported)
    assert module.__doc__
