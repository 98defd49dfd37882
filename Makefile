# Celery Stack — every entry point. `make up` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: from PATH, else as a module of the system Python (installed there on first use).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
# pytest-xdist processes for `make test` (0: one process). Whole files go to one process (--dist loadfile), so a
# file's module-scoped servers and workers start once; most of the suite waits on subprocesses, so three share
# two cores well (README, "Tests").
PYTEST_WORKERS ?= 3

.PHONY: help bootstrap up test lint test-celery check-stack bench faults

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

bootstrap: ## Install uv (if missing) and the locked virtual environment
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
	  echo "installing uv with pip"; python3 -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"; }
	@$(UV) sync --frozen --quiet

# `make up WEB_PORT=8080 FLOWER_PORT=5566 METRICS_PORT=9900 READY_TIMEOUT=600`; unset, the stack's defaults
# (app/portfolio_site/ports.py; mk/cluster.mk reads FLOWER_PORT's from there, `make flower` shares it).
WEB_PORT ?=
METRICS_PORT ?=
READY_TIMEOUT ?=
UP_ARGS = $(if $(WEB_PORT),--web-port $(WEB_PORT)) $(if $(FLOWER_PORT),--flower-port $(FLOWER_PORT)) \
          $(if $(METRICS_PORT),--metrics-port $(METRICS_PORT)) $(if $(READY_TIMEOUT),--ready-timeout $(READY_TIMEOUT))

up: bootstrap ## Run the whole stack locally (embedded Valkey + PostgreSQL unless REDIS_URL/DATABASE_URL are set)
	cd app && $(UV) run --frozen python start_celery_services.py $(strip $(UP_ARGS))

test: bootstrap ## Run every test that needs no cluster (tools are bootstrapped into .tools/)
	$(UV) run --frozen pytest -rs $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

lint: bootstrap ## ruff on all Python code
	$(UV) run --frozen ruff check .

test-celery: bootstrap ## Enqueue one task of each kind on the running `make up` stack
	cd app && $(UV) run --frozen python manage.py test_celery --task=all

check-stack: bootstrap ## Verification checklist against the running `make up` stack
	cd app && $(UV) run --frozen python test_celery_setup.py

bench: bootstrap ## Throughput, latency, memory: raw Redis to the API, one run (~10 min); writes bench/results/, docs/benchmarks.md
	$(UV) run --frozen python -m tests.benchmarks

faults: bootstrap ## Every fault (poison, worker loss, broker/database restart) on real servers; prints sent/succeeded/lost
	$(UV) run --frozen python -m tests.faults --tasks 500

-include mk/*.mk
