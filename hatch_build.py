"""Wheel build hook: the governance cores compiled with mypyc (``tools/native.py``), on request.

Off by default: an editable install and a plain ``pip install .`` stay pure Python. A production
wheel (the image ``docs/kubernetes.md`` describes) is built with::

    HATCH_BUILD_HOOK_ENABLE_CUSTOM=true pip wheel --no-deps -w dist .

The modules are compiled in a temporary copy of the tree and only the extension modules are added
to the wheel: the source tree is never written to.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _native() -> Any:
    path = Path(__file__).parent / "tools" / "native.py"
    spec = importlib.util.spec_from_file_location("aviator_native_build", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NativeCoresHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return  # an editable install runs the source it points at
        self._build = Path(tempfile.mkdtemp(prefix="aviator-native-"))
        native = _native()
        made = native.compile_cores(
            into=self._build, source=Path(self.root) / "src", python=sys.executable
        )
        for path in made:
            build_data["force_include"][str(self._build / path)] = str(path)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        build = getattr(self, "_build", None)
        if build is not None:
            shutil.rmtree(build, ignore_errors=True)
