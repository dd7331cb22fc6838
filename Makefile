# Set-up on a fresh machine is two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Keep dlt's pipeline state and Dagster's instance inside the repo (git-ignored), not in $HOME.
export DLT_DATA_DIR ?= $(CURDIR)/.data/dlt
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo dev test lint format clean bench

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml  ## materialize everything from the bundled sample API, print row counts
	$(BIN)/python scripts/sample_stack.py demo

dev: install $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI on the bundled sample API
	$(BIN)/python scripts/sample_stack.py dev

test: install  ## the whole suite
	$(BIN)/pytest

bench: install  ## plain dlt vs a hand-written floor vs this project: BENCHMARKS.md + benchmarks.png
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .data $(DAGSTER_HOME) analytics_assets.duckdb analytics_assets.duckdb.wal
