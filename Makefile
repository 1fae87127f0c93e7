# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN    := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# DuckDB and sklearn use both cores; keep Airflow small on a 2-core machine.
export AIRFLOW__CORE__PARALLELISM ?= 2

.PHONY: setup tools demo test test-fast bench airflow clean-data

setup: $(VENV)/.installed

# torch is pinned to 2.13.0 (the CPU build where one is on pip's find-links); every install
# is constrained by constraints.txt so nothing can pull a newer torch and its CUDA packages.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Simulate a month of shopping, run the whole DVC pipeline, show who got flagged and why.
demo: setup
	$(BIN)/dvc repro
	$(BIN)/python -m pipelines show --experiment --limit 15

# Compose's own validator for docker/compose.yaml (tests/test_docker_files.py runs it; there
# is no Docker engine here) and headless Chromium for the run report's browser test
# (tests/test_report_browser.py); Debian's packages, installed once when missing (needs root).
tools:
	@command -v docker-compose >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Two workers, one test file each at a time (--dist loadfile keeps a file's module fixtures and
# its order): most tests wait on subprocesses, the services or the disk, so two files at once
# fit the 2 cores; the whole suite in one process took over 35 minutes.
test: setup tools
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# Airflow with the two DAGs on this machine: UI on http://localhost:8080 (scripts/airflow-local.sh).
airflow: setup
	VENV_BIN=$(BIN) scripts/airflow-local.sh

bench: setup
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_dag_parse.py
	$(BIN)/python benchmarks/bench_deep.py --users 100000
	$(BIN)/python benchmarks/bench_detectors_sim.py --sim frozen

clean-data:
	rm -rf data models reports plots metrics.json
