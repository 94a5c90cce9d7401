"""Compile the governance cores of the gateway's request path with mypyc.

Every governed request runs authentication (``gateway/auth.py``, ``identity/verify.py``), the
admission and its record (``gateway/governance.py``, ``audit/sink.py``), its policy lane
(``policy/lane.py``), the budgets (``governance/budgets.py``) and the decision-time histogram
(``gateway/buckets.py``): pure Python, one to two thousand interpreter instructions per call.
Compiled with mypyc they cost about a third less per request (docs/benchmarks.md), with the very
same source: mypyc compiles typed Python, and the pure-Python modules stay the reference (tests
run on both).

Used by the wheel build (``hatch_build.py``, opt-in), by ``bench/governance.py --native`` and by
``tests/unit/test_native.py``. Run by hand::

    python tools/native.py BUILD_DIR      # BUILD_DIR/aviator/... with the cores compiled

The tree is copied first: nothing is ever compiled into ``src/``, where an extension module
would silently shadow the source it was built from after the next edit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

CORES = (
    "aviator/governance/budgets.py",
    "aviator/gateway/governance.py",
    "aviator/gateway/auth.py",
    "aviator/identity/verify.py",
    "aviator/policy/lane.py",
    "aviator/audit/sink.py",
    "aviator/gateway/buckets.py",
)
"""The modules compiled, relative to the source root. Each must keep to what mypyc compiles
faithfully: no monkeypatching of its functions, no ``-m`` entry point, values of the types its
signatures declare (a compiled function checks them and raises ``TypeError``), and no
dataclass made per request (mypyc leaves the ``__init__`` the dataclasses module writes
interpreted: a plain class with ``__slots__`` is compiled)."""

SOURCE = Path(__file__).resolve().parent.parent / "src"


class NativeBuildError(RuntimeError):
    """mypyc or the C compiler failed; the message holds their output."""


def compile_cores(
    *, into: Path, source: Path = SOURCE, python: str = sys.executable, opt_level: int = 3
) -> list[Path]:
    """Copy ``source``'s ``aviator`` package into ``into`` and compile ``CORES`` there in place.

    Returns the extension modules made, relative to ``into`` (each module's, and the library
    they share at the top level). ``python`` must have mypy (which ships mypyc) and setuptools;
    ``opt_level`` is the C compiler's (0 builds faster, for tests of behaviour)."""
    into.mkdir(parents=True, exist_ok=True)
    package = into / "aviator"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(
        source / "aviator", package, ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    # In a directory of its own: no project configuration is read (it is mypy's, for checking),
    # and the build directory mypyc leaves stays out of the source tree.
    env = {**os.environ, "MYPYC_OPT_LEVEL": str(opt_level), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [python, "-m", "mypyc", *CORES],
        cwd=into,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise NativeBuildError(f"mypyc failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    # The modules in the package, and the library they share at the top (not mypyc's build/).
    made = sorted(path.relative_to(into) for path in [*into.glob("*.so"), *package.glob("**/*.so")])
    if len(made) < len(CORES):
        raise NativeBuildError(f"mypyc made {len(made)} extension modules for {len(CORES)}")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("into", type=Path, help="Directory to build the compiled tree in.")
    parser.add_argument("--opt-level", type=int, default=3, choices=range(4))
    args = parser.parse_args()
    try:
        made = compile_cores(into=args.into, opt_level=args.opt_level)
    except NativeBuildError as exc:
        sys.exit(str(exc))
    for path in made:
        print(args.into / path)


if __name__ == "__main__":
    main()
