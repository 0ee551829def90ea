# The two commands an SRE needs: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
export OPSCTL_CACHE_DIR ?= $(CURDIR)/.cache
PYTEST_ARGS ?=
# `make test` runs two pytest-xdist workers; the tests of each session stack or cluster stay on
# one worker (tests/conftest.py), so each starts once. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2

.PHONY: help setup setup-demo setup-cluster demo test lint format typecheck test-unit test-integration test-e2e bench lock clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: setup-demo setup-cluster ## Install everything `make test` needs. Fast when nothing changed.

# The demo runs only the local process stack: no simulated cluster, no Pulumi engine.
setup-demo: ## Install what `make demo` needs: Debian packages, jars, virtualenv, redis_exporter.
	@scripts/setup/apt.sh
	@scripts/setup/jars.sh
	@scripts/setup/venv.sh
	@scripts/setup/gotools.sh redis_exporter

setup-cluster: setup-demo ## Build the cluster tools (kube-apiserver, kwok, helm, ...), CRDs and Pulumi engine.
	@scripts/setup/gotools.sh
	@scripts/setup/crds.sh

demo: setup-demo ## Run the main job on the local stack.
	@$(BIN)/opsctl demo

test: setup lint ## Run lint, type checks and every test tier (unit, integration, e2e).
	@$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=30 $(PYTEST_ARGS)

lint: setup-demo ## ruff (lint + format check) and mypy --strict on opsctl/.
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy

format: setup-demo ## Apply ruff's fixes and formatting.
	@$(BIN)/ruff check --fix .
	@$(BIN)/ruff format .

test-unit: setup ## Only the unit tier.
	@$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: setup ## Only the integration tier.
	@$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e: setup ## Only the e2e tier.
	@$(BIN)/pytest -m e2e $(PYTEST_ARGS)

bench: setup ## Run the benchmarks and print their figures (see docs/benchmarks.md).
	@$(BIN)/python -m benchmarks.cli_startup

lock: ## Re-resolve requirements.lock from pyproject.toml.
	@$(OPSCTL_CACHE_DIR)/tools/uv-*/bin/uv pip compile -q --python-version 3.11 --extra dev --generate-hashes pyproject.toml -o requirements.lock

clean: ## Remove the virtualenv and caches (keeps nothing downloaded or built).
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis
