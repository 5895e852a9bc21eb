# Every target sets itself up from the project's own files: a fresh clone needs only Python 3.11+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 8000
EVENT ?= events/route.json
# Wheels for the local platform, downloaded during setup so the artifact test runs offline.
WHEELHOUSE := .cache/wheels
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.stamp
# How `sam build` fetches the runtime requirements: for the function's arm64 / Python 3.12.
ARTIFACT_PIP_FLAGS ?= --platform manylinux2014_aarch64 --implementation cp --python-version 3.12 --only-binary=:all:
# The function's runtime, which compiles the artifact's .pyc files (sam build needs it on PATH too).
ARTIFACT_PYTHON ?= python3.12

.PHONY: setup run serve test lint bench invoke validate-template clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(WHEELHOUSE_STAMP): requirements.txt $(STAMP)
	mkdir -p $(WHEELHOUSE)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check -r requirements.txt -d $(WHEELHOUSE)
	touch $@

## make run: the development server on 127.0.0.1:$(PORT) with the mock provider (flask run).
run: $(STAMP)
	$(BIN)/flask --app costroute.wsgi:app run --host 127.0.0.1 --port $(PORT)

## make serve: the production-style server on 127.0.0.1:$(PORT): gunicorn, gthread workers; settings in
## gunicorn.conf.py, overridable from the environment (WEB_CONCURRENCY, GUNICORN_THREADS, GUNICORN_TIMEOUT, ...).
## GET /metrics counts across workers through prometheus_client's files in PROMETHEUS_MULTIPROC_DIR, emptied
## before each start (a previous run's files would be counted again).
PROMETHEUS_MULTIPROC_DIR ?= $(abspath .cache/prometheus)
serve: $(STAMP)
	rm -rf "$(PROMETHEUS_MULTIPROC_DIR)" && mkdir -p "$(PROMETHEUS_MULTIPROC_DIR)"
	PORT=$(PORT) PROMETHEUS_MULTIPROC_DIR="$(PROMETHEUS_MULTIPROC_DIR)" $(BIN)/gunicorn -c gunicorn.conf.py costroute.wsgi:app

## make test: lint (ruff), types (mypy, strict) and the whole suite; each must find nothing.
test: $(STAMP) $(WHEELHOUSE_STAMP) lint
	WHEELHOUSE=$(abspath $(WHEELHOUSE)) $(BIN)/python -m pytest

## make lint: ruff over the whole tree and mypy (strict) over the package and the entrypoints.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## make bench: every benchmark, a table on stdout and bench/results/latest.json (BENCH_ARGS=--quick: a smoke run).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## make invoke EVENT=events/route.json: the Lambda handler with one event, no Docker.
invoke: $(STAMP)
	$(BIN)/python handler.py $(EVENT)

## make validate-template: sam validate --lint, from aws-sam-cli in a virtual environment of its own.
validate-template:
	test -x .cache/samcli/bin/sam || ($(PYTHON) -m venv .cache/samcli && .cache/samcli/bin/pip install --quiet aws-sam-cli)
	SAM_CLI_TELEMETRY=0 .cache/samcli/bin/sam validate --lint --template template.yaml

## Called by `sam build` (BuildMethod: makefile) with ARTIFACTS_DIR set: handler, package, runtime pins.
# --upgrade: a rebuild into the same folder replaces the packages instead of keeping the old ones.
build-RouterFunction:
	test -n "$(ARTIFACTS_DIR)"
	mkdir -p "$(ARTIFACTS_DIR)"
	cp handler.py "$(ARTIFACTS_DIR)/"
	rm -rf "$(ARTIFACTS_DIR)/costroute"
	cp -r src/costroute "$(ARTIFACTS_DIR)/costroute"
	find "$(ARTIFACTS_DIR)/costroute" -name __pycache__ -prune -exec rm -rf {} +
	# A registry too large for the environment or SSM ships in the artifact (template parameter RegistryFile=registry.json,
	# read from /var/task): copied when the repository root has one (checked to be JSON), and never left over from a build.
	rm -f "$(ARTIFACTS_DIR)/registry.json"
	if [ -f registry.json ]; then $(PYTHON) -m json.tool registry.json > /dev/null && cp registry.json "$(ARTIFACTS_DIR)/registry.json"; fi
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-compile --upgrade -r requirements.txt \
		-t "$(ARTIFACTS_DIR)" $(ARTIFACT_PIP_FLAGS)
	# /var/task is read-only: without shipped .pyc files every cold start compiles every module.
	# unchecked-hash: the zip's timestamps cannot invalidate them; the runtime's Python must compile.
	$(ARTIFACT_PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)"

clean:
	rm -rf $(VENV) .cache .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis
