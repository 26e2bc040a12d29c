# make run: serve on 127.0.0.1:8080 (SQLite ./tokenmeter.db, upstream https://api.openai.com/v1)
# make test: the whole test suite (PostgreSQL tests run when TOKENMETER_TEST_POSTGRES_URL is set)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench install dev clean

run: $(VENV)/.installed
	$(BIN)/tokenmeter-proxy migrate
	$(BIN)/tokenmeter-proxy serve

test: $(VENV)/.dev
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests migrations bench
	$(BIN)/mypy

# make bench: direct vs naive pass-throughs vs tokenmeter (SQLite and PostgreSQL, each with and without a budget; SQLite with OTel export), as ratios
# (BENCH_ARGS="--only tokenmeter_pg_x2 --scenarios mixed": two replicas behind nginx)
bench: $(VENV)/.dev
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	command -v nginx >/dev/null || apt-get install -y -q nginx >/dev/null || (apt-get update -q && apt-get install -y -q nginx)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

install: $(VENV)/.installed
dev: $(VENV)/.dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
