"""A simulated 2-GPU driver root, built once per session (tests/support/driver_root.py), and the
hook in both implementations (tests/support/hooks.py): every test taking ``run_hook`` runs twice."""

import pytest

from tests.support.driver_root import simulated_driver_root_fixture
from tests.support.hooks import IMPLEMENTATIONS, SANITIZE_CFLAGS, HookRunner, build_launcher


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def hook_launcher(tmp_path_factory):
    """The C launcher, which is also the ld cache hook when started as nvdocker-ldcache, as the
    packages build it and with the sanitizers."""
    return {
        "native": build_launcher(tmp_path_factory.mktemp("hook-launcher")),
        "native-sanitized": build_launcher(tmp_path_factory.mktemp("hook-launcher-sanitized"), SANITIZE_CFLAGS),
    }


@pytest.fixture(params=IMPLEMENTATIONS)
def run_hook(request, hook_launcher):
    return HookRunner(request.param, hook_launcher)
