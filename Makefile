# Every target installs what it needs: uv (into .tools/ when it is not on PATH), then the locked
# environment (.venv/, from uv.lock). Embedded state goes to $(BANK_MARKETING_HOME).

SHELL := /bin/bash
.DEFAULT_GOAL := help

export BANK_MARKETING_HOME ?= $(CURDIR)/.bank-marketing
export DAGSTER_HOME ?= $(BANK_MARKETING_HOME)/dagster
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
# Compile the environment's bytecode at install: every Dagster step runs in a fresh process that
# imports the code location (dagster, mlflow, scikit-learn), which takes several times longer from
# source, e.g. where PYTHONDONTWRITEBYTECODE is set.
export UV_COMPILE_BYTECODE ?= 1

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.tools/bin/uv
endif
PYTEST_ARGS ?=
# Tests run in parallel processes (pytest-xdist); conftest.py groups them so the session's Ray and
# its replayed stack are each built once. PYTEST_WORKERS=0 runs them in this process.
PYTEST_WORKERS ?= auto
PYTEST := $(UV) run --locked pytest -n $(PYTEST_WORKERS) --dist loadgroup
COMPOSE := docker compose -f docker/compose.yaml --env-file docker/.env

.PHONY: help install run live stop test test-unit test-integration dev serve try lint format bench \
	clean up down scan-secrets audit

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/python -m pip install --quiet uv

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	@touch $@

install: .venv/.synced ## Install the locked environment into .venv/

run: install ## The main job: replay 2009-01..2010-11 through the closed loop, serving the champion
	$(UV) run --locked bank-marketing replay

EVERY ?= 60
live: install ## The loop under the Dagster daemon: land one month every $(EVERY) s, watch http://127.0.0.1:3000
	$(UV) run --locked bank-marketing live --every $(EVERY)

stop: install ## Stop the local Ray that make run (or bank-marketing deploy) left serving
	$(UV) run --locked bank-marketing stop

test: install ## Run all tests: unit, and integration against PostgreSQL on 127.0.0.1:5432
	$(PYTEST) $(PYTEST_ARGS)

test-unit: install ## Run the fast tests only
	$(PYTEST) -m "not integration" $(PYTEST_ARGS)

test-integration: install ## Run the integration tests only
	$(PYTEST) -m integration $(PYTEST_ARGS)

dev: install ## Open the Dagster UI on the embedded instance (http://127.0.0.1:3000)
	$(UV) run --locked bank-marketing init
	@# Started from DAGSTER_HOME, so the stack's top-level dagster.yaml is not mistaken for it.
	cd "$(DAGSTER_HOME)" && $(UV) run --project "$(CURDIR)" --locked \
		dagster dev -w "$(CURDIR)/workspace.yaml"

serve: install ## Serve the champion over HTTP on local Ray (http://127.0.0.1:8000/docs)
	@# The callback puts bank_marketing/serving/proxy.py in front of Serve's HTTP proxy.
	MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(BANK_MARKETING_HOME)/mlflow.db}" \
		RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=bank_marketing.serving.proxy.middlewares \
		$(UV) run --locked serve run bank_marketing/serving/serve_config.yaml

try: install ## Open the page to try the model (needs make serve running)
	$(UV) run --locked streamlit run bank_marketing/serving/try_it.py

lint: install ## Check lint, formatting (ruff) and the layers' import contracts (import-linter)
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked lint-imports

scan-secrets: install ## Scan every commit of the git history for secrets (kingfisher; reviewed allowlist in security/)
	$(UV) run --locked python security/scan_secrets.py

audit: install ## Audit uv.lock's packages for known vulnerabilities (pip-audit on PyPI's data; passes, saying so, when PyPI is out of reach)
	UV="$(UV)" $(UV) run --locked python security/audit_dependencies.py

format: install ## Fix lint and formatting (ruff)
	$(UV) run --locked ruff check --fix .
	$(UV) run --locked ruff format .

bench: install ## Rerun the benchmarks (ingest, training, serving (needs wrk), the replay, the policy backtest, the loop under the daemon) and rewrite BENCHMARKS.md
	$(UV) run --locked python -m bank_marketing.benchmarks.ingest --write BENCHMARKS.md
	$(UV) run --locked python -m bank_marketing.benchmarks.training --write BENCHMARKS.md
	$(UV) run --locked python -m bank_marketing.benchmarks.serving --write BENCHMARKS.md
	$(UV) run --locked python -m bank_marketing.benchmarks.replay --write BENCHMARKS.md \
		--plot docs/replay_roc_auc.png
	$(UV) run --locked python -m bank_marketing.benchmarks.policies --write BENCHMARKS.md \
		--plot docs/policies.png
	$(UV) run --locked python -m bank_marketing.benchmarks.loop --write BENCHMARKS.md

up: docker/.env ## Start the full stack in Docker: Postgres, MLflow, Dagster, Ray Serve, Grafana (docker/README.md)
	$(COMPOSE) up -d --build

down: docker/.env ## Stop the full stack (its volumes stay; add -v by hand to delete them)
	$(COMPOSE) down

docker/.env:
	@echo "docker/.env is missing: copy docker/.env.example to docker/.env and fill in its passwords and tokens" >&2
	@exit 1

clean: ## Delete the embedded state (Dagster, MLflow, monitoring DB, downloads)
	rm -rf "$(BANK_MARKETING_HOME)"
