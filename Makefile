# Set-up on a fresh machine is two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Every install is pinned to this resolver-made lock of the tested versions; `make lock` refreshes it.
LOCK := constraints.txt
UV_VERSION := 0.13.9
# Keep dlt's pipeline state and Dagster's instance inside the repo (git-ignored), not in $HOME.
export DLT_DATA_DIR ?= $(CURDIR)/.data/dlt
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install lock demo dev test lint format clean bench

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $@

# Re-resolves setup.cfg (all extras, every platform) into $(LOCK). Existing pins are kept unless
# setup.cfg forces a change; `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME) moves them.
lock:  ## refresh constraints.txt from setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile setup.cfg --extra dev --extra bench --python-version 3.11 --universal \
		--custom-compile-command "make lock" --quiet -o $(LOCK) $(LOCK_ARGS)

$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/local/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml  ## materialize everything from the bundled sample API, print row counts
	$(BIN)/python scripts/sample_stack.py demo

dev: install $(DAGSTER_HOME)/dagster.yaml  ## the Dagster UI on the bundled sample API
	$(BIN)/python scripts/sample_stack.py dev

# Two workers: most tests wait on a subprocess or the sample API. By file, so a module's costly
# fixture (dagster dev, the cluster, PostgreSQL) starts once. `pytest FILE` runs in one process.
test: install  ## the whole suite
	$(BIN)/pytest -n 2 --dist loadfile

bench: install  ## plain dlt vs a hand-written floor vs this project: BENCHMARKS.md + benchmarks.png
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[bench]"
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
# --pythonpath follows VENV; no PyPI "newer pyright" check, the version comes from the lock
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(BIN)/pyright --pythonpath $(BIN)/python

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .data .dagster_home analytics_assets.duckdb analytics_assets.duckdb.wal \
		analytics_assets.duckdb.lock
