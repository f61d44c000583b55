# The two first commands of the README: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The torch release the tests and benchmarks were run with. Here the local CPU wheel satisfies
# it; "torch>=2.4" alone would pull the registry's newest CUDA build (several GB of libraries).
TORCH ?= torch==2.13.0

.PHONY: demo test lint setup

$(BIN)/semseg: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(TORCH)' -e '.[dev]'
	touch $(BIN)/semseg

setup: $(BIN)/semseg

demo: setup
	$(BIN)/semseg demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check semseg tests benchmarks
	$(BIN)/ruff format --check semseg tests benchmarks
