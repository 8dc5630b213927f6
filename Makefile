# QuantiVista: `make demo` runs the main job, `make test` runs every check. `make help` lists all.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install demo test lint typecheck unit perf clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) ## create .venv and install the package with dev tools

demo: $(STAMP) ## ingest a simulated universe into ./qv-data and show what landed
	$(BIN)/qv demo

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests perf
	$(BIN)/ruff format --check src tests perf

typecheck: $(STAMP) ## mypy --strict on src/
	$(BIN)/mypy

unit: $(STAMP) ## the test suite only
	$(BIN)/pytest -q

test: lint typecheck unit ## lint, type-check and run the whole test suite

perf: $(STAMP) ## run every benchmark in perf/ (each prints one JSON line)
	@for script in perf/[!_]*.py; do echo "# $$script"; $(BIN)/python $$script || exit 1; done

perf-quiet: $(STAMP) ## every open issue's benchmark, for a quiet machine (perf/quiet_all.sh, ~10 min)
	PY=$(BIN)/python bash perf/quiet_all.sh

clean: ## remove the virtualenv, caches and demo data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache qv-data
