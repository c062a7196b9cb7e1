# The README and docs/development.md name these targets. Everything runs from the project's
# own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check lint docs e2e bench approvals clean

$(STAMP): requirements.txt requirements-torch.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, from its CPU build: otherwise sentence-transformers pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet -r requirements-torch.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## demo: set up, seed an embedded Qdrant with real texts, migrate it through Airflow, approve, report
demo: $(STAMP)
	$(PY) scripts/demo.py

## test: the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest

## check: the fast tier (pure logic, embedded store, deterministic provider), under a minute
check: $(STAMP)
	$(PY) -m pytest -n 2 -m "not integration and not e2e"

## lint: ruff and mypy
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## docs: regenerate the generated pages, docs/params.md (the params schemas) and
## docs/settings.md (the Settings dataclass); tests fail when either is stale
docs: $(STAMP)
	$(PY) -m scripts.params_doc
	$(PY) -m scripts.settings_doc

clean:
	rm -rf .demo .mypy_cache .ruff_cache .pytest_cache

## bench: throughput, memory and catch-up cost, measured side by side; BENCH_ARGS=--quick for ~5 min
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.catchup

## e2e: only the end-to-end tests (real Airflow services, the browser test)
e2e: $(STAMP)
	$(PY) -m pytest -m e2e
