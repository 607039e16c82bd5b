# Every target builds .venv itself, so a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m piot_dagster.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pip install --quiet connectorx  # the baseline reader, not a dependency
	cd benchmarks && ../$(PY) bench_engine.py && ../$(PY) bench_scan_db.py && ../$(PY) bench_dagster.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
