"""A simulated 2-GPU driver root, built once per session (tests/support/driver_root.py)."""

import pytest

from tests.support.driver_root import simulated_driver_root_fixture


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)
