"""Fixtures of the packaging tests (``make test-packages``).

These tests build the .deb and .rpm packages and install them into throwaway Debian 12 roots,
which takes minutes, so a plain ``pytest`` run of the whole suite leaves them out (deselected,
not skipped). They run when asked for by path or marker: ``pytest tests/packaging`` or
``pytest -m packaging``. Once running, a missing tool or missing root is a skip on a developer
machine and a failure in CI (CI=true).
"""

import os
from pathlib import Path

import pytest

from tests.packaging import support
from tests.support.optin import mark_and_deselect

HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", "packaging: builds and installs the Debian/RPM packages (make test-packages)")


def pytest_collection_modifyitems(config, items):
    mark_and_deselect(config, items, HERE, "packaging")


@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    """The three .debs (and the .changes) built from the working tree."""
    support.need_tools("dpkg-buildpackage", "dh", "fakeroot", "gcc")
    return support.build_debs(tmp_path_factory.mktemp("debs"))


@pytest.fixture(scope="session")
def upgrade_version():
    """A version above the tree's, for upgrade tests (dpkg and rpm both order it higher)."""
    return support.source_version() + ".1"


@pytest.fixture(scope="session")
def debs_v2(tmp_path_factory, upgrade_version):
    support.need_tools("dpkg-buildpackage", "dh", "fakeroot", "gcc")
    return support.build_debs(tmp_path_factory.mktemp("debs-v2"), upgrade_version)


@pytest.fixture(scope="session")
def rpms(tmp_path_factory):
    support.need_tools("rpmbuild", "rpm", "gcc")
    return support.build_rpms(tmp_path_factory.mktemp("rpms"))


@pytest.fixture(scope="session")
def rpms_v2(tmp_path_factory, upgrade_version):
    support.need_tools("rpmbuild", "rpm", "gcc")
    return support.build_rpms(tmp_path_factory.mktemp("rpms-v2"), upgrade_version)


@pytest.fixture(scope="session")
def pristine():
    """The cached pristine bookworm chroot (made with debootstrap on first use)."""
    support.need_root()
    support.need_tools("debootstrap", "chroot", "mount", "tar")
    return support.pristine_tarball(support.cache_dir())


@pytest.fixture
def chroot(pristine, tmp_path):
    """A fresh Debian 12 chroot for one test, removed afterwards (mounts first)."""
    archives = support.cache_dir() / "apt-archives"
    root = support.Chroot(pristine, archives, tmp_path)
    try:
        yield root
    finally:
        root.close()
        if os.environ.get("NVDOCKER_PACKAGING_LOG"):
            print("\n".join(root.log))
