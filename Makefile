# nvdocker-setup: `make demo` runs the main job on a sandbox, `make test` runs every test.
SHELL := /bin/bash
SYSTEM_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help deps venv test test-pypi test-debian demo bench clean

help:
	@echo "make demo    run install/uninstall on a sandbox daemon.json"
	@echo "make test    install test dependencies, run the suite with PyPI libraries and with Debian 12's"
	@echo "make bench   CLI start-up and no-op install medians (Debian's python3 and libraries)"

# apt packages the tests need (installed when run as root and missing).
deps:
	@bash scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.stamp

# Current PyPI releases of typer, rich, jsonschema, in a venv.
test-pypi: deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian 12's python3-typer 0.7.0, python3-rich 13.3.1, python3-jsonschema 4.10.3: what the packages run on.
test-debian: deps
	@bash scripts/run-debian-tests.sh $(PYTEST_ARGS)

test: test-pypi test-debian

demo: deps venv
	@bash scripts/demo.sh $(VENV)/bin/nvdocker-setup

bench: deps
	$(SYSTEM_PYTHON) benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
