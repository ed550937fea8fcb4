"""The guard of tests/support/host_binaries.py: it fires for a host-installed engine binary, and
for no other program; and no test resolves an engine binary by name outside tests/support."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import host_binaries

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path, expected", [
    ("/usr/sbin/runc", True), ("/usr/bin/dockerd", True), ("/usr/local/bin/docker", True),
    ("/usr/bin/containerd", True), ("/opt/bin/crun", True), ("/sbin/conmon", True),
    ("/var/cache/nvdocker-tests/docker20/usr/sbin/runc", False), ("/tmp/x/bin/runc", False),
    ("/usr/bin/python3", False), ("/usr/bin/busybox", False),
])
def test_what_counts_as_a_host_engine(path, expected):
    assert host_binaries.offending(path) is expected


def test_the_hook_refuses_a_host_engine_before_it_runs(tmp_path, monkeypatch):
    """A runc under /usr (a stand-in placed in /usr/local/lib for the test), found on PATH or named
    by its path, is refused before it runs; a runc elsewhere runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root to place a stand-in under /usr")
    directory = Path("/usr/local/lib/nvdocker-guard-test.{}".format(os.getpid()))
    directory.mkdir()
    try:
        fake = directory / "runc"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        monkeypatch.setattr(host_binaries, "violations", [])
        with pytest.raises(host_binaries.HostEngineBinary, match="runc"):
            subprocess.run(["runc", "--version"], env={"PATH": str(directory)}, check=False)
        with pytest.raises(host_binaries.HostEngineBinary):
            subprocess.run([str(fake)], check=False)
        assert len(host_binaries.violations) == 2
        # the same name in the test cache or a temp dir is fine
        own = tmp_path / "runc"
        own.write_text("#!/bin/sh\nexit 0\n")
        own.chmod(0o755)
        assert subprocess.run(["runc"], env={"PATH": str(tmp_path)}, check=False).returncode == 0
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


ENGINES = "|".join(sorted(re.escape(name) for name in host_binaries.ENGINE_BINARIES))
LOOKUP = re.compile(r"""which\(\s*["'](?:{})["']""".format(ENGINES))


def test_no_test_looks_up_an_engine_binary_by_name_outside_the_support_code():
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py")):
        if "support" in path.relative_to(REPO).parts or path.name == "test_host_binaries.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LOOKUP.search(line):
                offenders.append("{}:{}: {}".format(path.relative_to(REPO), number, line.strip()))
    assert not offenders, "use tests/support/sandbox.py engine_binary():\n" + "\n".join(offenders)
