# Every target builds .venv itself, so a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo ui test fuzz lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo's runs land in .dagster, so `make ui` shows them afterwards.
HOME_DIR := $(CURDIR)/.dagster

demo: $(STAMP) $(HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(HOME_DIR) $(PY) definitions.py

ui: $(STAMP) $(HOME_DIR)/dagster.yaml
	DAGSTER_HOME=$(HOME_DIR) $(VENV)/bin/dagster dev -f definitions.py -h 127.0.0.1 -p 3000

$(HOME_DIR)/dagster.yaml:
	mkdir -p $(@D)
	printf 'telemetry:\n  enabled: false\n' > $@

# Azurite (Azure Blob Storage) for the Azure tests, from npm. Without npm they are skipped
# (CI, where .ci/run installs npm, fails them instead).
AZURITE := .node/node_modules/.bin/azurite-blob

$(AZURITE):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix .node --no-audit --no-fund --silent azurite@3.35.0; \
	else echo "npm not found: the Azure tests will be skipped"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint $(AZURITE)
	$(PY) -m pytest

# A long differential search (25x the examples, a fresh random seed each time).
fuzz: $(STAMP)
	PIOT_FUZZ_SCALE=25 $(PY) -m pytest tests/test_differential.py tests/test_scan_db.py \
		-k "equal or derived_range" -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m pip install --quiet connectorx  # the baseline reader, not a dependency
	cd benchmarks && ../$(PY) bench_engine.py && ../$(PY) bench_scan_db.py && \
		../$(PY) bench_dagster.py && ../$(PY) bench_storage.py && ../$(PY) bench_instances.py && \
		../$(PY) bench_partitions.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .dagster data .node
