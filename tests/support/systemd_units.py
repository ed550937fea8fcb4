"""`systemd-analyze verify` of unit files in a scratch root (``--root``), so that nothing is loaded
into the host's systemd (the test machines do not even run it as PID 1). verify starts a dry
transaction, so the root gets stub units for what ours pull in, and ExecStart's program must
exist there: the caller lays out the units and the programs, this adds the stubs and runs it."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
#: What verify pulls in besides the units (default dependencies and the [Install] target).
STUB_UNITS = ("sysinit.target", "basic.target", "shutdown.target", "paths.target", "multi-user.target",
              "local-fs.target")


def systemd_analyze() -> str:
    """Debian's systemd-analyze (package systemd; make deps installs it), or a skip (a failure
    under CI=true)."""
    import pytest

    found = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if found is None:
        reason = "systemd-analyze is not installed (Debian's systemd package; make deps installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: " + reason, pytrace=False)
        pytest.skip(reason)
    return found


def verify(root: Path, units: Sequence[str], unit_dir: str = "lib/systemd/system") -> subprocess.CompletedProcess:
    """Run ``systemd-analyze verify --root ROOT`` on ``units`` (paths relative to ``root``), after
    adding stub units to ``root/unit_dir``. The caller asserts on returncode and output: verify
    prints problems and still exits 0 for some of them."""
    analyze = systemd_analyze()
    directory = root / unit_dir
    directory.mkdir(parents=True, exist_ok=True)
    for name in STUB_UNITS:
        stub = directory / name
        if not stub.exists():
            stub.write_text("[Unit]\nDescription=stub {}\n".format(name))
    return subprocess.run(
        [analyze, "verify", "--man=no", "--root", str(root)] + list(units),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60,
        env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"},
    )


def security(root: Path, unit: str, threshold: int) -> subprocess.CompletedProcess:
    """``systemd-analyze security --offline=yes`` of ``unit`` (relative to ``root``): exits non-zero
    when the exposure level (0-10, shown as 0-100 to --threshold) is above ``threshold``."""
    analyze = systemd_analyze()
    return subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", "--threshold={}".format(threshold),
         "--root", str(root), unit],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60,
        env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"},
    )
