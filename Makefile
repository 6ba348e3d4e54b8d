# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch goes in first and pinned: a looser requirement would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m alignlab.models.kernels  # builds the decoding kernel once (about a minute); says if it is off
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/alignlab experiment --profile quick

test: install
	bash scripts/system-deps.sh
	bash scripts/run-tests.sh $(PYTEST_ARGS)

test-fast: install
	bash scripts/system-deps.sh
	bash scripts/run-tests.sh -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/bench_sampling.py
	$(BIN)/python benchmarks/bench_forecast.py
	$(BIN)/python benchmarks/bench_reward.py
	$(BIN)/python benchmarks/bench_dpo.py
	$(BIN)/python benchmarks/bench_ppo.py
	$(BIN)/python benchmarks/bench_rloo.py  # makes .bench-venvs/trl-1.16 on first use
	$(BIN)/python benchmarks/bench_grpo.py
	$(BIN)/python benchmarks/bench_prm.py  # makes .bench-venvs/trl-1.13 on first use

clean-venv:
	rm -rf $(VENV)
