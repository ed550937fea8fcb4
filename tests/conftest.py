"""Fixtures shared by every test directory."""

import os
import stat

import pytest


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
