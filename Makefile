# Two commands for a new user: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/src

# Use an external database when one is configured (in the environment, or in a .env file at the
# repository root, which the service reads too); otherwise the project-local cluster.
ENV_FILE_DB := $(shell test -f .env && sed -n -E 's/^[[:space:]]*(DATABASE_URL|POSTGRES_HOST)[[:space:]]*=[[:space:]]*([^[:space:]\#]+).*/\2/p' .env)
EXTERNAL_DB := $(strip $(DATABASE_URL)$(POSTGRES_HOST)$(ENV_FILE_DB))
ifeq ($(EXTERNAL_DB),)
export LOCAL_DB_PORT ?= 54329
export DATABASE_URL := postgresql://postgres@127.0.0.1:$(LOCAL_DB_PORT)/analytics
endif

.PHONY: run test db db-stop db-status db-replica db-replica-stop db-replica-status venv venv-dev bench rollups-rebuild migrate key retention import tracker uplot screenshot browser clean

$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

db:
ifeq ($(EXTERNAL_DB),)
	@bash boot/timescaledb.sh start
else
	@echo "[make] using the configured external database (DATABASE_URL/POSTGRES_HOST); nothing to provision"
endif

db-stop:
	@bash boot/timescaledb.sh stop

db-status:
	@bash boot/timescaledb.sh status

# A streaming replica of the local cluster (for DATABASE_READ_URLS); see README "Read replicas".
db-replica:
	@bash boot/timescaledb.sh replica start

db-replica-stop:
	@bash boot/timescaledb.sh replica stop

db-replica-status:
	@bash boot/timescaledb.sh replica status

run: venv db
	exec $(VENV)/bin/gunicorn -c boot/gunicorn.conf.py main:app

# Test files run on TEST_WORKERS processes (pytest-xdist), a file's tests together on one: every
# module makes its own schema and servers on free ports, so files do not meet. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: venv-dev db browser
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

bench: venv-dev db
	$(PY) -m bench $(BENCH_ARGS)

# Recompute the rollups from raw events: everything, or the UTC days of a range, e.g.
#   make rollups-rebuild ROLLUP_ARGS="--start 2025-03-01T00:00:00Z --end 2025-03-08T00:00:00Z"
# or only the rollup tables an upgrade added (not ready until filled):
#   make rollups-rebuild ROLLUP_ARGS=--missing
rollups-rebuild: venv db
	$(PY) -m analytics.rollups rebuild $(ROLLUP_ARGS)

# Migrate the schema to head by hand (startup does it too); other commands, e.g.
#   make migrate MIGRATE_ARGS=current      (or history, heads, "revision -m 'add x'")
MIGRATE_ARGS ?= upgrade
migrate: venv db
	$(PY) -m analytics.migrations $(MIGRATE_ARGS)

# A new API key, printed once as the last line, e.g.  make key NAME=dashboard SCOPE=read
# (SCOPE: read, ingest, admin or share; also `python -m analytics keys share|list|revoke NAME`)
SCOPE ?= read
key: venv db
	@test -n "$(NAME)" || { echo "usage: make key NAME=dashboard SCOPE=read" >&2; exit 2; }
	@$(PY) -m analytics keys create --name "$(NAME)" --scope "$(SCOPE)"
# Drop raw events and rollups past RETENTION_DAYS / ROLLUP_RETENTION_DAYS now (the service also
# does it daily by itself); RETENTION_ARGS=status shows the horizons.
retention: venv db
	$(PY) -m analytics retention $(RETENTION_ARGS)
# Load events from files (our export as NDJSON/CSV, or Umami's website_event CSV; gzip too),
# resumable: run it again after an interruption, e.g.
#   make import FILE="history.ndjson.gz umami.csv" IMPORT_ARGS="--chunk-rows 20000"
import: venv db
	@test -n "$(FILE)" || { echo 'usage: make import FILE=path [IMPORT_ARGS=...]'; exit 2; }
	$(PY) -m analytics import $(IMPORT_ARGS) $(FILE)

# Rebuild the tracker (src/analytics/web/static/tracker.min.js) from tracker.src.js with the
# esbuild pinned in package.json/package-lock.json. Needs node/npm; `make test` never does.
tracker:
	@command -v npm >/dev/null || { echo "make tracker needs node and npm" >&2; exit 2; }
	npm ci --no-audit --no-fund
	npm run -s tracker
	$(PYTHON) boot/tracker_stamp.py "esbuild $$(node -p 'require("esbuild/package.json").version')"

# Refresh the vendored uPlot of the dashboard (src/analytics/web/static/vendor/uplot/) from the
# version pinned in package.json/package-lock.json. Needs node/npm; `make test` never does.
UPLOT_DIR := src/analytics/web/static/vendor/uplot
uplot:
	@command -v npm >/dev/null || { echo "make uplot needs node and npm" >&2; exit 2; }
	npm ci --no-audit --no-fund
	mkdir -p $(UPLOT_DIR)
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE $(UPLOT_DIR)/
	node -p '"uPlot " + require("uplot/package.json").version' > $(UPLOT_DIR)/VERSION

# docs/dashboard.png: the dashboard over seeded data, by the browser test that checks it.
screenshot: venv-dev db browser
	DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(PY) -m pytest -q tests/test_dashboard_browser.py -k every_number

# A headless Chromium for the browser tests (tests/test_tracker_browser.py), installed when missing.
browser:
	@bash boot/chromium.sh install

clean:
	rm -rf $(VENV) .pytest_cache
