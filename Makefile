# One task runner for the project. `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run setup test test-deps test-fast lint typecheck services worker worker-maintenance worker-training beat dicom-receiver bench-faults compose-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@# python-ldap (LDAP sign-in) builds against OpenLDAP's and Cyrus SASL's headers.
	@if [ ! -e /usr/include/ldap.h ] || [ ! -e /usr/include/sasl/sasl.h ]; then \
		echo "Installing libldap2-dev and libsasl2-dev (python-ldap builds against them)"; \
		$(APT_INSTALL) libldap2-dev libsasl2-dev; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed  ## create the virtualenv, migrate, create demo users, activate the bundled model
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_demo

run: setup  ## set up and run the portal on the embedded default (SQLite, tasks in process)
	$(PY) manage.py runserver $(HOST):$(PORT)

services:  ## start PostgreSQL, Redis and the Orthanc PACS on 127.0.0.1 if they are not running
	./scripts/ensure-services.sh

# Root installs system packages directly; anyone else through sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL := $(SUDO) sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$$@" >/dev/null' apt-install

# The Compose client validates docker-compose.yml (no Docker engine is needed); the browser tests drive
# Debian's headless Chromium (Playwright never downloads a browser here). Nothing happens when both are present.
test-deps:  ## the tools the tests drive besides Python (a Compose client, headless Chromium, dciodvfy, slapd, dcmtk, openssl): from Debian if missing
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then \
		echo "Installing docker-compose"; $(APT_INSTALL) docker-compose; fi
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "Installing chromium and chromium-driver"; $(APT_INSTALL) chromium chromium-driver; fi
	@if ! command -v dciodvfy >/dev/null; then \
		echo "Installing dicom3tools (dciodvfy validates the DICOM objects sent to PACSes)"; \
		$(APT_INSTALL) dicom3tools; fi
	@if ! command -v slapd >/dev/null && [ ! -x /usr/sbin/slapd ]; then \
		echo "Installing slapd and ldap-utils (the LDAP sign-in tests run a real OpenLDAP server)"; \
		$(APT_INSTALL) slapd ldap-utils; fi
	@if ! command -v echoscu >/dev/null || ! command -v storescu >/dev/null; then \
		echo "Installing dcmtk (the DICOM receiver's tests send films with echoscu and storescu)"; \
		$(APT_INSTALL) dcmtk; fi
	@if ! command -v openssl >/dev/null; then \
		echo "Installing openssl (test certificates for DICOM TLS and HTTPS webhooks)"; $(APT_INSTALL) openssl; fi

test: $(VENV)/.installed services test-deps  ## the whole test suite against real PostgreSQL, Redis, Orthanc, Celery workers and Chromium
	$(PY) -m pytest

# PYTHONDONTWRITEBYTECODE emptied: the quick loop keeps compiled modules (and pytest's rewritten tests) between
# runs, which halves its start on a machine whose environment turns bytecode caching off. Its temporary files
# (every test's media folder: about 1 GB of films and derivatives) go to a folder of its own in memory, removed
# at the end: pytest would otherwise spend some 13 s of a later run unlinking them from disk.
# Two pytest-xdist processes, one per core of these machines, each with its own test database (copied from a
# migrated template, tests/database.py) and Redis database. xdist's default `load` distribution hands each
# process the tests in collection order, so each still runs pytest-django's plain database tests before the
# transactional ones, whose flush empties the tables (rows written by data migrations included).
FAST_TMP ?= $(if $(wildcard /dev/shm),/dev/shm,/tmp)
TEST_FAST_WORKERS ?= 2
test-fast: $(VENV)/.installed services  ## the quick loop: everything but the e2e, slow and browser tests (timed in the README)
	@tmp=$$(mktemp -d $(FAST_TMP)/portal-test-fast.XXXXXX); \
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -m "not e2e and not slow and not browser" -q --basetemp=$$tmp \
		-n $(TEST_FAST_WORKERS); \
	status=$$?; rm -rf $$tmp; exit $$status

lint: $(VENV)/.installed  ## ruff and bandit
	$(VENV)/bin/ruff check .
	$(VENV)/bin/bandit -q -r portal diagnostics worker ml -ll -x diagnostics/migrations

typecheck: $(VENV)/.installed  ## mypy
	$(VENV)/bin/mypy portal diagnostics worker ml

# Pool processes give memory back as in docker-compose.yml (docs/operations.md): replaced after this many
# tasks, or after a task that leaves one above this many KiB.
WORKER_MAX_TASKS_PER_CHILD ?= 1000
WORKER_MAX_MEMORY_PER_CHILD_KB ?= 1048576
TRAINING_WORKER_MAX_TASKS_PER_CHILD ?= 1
WORKER_LIMITS = --max-tasks-per-child $(WORKER_MAX_TASKS_PER_CHILD) --max-memory-per-child $(WORKER_MAX_MEMORY_PER_CHILD_KB)

worker: $(VENV)/.installed  ## a Celery worker for the inference queue (needs CELERY_BROKER_URL)
	$(VENV)/bin/celery -A worker worker -Q inference -l info $(WORKER_LIMITS)

worker-maintenance: $(VENV)/.installed  ## a Celery worker for beat's housekeeping (the reconciler)
	$(VENV)/bin/celery -A worker worker -Q maintenance --concurrency 1 -l info $(WORKER_LIMITS)

worker-training: $(VENV)/.installed  ## a Celery worker for retraining runs (loads TensorFlow)
	$(VENV)/bin/celery -A worker worker -Q training --concurrency 1 --prefetch-multiplier 1 -l info \
		--max-tasks-per-child $(TRAINING_WORKER_MAX_TASKS_PER_CHILD)

beat: $(VENV)/.installed  ## the Celery beat scheduler
	$(VENV)/bin/celery -A worker beat -l info

dicom-receiver: $(VENV)/.installed  ## the DICOM receiver PACSes send films to (C-STORE SCP, port DICOM_PORT, 11112)
	$(PY) manage.py dicom_receiver

BENCH_FILMS ?= ../shared/data/chest_xray/val
BENCH_DATA ?= $(or $(PNEUMONIA_DATA_DIR),../shared/data/chest_xray)

bench: $(VENV)/.installed services  ## the whole benchmark (~20 min, waits for training to finish) -> docs/performance.md
	$(PY) -m benchmarks --wait-for-idle 1800 $(if $(wildcard $(BENCH_FILMS)),--films-dir $(BENCH_FILMS)) \
		$(if $(wildcard $(BENCH_DATA)),--data-dir $(BENCH_DATA))

bench-faults: $(VENV)/.installed services  ## inject worker kills, Redis restarts, DB disconnects, web kills, queue loss; count what is left
	$(PY) -m benchmarks.faults --json var/bench/faults.json

compose-check:  ## validate docker-compose.yml (compose v2 plugin, or Debian's docker-compose 1.29)
	if docker compose version >/dev/null 2>&1; then SECRET_KEY=check docker compose config -q; else SECRET_KEY=check docker-compose config -q; fi

clean:  ## remove the virtualenv and local data
	rm -rf $(VENV) var
