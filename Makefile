# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test contract lint bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Seed the embedded sandbox, plan, apply, plan again — no Medplum account needed.
demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest

# The contract suite against a real Medplum: MEDPLUM_BASE_URL, MEDPLUM_CLIENT_ID and
# MEDPLUM_CLIENT_SECRET of a project-admin client (it creates its own data, deletes nothing).
contract: $(STAMP)
	RECONCILER_CONTRACT_SERVER=1 $(BIN)/python -m pytest tests/contract -n 0 -rs

$(VENV)/.bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	touch $(VENV)/.bench

# The performance comparison against a pymedplum loop (see README, "Benchmark").
bench: $(VENV)/.bench
	$(BIN)/python benchmarks/reconcile.py --rss-patients 100000 --quota --json benchmark.json

bench-quick: $(VENV)/.bench
	$(BIN)/python benchmarks/reconcile.py --quick

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests benchmarks
	$(BIN)/ruff format --check reconciler tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .reconciler
