# Director: the two set-up commands are `make run` and `make test`.
# Both are idempotent on a fresh Debian 12 machine as root.

VENV    ?= .venv
PY      := $(VENV)/bin/python
CONFIG  ?= etc/director.toml
STATE   ?= var

.PHONY: run test deps venv docker images lint types pytest unit unit-postgres integration clean \
	frontend cluster cluster-down

deps:
	bash scripts/install-deps.sh

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	# compat mode puts the repository on sys.path, so twistd finds twisted/plugins/
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	$(PY) -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

# sslyze (the TLS scan of tests/integration/test_router_tls.py) pins an older cryptography
# than the project's: it gets a venv of its own, inside the project's.
SSLYZE_VENV := $(VENV)/sslyze

$(SSLYZE_VENV)/.installed: requirements-sslyze.txt
	test -x $(SSLYZE_VENV)/bin/python || python3 -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements-sslyze.txt
	touch $@

venv: $(VENV)/.installed $(SSLYZE_VENV)/.installed

# The dashboard's scripts and styles: npm packages from the lock file, built by esbuild into
# director/manager/dashboard/static/build/ (not committed). Rebuilt when a source changes.
FRONTEND_BUILD := director/manager/dashboard/static/build/main.js
FRONTEND_SOURCES := $(shell find frontend/src -type f 2>/dev/null) frontend/build.mjs

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

$(FRONTEND_BUILD): frontend/node_modules/.installed $(FRONTEND_SOURCES)
	cd frontend && node build.mjs

frontend: deps $(FRONTEND_BUILD)

docker: deps
	bash scripts/start-docker.sh

# make run builds every base image (Debian, Python, Node.js, PHP); the tests need only
# Python here: the tests of the Node.js and PHP images build those themselves (about 5
# minutes more, only when missing).
IMAGES_ARGS ?=
images: venv docker
	$(VENV)/bin/director images bootstrap $(IMAGES_ARGS)

pytest integration: IMAGES_ARGS = --only director/python:3

run: deps venv frontend docker images
	# keeps an existing config and keys; (re)registers the bundled database servers
	$(VENV)/bin/director init --config $(CONFIG) --state-dir $(STATE)
	$(VENV)/bin/director banner --config $(CONFIG)
	$(VENV)/bin/twistd -n --pidfile=$(STATE)/director.pid director --config $(CONFIG)

# A swarm of CLUSTER_NODES nodes on this machine (a dockerd per network namespace, node 1 the
# manager) with an orchestrator on each, at 10.77.<CLUSTER_OCTET>.N:8100 (nginx :8180); the
# host reaches them over its link 10.77.<CLUSTER_OCTET>.254; on the host the whole front door:
# two managers (127.0.0.1:8000, 127.0.0.2:8000) on one PostgreSQL store and one Redis, two
# routers (fronts 127.0.0.1:80/443 and 127.0.0.2:80/443, each serving the dashboard host and
# every site), the shell (:2322) and the sites' PostgreSQL. See docs/deploy.md ("make cluster").
CLUSTER_PREFIX ?= dcl
CLUSTER_NODES  ?= 2
CLUSTER_OCTET  ?= 0
CLUSTER_ARGS   := --prefix $(CLUSTER_PREFIX) --nodes $(CLUSTER_NODES) --octet $(CLUSTER_OCTET)

cluster: deps venv frontend docker images
	$(PY) -m director.cluster up $(CLUSTER_ARGS)

cluster-down: venv
	$(PY) -m director.cluster down $(CLUSTER_ARGS)

lint: venv
	$(VENV)/bin/ruff check director twisted tests bench
	$(VENV)/bin/ruff format --check director twisted tests bench

types: venv
	$(VENV)/bin/mypy

unit: venv frontend
	$(VENV)/bin/pytest tests/unit

# The unit tests that use the manager's store (marked manager_store) once more, each on a
# fresh database of a throw-away PostgreSQL on a free loopback port (README, "Tests").
unit-postgres: venv frontend
	$(PY) tests/with_postgres.py $(VENV)/bin/pytest -m manager_store tests/unit

integration: venv frontend docker images
	$(VENV)/bin/pytest tests/integration

pytest: venv frontend docker images unit-postgres
	$(VENV)/bin/pytest tests

test: deps venv docker lint types pytest

clean:
	rm -rf $(VENV) build *.egg-info frontend/node_modules director/manager/dashboard/static/build
