# Every target builds .venv itself, so a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo's runs land in .dagster, so `make ui` shows them afterwards.
HOME_DIR := $(CURDIR)/.dagster

.PHONY: demo ui test fuzz lint bench clean

# pip's output goes to a log, shown only when the install fails. Activating the venv
# makes `dagster` commands use this project's instance and code location by default.
$(STAMP): pyproject.toml | $(HOME_DIR)/dagster.yaml .env
	@echo "installing piot-dagster and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[test]'; } \
		> $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	@printf '\n# piot-dagster (Makefile): this project'"'"'s Dagster instance and code location\n%s\n%s\n' \
		'export DAGSTER_HOME="$${DAGSTER_HOME:-$(HOME_DIR)}"' \
		'export DAGSTER_PYTHON_FILE="$${DAGSTER_PYTHON_FILE:-$(CURDIR)/definitions.py}"' \
		>> $(VENV)/bin/activate
	@touch $(STAMP)

# Token authentication is Ray's default; choosing it explicitly keeps Ray from warning
# about it on every start.
RAY_AUTH := RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token}

# The example database the code location reads (PIOT_TRADES_DB moves it), built once.
TRADES_DB := $(or $(PIOT_TRADES_DB),data/trades.db)

$(TRADES_DB): | $(STAMP)
	@$(PY) -m scripts.trades_db

demo: $(STAMP) $(TRADES_DB)
	@DAGSTER_HOME=$(HOME_DIR) $(RAY_AUTH) $(PY) -m scripts.demo $(DEMO_ARGS)

# One local Ray cluster for the session, which every run joins (unless RAY_ADDRESS or a
# `ray start --head` of yours is there to use), stopped when the UI stops.
ui: $(STAMP) $(TRADES_DB)
	@DAGSTER_HOME=$(HOME_DIR) $(RAY_AUTH) $(PY) -m piot_dagster.dagster.session_cluster \
		$(VENV)/bin/dagster dev -f definitions.py -h 127.0.0.1 -p 3000

# The queue looks for runs to launch every second (Dagster's default: every 5 s), so a
# run launched from the UI starts at once.
$(HOME_DIR)/dagster.yaml:
	@mkdir -p $(@D)
	@printf 'telemetry:\n  enabled: false\nrun_queue:\n  dequeue_interval_seconds: 1\n' > $@

# `dagster` commands run from here use the project's instance, the one `make ui` shows:
# Dagster reads .env from the working directory (a value already set wins). They also write
# events in batches: one INSERT for a backfill's planned events and one for its
# materializations on PostgreSQL (docs/dagster.md, "Large backfills"); it changes nothing else.
.env:
	@printf 'DAGSTER_HOME=$${DAGSTER_HOME:-%s}\nDAGSTER_EVENT_BATCH_SIZE=$${DAGSTER_EVENT_BATCH_SIZE:-1000}\n' \
		'$(HOME_DIR)' > $@

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
		tests/test_rebuild.py -k "equal or derived_range or rebuilt_plan_returns" -p no:cacheprovider

bench: $(STAMP)
	cd benchmarks && ../$(PY) bench_engine.py && ../$(PY) bench_scan_db.py && \
		../$(PY) bench_dagster.py && ../$(PY) bench_storage.py && ../$(PY) bench_instances.py && \
		../$(PY) bench_partitions.py && ../$(PY) bench_ui.py && ../$(PY) bench_mysql.py && \
		../$(PY) bench_delta.py && ../$(PY) bench_memory.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .dagster data .node .env
