"""The config.toml corpus and containerd's own parser (``containerd --config F config dump``) for the tests."""

import os
import subprocess
from typing import Any, Dict, List, Optional, Tuple

import pytest
import tomlkit

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
#: Corpus files and the schema version each one is (the empty file: whatever the reader asks for).
FILES: Dict[str, Optional[int]] = {
    "default-1.6.toml": 2,
    "default-1.7.toml": 2,
    "default-2.1.toml": 3,
    "kubeadm.toml": 2,
    "eks.toml": 2,
    "v1-noversion.toml": 1,
    "kata-comments.toml": 2,
    "dotted-inline.toml": 2,
    "crlf.toml": 2,
    "empty.toml": None,
    "realistic-250.toml": 2,
}
#: containerd releases of the tests: name -> (schema versions it reads, CDI support).
#: containerd 2.1.9 migrates a version 2 file but drops a version 1 file's CRI runtimes ("Ignoring unknown
#: key in TOML for plugin ... containerd runtimes"), so version 1 is checked on 1.6 and 1.7 only.
CONTAINERDS: Dict[str, Tuple[Tuple[int, ...], bool]] = {
    "1.6": ((1, 2), False),
    "1.7": ((1, 2), True),
    "2.1": ((2, 3), True),
}


def corpus_bytes(name: str) -> bytes:
    with open(os.path.join(CORPUS, name), "rb") as handle:
        return handle.read()


def empty_version(release: str) -> int:
    return 3 if release == "2.1" else 2


def cases() -> List[Tuple[str, str]]:
    """(corpus file, containerd release) pairs where that containerd reads that file's schema."""
    out = []
    for name, version in FILES.items():
        for release, (versions, _) in CONTAINERDS.items():
            if version is None or version in versions:
                out.append((name, release))
    return out


_binaries: Dict[str, Tuple[Optional[str], str]] = {}


def containerd_binary(release: str) -> str:
    """The cached containerd of ``release``, fetched first when missing: a skip when it cannot be had,
    a failure under CI=true (as the dockerd-marked tests)."""
    if release not in _binaries:
        try:
            if release == "1.6":
                from tests.support.newer_docker import ensure_docker20

                folder = ensure_docker20()
            elif release == "1.7":
                from tests.support.newer_docker import ensure_docker26

                folder = ensure_docker26()
            else:
                from tests.support.debian_engines import DOCKER28, ensure_engine

                folder = ensure_engine(DOCKER28)
            _binaries[release] = (os.path.join(folder, "usr", "bin", "containerd"), "")
        except Exception as error:  # the fetchers raise their own *Unavailable and OSError
            _binaries[release] = (None, "containerd {} is not available: {}".format(release, error))
    binary, why = _binaries[release]
    if binary is not None and os.access(binary, os.X_OK):
        return binary
    why = why or "{} is not executable".format(binary)
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why + " (the containerd config tests must run in CI)")
    pytest.skip(why)
    raise AssertionError("unreachable")


def config_dump(binary: str, path: str) -> Dict[str, Any]:
    """containerd's merged view of ``path`` (its own parser), as plain data."""
    result = subprocess.run([binary, "--config", path, "config", "dump"], capture_output=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return tomlkit.parse(result.stdout.decode()).unwrap()
