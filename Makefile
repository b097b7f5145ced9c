# The two commands of the README: `make demo` runs the product, `make test` the test suite.
# Both work on a fresh Debian machine with python3 and this repository, as root.
PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
# make test's pytest-xdist workers: the end-to-end tests run in one, the rest in the others
# (tests/conftest.py). 0 runs everything in one process.
TEST_WORKERS ?= 2
# Where the demo listens: the portal on DEMO_PORT, JupyterHub on DEMO_HUB_PORT; the Hub's own
# API and its proxy's API on loopback ports. Pick others if these are taken.
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
DEMO_HUB_PORT ?= 8001
DEMO_HUB_API_PORT ?= 8081
DEMO_PROXY_API_PORT ?= 8082

.PHONY: venv demo test test-all test-services lint requirements mutants

venv: $(VENV)/.installed
# The hubclient (Hub side) goes in too: the demo's Hub and the end-to-end tests load it; and
# the start wrapper (outpost-start-server), which servers started from this venv run.
$(VENV)/.installed: requirements/dev.txt hubclient/pyproject.toml startserver/pyproject.toml
	@# Debian's python3 has no ensurepip until python3-venv is installed.
	$(PYTHON) -m venv $(VENV) || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && \
		$(PYTHON) -m venv --clear $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/dev.txt
	$(VENV)/bin/pip install -q --no-deps -e ./hubclient -e ./startserver
	touch $@

# The portal (SQLite and a private Redis in var/) and a JupyterHub using it; secrets
# made once in var/demo.env. Ctrl-C stops everything.
demo: venv
	VENV=$(VENV) DEMO_HOST=$(DEMO_HOST) DEMO_PORT=$(DEMO_PORT) DEMO_HUB_PORT=$(DEMO_HUB_PORT) \
		DEMO_HUB_API_PORT=$(DEMO_HUB_API_PORT) DEMO_PROXY_API_PORT=$(DEMO_PROXY_API_PORT) \
		scripts/demo

# PostgreSQL and Redis on 127.0.0.1 (installed and started if they do not answer).
test: venv test-services
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)
	@# The direct reads and the flavor terms once more on SQLite, the embedded default's
	@# database: its driver gives dates, booleans and UUIDs as text and integers.
	DATABASE_URL=sqlite://:memory: $(VENV)/bin/pytest -q tests/outposts/test_api_direct.py tests/outposts/test_api_direct_start.py tests/flavors/test_terms.py tests/test_compiled.py

# The same with the full sizes: 1,000 starts before the burst of the embedded load test and
# 90 s of API fuzzing (CI runs the smaller defaults of `make test`; README.md, Tests).
test-all: venv test-services
	PORTAL_LOAD_FILL=1000 PORTAL_FUZZ_SECONDS=90 $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)
	DATABASE_URL=sqlite://:memory: $(VENV)/bin/pytest -q tests/outposts/test_api_direct.py tests/outposts/test_api_direct_start.py tests/flavors/test_terms.py tests/test_compiled.py

test-services:
	scripts/test-services

# Mutation testing (bench/README.md), not part of CI: mutmut mutates what [tool.mutmut] in
# pyproject.toml names and runs the fast tests against each mutant (scripts/mutants). On
# databases of its own, never the test suite's (`portal`, Redis db 15): each of its parallel
# runs makes a test database test_mutants_<n> and has a Redis db of its own, the n-th of
# MUTANTS_BROKER_URLS; as many runs as Redis dbs (tests/support/mutmut_plugin.py).
MUTANTS_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mutants
MUTANTS_BROKER_URLS ?= redis://127.0.0.1:6379/13 redis://127.0.0.1:6379/14
# Optional: only these mutants (names or globs), e.g. make mutants MUTANTS='flavors.*'
MUTANTS ?=
mutants: venv test-services
	DATABASE_URL=$(MUTANTS_DATABASE_URL) CELERY_BROKER_URL=$(firstword $(MUTANTS_BROKER_URLS)) \
		MUTANTS_BROKER_URLS="$(MUTANTS_BROKER_URLS)" VENV=$(VENV) MUTANTS="$(MUTANTS)" scripts/mutants

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Re-pin requirements/*.txt after editing requirements/*.in.
requirements: venv
	$(VENV)/bin/pip-compile -q --strip-extras --no-header --allow-unsafe requirements/base.in -o requirements/base.txt
	$(VENV)/bin/pip-compile -q --strip-extras --no-header --allow-unsafe requirements/dev.in -o requirements/dev.txt
	sed -i '/^--extra-index-url file:/d' requirements/base.txt requirements/dev.txt
