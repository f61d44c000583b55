# The two first commands of the README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint setup

$(BIN)/semseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/semseg

setup: $(BIN)/semseg

demo: setup
	$(BIN)/semseg demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check semseg tests benchmarks
	$(BIN)/ruff format --check semseg tests benchmarks
