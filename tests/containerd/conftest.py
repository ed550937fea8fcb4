"""Private containerd daemons, one per version (1.6, 1.7, 2.1) per test module."""

import pytest

from tests.support.containerd import BY_NAME, RELEASES, PrivateContainerd, containerd_or_skip


@pytest.fixture(scope="module", params=[release.name for release in RELEASES], ids=lambda name: "containerd" + name)
def private_containerd(request):
    """A running private containerd with the tiny image imported, shared by a module's tests of one
    version; stopped, unmounted and removed afterwards (containers and shims included)."""
    release = BY_NAME[request.param]
    daemon = PrivateContainerd(release, containerd_or_skip(release))
    try:
        daemon.start()
        daemon.import_tiny_image()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def containerd(private_containerd):
    """The module's daemon, running on its base config when the test starts and when it ends."""
    daemon = private_containerd
    yield daemon
    daemon.remove_containers()
    argv_config = daemon.argv[-1]
    if argv_config != daemon.config_path or not daemon.is_running():
        daemon.stop()
        daemon.start()


# The C launcher and the simulated 2-GPU driver root of the runtime tests, for the end-to-end tests.
from tests.runtime.conftest import driver_root, launcher  # noqa: E402,F401
