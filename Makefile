# aviator — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Test files spread over the cores (at most 4), each file on one worker: a module's tests may
# share one started plane. On the 2-core CI machine this halves the suite's wall time.
PYTEST := $(BIN)/pytest -n auto --maxprocesses 4 --dist loadfile

.PHONY: run test lint typecheck unit integration bench wheel clean help

help:
	@echo "make run    set up .venv, start the plane with examples/quickstart.yaml applied"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks (results go to docs/benchmarks.md by hand)"
	@echo "make wheel  build the production wheel into dist/ (governance cores compiled by mypyc)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/aviator up --apply examples/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools hatch_build.py
	$(BIN)/ruff format --check src tests bench tools hatch_build.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(PYTEST) tests/unit

integration: $(STAMP)
	$(PYTEST) tests/integration

test: lint typecheck
	$(PYTEST) tests

bench: $(STAMP)
	$(BIN)/python bench/control_plane.py

# The wheel an image installs: the same code, its governance cores compiled (hatch_build.py).
wheel: $(STAMP)
	HATCH_BUILD_HOOK_ENABLE_CUSTOM=true $(BIN)/python -m pip wheel --quiet --no-deps -w dist .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
