"""Fixtures for the runtime: the simulated driver root, the C launcher, bundles, fake runtimes."""

import json
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional

import pytest

from tests.support.driver_root import simulated_driver_root_fixture, simulated_mig_root_fixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def mig_root(tmp_path_factory):
    """2 GPUs, MIG on GPU 0 (GPU instances 1 and 2, one compute instance each), IMEX channels 0 and 1."""
    return simulated_mig_root_fixture(tmp_path_factory)


@pytest.fixture(scope="session")
def launcher(tmp_path_factory) -> str:
    """The C launcher, built by scripts/build-launcher.sh to hand `create` to this interpreter."""
    if shutil.which("gcc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: gcc is needed to build the launcher")
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("launcher")
    env = dict(os.environ, PYTHON=sys.executable)
    built = subprocess.run(
        ["bash", os.path.join(REPO, "scripts/build-launcher.sh"), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def base_spec(env: Optional[List[str]] = None, **extra: Any) -> Dict[str, Any]:
    """A small OCI spec like the ones containerd hands over."""
    spec: Dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["true"],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + list(env or []), "cwd": "/"},
        "root": {"path": "rootfs"},
        "hostname": "c1",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}, "namespaces": [{"type": "mount"}]},
    }
    spec.update(extra)
    return spec


def write_bundle(directory, spec: Dict[str, Any]) -> bytes:
    """Write ``spec`` as containerd would (compact JSON) and return the bytes."""
    os.makedirs(str(directory), exist_ok=True)
    os.makedirs(os.path.join(str(directory), "rootfs"), exist_ok=True)
    data = json.dumps(spec, separators=(",", ":")).encode()
    with open(os.path.join(str(directory), "config.json"), "wb") as handle:
        handle.write(data)
    return data


def read_config(directory) -> Dict[str, Any]:
    with open(os.path.join(str(directory), "config.json"), "rb") as handle:
        return json.loads(handle.read())


class FakeRuntime:
    """A "real runtime" that records its argv (as JSON) and exits 0."""

    def __init__(self, directory) -> None:
        os.makedirs(str(directory), exist_ok=True)
        self.path = os.path.join(str(directory), "fake-runc")
        self.record = os.path.join(str(directory), "argv.json")
        with open(self.path, "w") as handle:
            handle.write(
                "#!{}\nimport json, sys\nwith open({!r}, 'w') as f:\n    json.dump(sys.argv, f)\n".format(sys.executable, self.record)
            )
        os.chmod(self.path, 0o755)
        self.config = os.path.join(str(directory), "runtime.conf")
        self.log = os.path.join(str(directory), "nvdocker.log")
        self.write_config("runtimes = {}\nlog = {}\ndebug = true\n".format(self.path, self.log))

    def write_config(self, text: str) -> None:
        with open(self.config, "w") as handle:
            handle.write("[runtime]\n" + text)

    def argv(self) -> Optional[List[str]]:
        if not os.path.exists(self.record):
            return None
        with open(self.record) as handle:
            argv = json.load(handle)
        os.unlink(self.record)
        return argv

    def log_lines(self) -> List[str]:
        if not os.path.exists(self.log):
            return []
        with open(self.log) as handle:
            return handle.read().splitlines()

    def env(self, driver_root: Optional[str] = None) -> Dict[str, str]:
        env = dict(os.environ, NVDOCKER_RUNTIME_CONFIG=self.config)
        if driver_root:
            env["NVDOCKER_DRIVER_ROOT"] = driver_root
        return env


@pytest.fixture
def fake_runtime(tmp_path) -> FakeRuntime:
    return FakeRuntime(tmp_path / "fake")
