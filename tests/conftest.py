"""Fixtures shared by every test directory."""

import os
import stat

import pytest

from tests.support import host_binaries


def pytest_configure(config):
    """No test may run a container engine the host has installed (tests/support/host_binaries.py)."""
    host_binaries.install()


def pytest_sessionfinish(session, exitstatus):
    if host_binaries.violations:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("host engine binaries were run by tests (issue #18):", red=True)
            for line in sorted(set(host_binaries.violations)):
                reporter.write_line("  " + line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def runtime_binary(tmp_path):
    """A root-owned, 0755 stand-in for the runtime shim, in a directory only root can write."""
    bindir = tmp_path / "bin"
    bindir.mkdir(mode=0o755)
    os.chmod(str(bindir), 0o755)
    binary = bindir / "nvdocker-runtime"
    binary.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    os.chmod(str(binary), stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    if os.geteuid() != 0:
        pytest.skip("the trust checks want a root-owned runtime binary; run the suite as root")
    return str(binary)
