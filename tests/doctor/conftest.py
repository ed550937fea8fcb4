"""Fixtures for the doctor tests: simulated hosts, and one private dockerd for the daemon checks."""

import json
import os
import shutil
import tempfile

import pytest

from tests.doctor.simhost import HEALTHY_CONFIG, SimHost
from tests.support.driver_root import DXG_NODE, simulated_driver_root_fixture


@pytest.fixture(scope="session")
def driver_template(tmp_path_factory):
    """The simulated 2-GPU driver root, built once (gcc + ldconfig); hosts copy it."""
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture
def host(tmp_path, driver_template):
    """A healthy simulated host of our own; a test breaks it one way."""
    if os.geteuid() != 0:
        pytest.skip("simulated hosts need root (device nodes, root-owned binaries)")
    return SimHost(str(tmp_path), driver_template)


#: An OCI runtime for the smoke test: on create it adds the simulated GPUs' device nodes to the
#: spec (what our runtime does with NVIDIA_VISIBLE_DEVICES=all), then execs runc. NODES are the
#: (name, major, minor) of the nodes: a native driver's, or WSL2's /dev/dxg.
FAKE_GPU_RUNTIME = """#!/usr/bin/python3
import json, os, shutil, sys
NODES = %s
RUNC = %r
args = sys.argv[1:]
if "create" in args:
    bundle = "."
    for index, arg in enumerate(args):
        if arg in ("--bundle", "-b") and index + 1 < len(args):
            bundle = args[index + 1]
        elif arg.startswith("--bundle="):
            bundle = arg.split("=", 1)[1]
    path = os.path.join(bundle, "config.json")
    with open(path) as handle:
        spec = json.load(handle)
    if "NVIDIA_VISIBLE_DEVICES=all" in spec.get("process", {}).get("env", []):
        linux = spec.setdefault("linux", {})
        rules = linux.setdefault("resources", {}).setdefault("devices", [])
        for name, major, minor in NODES:
            linux.setdefault("devices", []).append(
                {"path": "/dev/" + name, "type": "c", "major": major, "minor": minor, "fileMode": 438, "uid": 0, "gid": 0})
            rules.append({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"})
        with open(path, "w") as handle:
            json.dump(spec, handle)
os.execv(RUNC, [RUNC] + args)
"""
NATIVE_NODES = (("nvidiactl", 195, 255), ("nvidia0", 195, 0), ("nvidia1", 195, 1))
WSL_NODES = (("dxg",) + DXG_NODE,)


@pytest.fixture(scope="session")
def dockerd_sandbox():
    """A private dockerd (no network, temp dirs) with the healthy host's runtime, plus runtimes for
    the smoke test: ``fakegpu`` (adds the GPU nodes), ``fakewsl`` (adds /dev/dxg, as on WSL2),
    ``plainrunc`` (adds nothing), ``broken``."""
    from tests.support.sandbox import DockerdSandbox, dockerd_or_skip, engine_runc

    dockerd_or_skip()
    runc = engine_runc()
    workdir = tempfile.mkdtemp(prefix="nvx.", dir="/tmp")
    fake_runtime = os.path.join(workdir, "fakegpu-runtime")
    fake_wsl_runtime = os.path.join(workdir, "fakewsl-runtime")
    for path, nodes in ((fake_runtime, NATIVE_NODES), (fake_wsl_runtime, WSL_NODES)):
        with open(path, "w") as handle:
            handle.write(FAKE_GPU_RUNTIME % (nodes, runc))
        os.chmod(path, 0o755)
    config = json.loads(json.dumps(HEALTHY_CONFIG))
    config["runtimes"].update({
        "fakegpu": {"path": fake_runtime},
        "fakewsl": {"path": fake_wsl_runtime},
        "plainrunc": {"path": runc},
        "broken": {"path": "/nonexistent/nvx-runtime"},
    })
    sandbox = DockerdSandbox(workdir, daemon_json=(json.dumps(config) + "\n").encode())
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def live_host(host, dockerd_sandbox):
    """The healthy simulated host, with the private dockerd answering on its socket."""
    host.docker_socket = dockerd_sandbox.socket_path
    host.env["DOCKER_HOST"] = dockerd_sandbox.docker_host
    return host


@pytest.fixture
def engine(host):
    """Start a fake Engine API (``engine(**info)``) and point the simulated host at it."""
    from tests.doctor.fake_engine import FakeEngine

    started = []

    def start(**info):
        fake = FakeEngine(**info)
        started.append(fake)
        host.docker_socket = fake.socket_path
        host.env["DOCKER_HOST"] = fake.docker_host
        return fake

    yield start
    for fake in started:
        fake.close()


@pytest.fixture(scope="session")
def tiny_image(dockerd_sandbox):
    """`tiny:latest` (static busybox) imported into the private dockerd, once."""
    return dockerd_sandbox.import_tiny_image()


@pytest.fixture
def docker_cli(host):
    """The real docker CLI on the simulated host's PATH (it is pinned to the socket with -H)."""
    from tests.support.sandbox import engine_binary

    docker = engine_binary("docker")
    os.symlink(docker, os.path.join(host.fakebin, "docker"))
    return docker
