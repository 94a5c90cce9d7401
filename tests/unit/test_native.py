"""The governance cores compiled with mypyc (tools/native.py) behave as their source does: they
compile, they are what gets imported from a compiled tree, and their tests pass on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tools import native

ROOT = Path(__file__).resolve().parents[2]
TESTS = (
    "tests/unit/governance/test_budgets.py",
    "tests/unit/gateway/test_auth.py",
    "tests/unit/gateway/test_governance.py",
    "tests/unit/identity/test_verify.py",
    "tests/unit/policy/test_lane.py",
    "tests/unit/policy/test_decision_cache.py",
    "tests/unit/audit/test_sink.py",
    "tests/unit/gateway/test_buckets.py",
)
"""The unit tests of the compiled modules (the whole suite on a compiled tree: `make native-test`)."""


@pytest.mark.timeout(600)  # a compile and a test run, on a machine busy with the rest
def test_the_compiled_cores_pass_their_tests(tmp_path: Path) -> None:
    # Opt level 0: this is about behaviour, and the C compiler is then several times quicker.
    made = native.compile_cores(into=tmp_path, opt_level=0)
    modules = {path.as_posix().split(".")[0] for path in made}
    assert {core.removesuffix(".py") for core in native.CORES} <= modules
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    which = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib, sys; "
            "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))",
            *(core.removesuffix(".py").replace("/", ".") for core in native.CORES),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    files = which.stdout.split()
    assert len(files) == len(native.CORES)
    assert all(f.startswith(str(tmp_path)) and f.endswith(".so") for f in files), files
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
