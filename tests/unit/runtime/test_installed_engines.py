"""``installed_engines``: what the plane believes it can run here, found without running anything."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from aviator.controllers import scheduling
from aviator.controllers.scheduling import installed_engines

REAL_FIND_SPEC = importlib.util.find_spec


def fake_machine(monkeypatch, *, on_path: set[str], importable: set[str]) -> list[str]:
    """PATH holds ``on_path``, this interpreter can import ``importable``; returns the names
    that were looked up with find_spec."""
    looked_up: list[str] = []

    def which(cmd, mode=None, path=None):
        return f"/opt/bin/{cmd}" if cmd in on_path else None

    def find_spec(name, package=None):
        looked_up.append(name)
        if name in importable:
            return importlib.util.spec_from_loader(name, loader=None)
        if name == "sglang":
            return None
        return REAL_FIND_SPEC(name, package)

    monkeypatch.setattr(scheduling.shutil, "which", which)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    return looked_up


def test_only_the_simulator_on_a_bare_machine(monkeypatch):
    fake_machine(monkeypatch, on_path=set(), importable=set())
    assert installed_engines() == {"sim"}


def test_every_engine_found(monkeypatch):
    fake_machine(monkeypatch, on_path={"vllm", "llama-server"}, importable={"sglang"})
    assert installed_engines() == {"sim", "vllm", "sglang", "llamacpp"}


@pytest.mark.parametrize(
    ("on_path", "importable", "expected"),
    [
        ({"vllm"}, set(), {"sim", "vllm"}),
        ({"llama-server"}, set(), {"sim", "llamacpp"}),
        (set(), {"sglang"}, {"sim", "sglang"}),
        # The executable names, not the engine names, are what is looked for on PATH.
        ({"llamacpp", "sglang"}, set(), {"sim"}),
    ],
)
def test_each_engine_on_its_own(monkeypatch, on_path, importable, expected):
    looked_up = fake_machine(monkeypatch, on_path=on_path, importable=importable)
    assert installed_engines() == expected
    assert looked_up == ["sglang"]


def test_a_broken_sglang_spec_counts_as_not_installed(monkeypatch):
    fake_machine(monkeypatch, on_path=set(), importable=set())

    def broken(name, package=None):
        raise ValueError(f"{name}.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert installed_engines() == {"sim"}


def test_sglang_is_found_without_being_imported(monkeypatch, tmp_path):
    package = tmp_path / "sglang"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported by installed_engines')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sglang", raising=False)
    monkeypatch.setattr(scheduling.shutil, "which", lambda *a, **k: None)
    assert installed_engines() == {"sim", "sglang"}
    assert "sglang" not in sys.modules
