# nvdocker-setup: `make demo` runs the main job on a sandbox, `make test` runs every test.
SHELL := /bin/bash
SYSTEM_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help deps auto-deps venv lint test test-pypi test-debian test-kubernetes test-latest demo bench clean

help:
	@echo "make demo    run install/uninstall on a sandbox daemon.json"
	@echo "make test    install test dependencies, run the lint gate, the suite with PyPI libraries and with Debian 12's"
	@echo "make lint    ruff and mypy, zero findings"
	@echo "make bench   CLI start-up and no-op install medians (Debian's python3 and libraries); as root the runtime overhead guard"
	@echo "make test-latest  the suite on the newest PyPI releases (not in CI; constraints/pypi.txt pins make test)"

# Debian packages the tests need (installed when run as root and missing): tools and Debian's
# Python libraries only, never docker.io/containerd/runc (the tests unpack Debian's Docker into
# /var/cache/nvdocker-tests instead). `make deps` installs them; the targets below do it too,
# except on a host that runs Docker from another source, where they only say what is missing.
deps:
	@bash scripts/install-deps.sh

auto-deps:
	@bash scripts/install-deps.sh --auto

# The PyPI pass runs on the exact releases of constraints/pypi.txt (the ones that passed), so a new
# release on PyPI cannot turn `make test` red; `make test-latest` shows what the newest ones change.
CONSTRAINTS := constraints/pypi.txt

$(VENV)/.stamp: pyproject.toml $(CONSTRAINTS)
	rm -rf $(VENV)
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,lint]' -c $(CONSTRAINTS)
	touch $@

venv: $(VENV)/.stamp

# The gate: ruff (pyflakes, pycodestyle, bugbear, isort) and mypy (check_untyped_defs), zero findings.
lint: venv
	$(VENV)/bin/ruff check nvdocker_setup tests benchmarks scripts
	$(VENV)/bin/mypy

# The pinned PyPI releases (constraints/pypi.txt) of typer, rich, jsonschema, tomlkit, grpcio, in a venv.
test-pypi: auto-deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian 12's python3-typer 0.7.0, python3-rich 13.3.1, python3-jsonschema 4.10.3: what the packages run on.
# The CDI consumer tests (podman 4.3/5.4, Docker 26/28) exercise the spec and the engines, not the
# Python libraries, and podman 4.3 takes ~20 s a container here: they run once, in test-pypi.
# Likewise the DaemonSet end-to-end tests (tests/kubernetes; `make test-kubernetes` runs only them).
DEBIAN_PYTEST_ARGS ?= --ignore=tests/newer_docker/test_cdi_consumers.py --ignore=tests/kubernetes/test_daemonset_e2e.py

test-debian: auto-deps
	@bash scripts/run-debian-tests.sh $(DEBIAN_PYTEST_ARGS) $(PYTEST_ARGS)

test: lint test-pypi test-debian test-packages test-fleet

# Not in CI: the newest PyPI releases of everything (no constraints), in .venv-latest, on the unit
# tests and the lint gate. What breaks here is what the next constraints upgrade has to fix; then
# `.venv-latest/bin/pip freeze --exclude-editable > constraints/pypi.txt` (plus its header) in its
# own commit.
LATEST := .venv-latest
test-latest: auto-deps
	rm -rf $(LATEST)
	$(SYSTEM_PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade -e '.[test,lint]'
	$(LATEST)/bin/pip list --format=freeze | grep -iE '^(typer|rich|jsonschema|tomlkit|grpcio|pytest|hypothesis|ruff|mypy)=='
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

# The node agent, the manifests (kubectl kustomize, kubernetes-validate) and the DaemonSet on private nodes.
test-kubernetes: auto-deps venv
	$(PY) -m pytest tests/kubernetes $(PYTEST_ARGS)

demo: auto-deps venv
	@bash scripts/demo.sh $(VENV)/bin/nvdocker-setup

# As root also the runtime's overhead guard: fails when 3 consecutive medians of the 2-GPU create
# exceed runc's by +20 ms or passthrough by +1 ms (builds the launcher in a temp dir, uses the test
# cache's runc; touches nothing else on the host).
bench: auto-deps
	$(SYSTEM_PYTHON) benchmarks/cli_startup.py
	@if [ "$$(id -u)" = 0 ]; then $(SYSTEM_PYTHON) benchmarks/runtime_overhead.py --guard --passthrough-runs 101 --create-runs 31; \
	else echo "make bench: the runtime overhead guard needs root (runc create); run it with sudo"; fi

clean:
	rm -rf $(VENV) $(LATEST) build dist *.egg-info .pytest_cache .hypothesis

# ---- Debian and RPM packages (issue #6) -------------------------------------------------------
# Built from a copy of the working tree (debian/export-tree.sh), with the system interpreter first
# on PATH (pybuild runs python3.X from PATH), into $(PKG_OUT).
PKG_OUT ?= dist
PACKAGING_PYTEST_ARGS ?= -q --durations=10
SYSTEM_PATH := /usr/sbin:/usr/bin:/sbin:/bin

.PHONY: deb rpm packages test-packages

deb: auto-deps
	env PATH=$(SYSTEM_PATH) sh debian/build-debs.sh $(PKG_OUT)

rpm: auto-deps
	env PATH=$(SYSTEM_PATH) sh rpm/build-rpms.sh $(PKG_OUT)

packages: deb rpm

# Build the packages, lintian them, install them into a clean Debian 12 chroot (debootstrap, cached
# in /var/cache/nvdocker-tests) and the RPMs into a scratch root. Needs root; CI=true turns a
# missing tool into a failure. A plain `pytest` run leaves these tests out.
test-packages: auto-deps venv
	$(PY) -m pytest tests/packaging $(PACKAGING_PYTEST_ARGS)

# The Ansible collection (ansible/collections/ansible_collections/nvdocker/gpu, issue #12): its
# ansible-lint and ansible-test sanity gates, and rollouts with Debian 12's ansible and the current
# PyPI one to three Debian 12 host containers (their own dockerd each) on the private test dockerd.
.PHONY: test-fleet
test-fleet: auto-deps venv
	$(PY) -m pytest tests/fleet $(PACKAGING_PYTEST_ARGS)
