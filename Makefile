# The two commands: `make run` (whole stack, embedded defaults) and `make test` (every test tier).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit integration bench-quick bootstrap bootstrap-dev clean

run: bootstrap
	$(BIN)/traffic run

test: bootstrap-dev lint typecheck
	$(BIN)/python -m pytest

lint: bootstrap-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: bootstrap-dev
	$(BIN)/mypy

unit: bootstrap-dev
	$(BIN)/python -m pytest tests/unit

integration: bootstrap-dev
	$(BIN)/python -m pytest tests/integration

bootstrap:
	@scripts/bootstrap.sh

bootstrap-dev:
	@scripts/bootstrap.sh --dev

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
