# wulian — two commands on a fresh machine: `make up` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Parallel test workers: both cores by default (CI machines have 2).
WORKERS ?= 2

.PHONY: up test lint soak bench clean venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Start the local five-institution network (and its explorer) on this machine.
up: $(STAMP)
	$(BIN)/wulian up

## Lint, type-check, hold the layering contract, then run every test.
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --durations=25 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## Long runs: thousands of simulator seeds, soak and fault suites.
soak: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup --durations=25 -m slow

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
