# make setup | make demo | make test | make test-demo | make mutation — see README.md and docs/testing.md
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Wheels we build from source (llama-cpp-python) are kept outside the clone so
# a fresh clone on the same machine sets up in seconds.
WHEELHOUSE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/taskling/wheelhouse
STAMP := $(VENV)/.setup-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Inductor's compiled kernels outlive a run (train.compile, the compile tests).
export TORCHINDUCTOR_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/taskling/inductor
# make test: pytest workers, each taking whole test files (their module fixtures are built once);
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

.PHONY: setup demo test test-demo mutation clean-demo bench
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup.sh
	WHEELHOUSE="$(WHEELHOUSE)" PY="$(PY)" bash scripts/setup.sh
	touch $(STAMP)

demo: setup
	$(BIN)/python examples/run_demo.py

# The demo's gold check (a whole fresh demo run, about 15 minutes here) is its own target: make test-demo.
test: setup
	$(BIN)/python -m pytest -x -q --durations=25 --timeout=1800 -m "not demo" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test-demo: setup
	$(BIN)/python -m pytest -x -q --timeout=3600 -m demo

mutation: setup
	nice -n 5 $(BIN)/python scripts/mutation.py

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python bench/bench_demo.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/curate.py
	$(BIN)/python bench/train.py
