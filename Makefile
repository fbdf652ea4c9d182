# The two commands: `make run` (whole stack, embedded defaults) and `make test` (every test tier).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run run-simulated test lint typecheck unit integration bench-quick docs-picture bootstrap bootstrap-dev clean

run: bootstrap
	$(BIN)/traffic run

# The demo with a simulated vision model (made-up verdicts, labelled simulated): alerts, key pool, dead letters.
run-simulated: bootstrap
	$(BIN)/traffic run --simulated-model

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

# The README's picture of the dashboard, taken by the browser test of the simulated-model demo.
docs-picture: bootstrap-dev
	UPDATE_DOCS_PICTURE=1 $(BIN)/python -m pytest tests/browser -k simulated_model

bootstrap:
	@scripts/bootstrap.sh

bootstrap-dev:
	@scripts/bootstrap.sh --dev

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
