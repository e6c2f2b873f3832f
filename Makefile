# Local development and CI entry points. `make test` is what CI runs (through .ci/run).
#
#   make install   install what is missing (apt packages, Azurite, Python packages)
#   make up        install, then start the local stack (Azurite, TLS registry, Functions host)
#   make down      stop the local stack
#   make status    show each part of the stack running/stopped
#   make lint      ruff
#   make typecheck mypy, strict on shared/, functions/, cli/, devhost/, scripts/, bench/ and
#                  tests/fakes.py (settings in pyproject.toml)
#   make unit      the tests on fakes (tests/unit): no install, no stack, well under a minute
#   make test      install, lint, typecheck, stack up, then the whole test suite against the stack
#   make demo      the tutorial on the local stack
#   make bench     the benchmarks (fan-out, list-runs, impact, dashboard, poll, waves, rebase, scale)
#   make checkov   Checkov's Bicep policies on infra/, each finding explained in docs/deploy.md
#                  (not in CI: installs Checkov, ~300 MB, into .stack/checkov once)
#   make smoke-azure  the cloud path end to end on a deployment (not in CI; needs
#                  BASETRIGGER_URL and BASETRIGGER_KEY of it; see docs/deploy.md)
#   make screenshots  the dashboard's views, from the browser tests' story, into docs/img/
#   make chaos     the long mode of the fault, fuzz and secret-canary suite (not in CI, tens of
#                  minutes) on a second stack of its own (never the default one); prints its figures
#                  (deliveries, runs, 5xx, lost, stuck, secret hits); `make test` runs the short mode
#
# Ports and the state folder follow the environment: STACK_DIR, AZURITE_BLOB_PORT,
# AZURITE_QUEUE_PORT, AZURITE_TABLE_PORT, REGISTRY_PORT, HOST_PORT (see docs/local-stack.md).

PYTHON ?= python3
STACK := $(PYTHON) scripts/stack.py
# Runs a command with the stack's settings exported (AzureWebJobsStorage, BASETRIGGER_URL, ...).
# (`eval "$(...)"` alone would succeed even when `env` fails, so its output is checked first.)
WITH_STACK_ENV = stack_env="$$($(STACK) env)" && eval "$$stack_env" &&

.PHONY: install up down status env lint typecheck unit test demo bench checkov smoke-azure screenshots chaos

install:
	@PYTHON=$(PYTHON) bash scripts/install.sh

up: install
	@$(STACK) up

down:
	@$(STACK) down

status:
	@$(STACK) status

env:
	@$(STACK) env

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy

# The fast loop: nothing installed, nothing started; AzureWebJobsStorage is unset so that a test
# that reaches for the stack fails instead of finding a developer's running one.
unit:
	env -u AzureWebJobsStorage $(PYTHON) -m pytest tests/unit -q

# Sequential on purpose (lint needs ruff from install; the tests need the stack).
# --reload-host: the tests must meet the current code, not what a long-running host imported.
test: install
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory typecheck
	@$(STACK) up --reload-host
	@$(WITH_STACK_ENV) $(PYTHON) -m pytest tests -q

demo: up
	@$(PYTHON) scripts/demo.py

bench: up
	@$(WITH_STACK_ENV) $(PYTHON) bench/fanout.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/list_runs.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/impact.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/poll.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/dashboard.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/waves.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/rebase.py
	@$(WITH_STACK_ENV) $(PYTHON) bench/scale.py

# The README's pictures: tests/browser/test_screenshots.py plays their story (real pushes, polls
# and builds, on tables of its own) and saves each view as docs/img/<view>.png; wave-change.png
# comes from the dashboard test of a base change.
screenshots: up
	@$(WITH_STACK_ENV) BASETRIGGER_SCREENSHOTS=docs/img $(PYTHON) -m pytest -q tests/browser/test_screenshots.py \
		tests/browser/test_dashboard.py::test_the_wave_view_shows_what_the_base_push_changed

# Starts and stops a stack of its own on free ports (scripts/chaos.py), so it needs no `up`.
chaos: install
	@$(PYTHON) scripts/chaos.py

# Checkov's Bicep policies; fails on a finding docs/deploy.md does not explain (scripts/checkov_bicep.py).
checkov:
	@$(PYTHON) scripts/checkov_bicep.py

# After `azd up`: eval "$(azd env get-values)"; SMOKE_CREDENTIAL_USERNAME/PASSWORD set (or
# SMOKE_ARGS=--no-credential); BASETRIGGER_URL=https://<app host> BASETRIGGER_KEY=<key> make smoke-azure
smoke-azure:
	@$(PYTHON) scripts/smoke_azure.py $(SMOKE_ARGS)
