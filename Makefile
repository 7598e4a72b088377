# One command sets up and runs the main job (make demo); one sets up and passes the tests (make test).
PYTHON ?= python3
# Pinned first so that pip never resolves torch by itself (which can pull large CUDA packages).
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-irm demo --json runs/demo.json

test: $(STAMP)
	$(BIN)/ruff check pyro_irm tests benchmarks
	$(BIN)/ruff format --check pyro_irm tests benchmarks
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
