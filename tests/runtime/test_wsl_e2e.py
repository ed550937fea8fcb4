"""End to end on WSL2 (issue #11 item 5): a private dockerd whose nvidia runtime is our launcher,
with NVDOCKER_DRIVER_ROOT at a simulated WSL2 driver root (dev/dxg, usr/lib/wsl/lib)."""

import json
import os
import sys
import time

import pytest

from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.operations import install
from nvdocker_setup.runtime.config import hook_script
from tests.runtime.test_docker_e2e import CAPTURE_SCRIPT, GpuDocker, device_lines, executable
from tests.support.driver_root import DXG_NODE, WSL_LIB_DIR, wsl_root_or_skip
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip, engine_runc

pytestmark = pytest.mark.dockerd


@pytest.fixture(scope="module")
def wsl_docker(tmp_path_factory, launcher):
    dockerd_or_skip()
    runc = engine_runc()
    work = str(tmp_path_factory.mktemp("wsl-docker"))
    os.chmod(work, 0o755)
    wsl_root = wsl_root_or_skip(os.path.join(work, "wsl"))
    capture = os.path.join(work, "capture")
    bindir = os.path.join(work, "bin")
    hookdir = os.path.join(work, "hookbin")
    for directory in (capture, bindir, hookdir):
        os.makedirs(directory, mode=0o755)
    after = executable(os.path.join(bindir, "capture-after"), CAPTURE_SCRIPT.format(capture=capture, stage="after", target=runc))
    executable(
        os.path.join(hookdir, "nvidia-container-runtime-hook"),
        '#!/bin/sh\nexec {} -I -S {} "$@"\n'.format(sys.executable, hook_script()),
    )
    runtime_conf = os.path.join(work, "runtime.conf")
    with open(runtime_conf, "w") as handle:
        handle.write("[runtime]\nruntimes = {}\n".format(after))
    sandbox = DockerdSandbox(
        os.path.join(work, "dockerd"),
        path_prepend=[hookdir],
        env={"NVDOCKER_DRIVER_ROOT": wsl_root.path, "NVDOCKER_RUNTIME_CONFIG": runtime_conf},
    )
    sandbox.start()
    try:
        ctx = Context(env=dict(os.environ), state_dir=os.path.join(work, "state"))
        install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=launcher), config=sandbox.config_path)
        sandbox.reload()
        deadline = time.monotonic() + 20
        while "nvidia" not in sandbox.info().get("Runtimes", {}):
            assert time.monotonic() < deadline, "dockerd did not pick up the runtime: " + sandbox.log_tail()
            time.sleep(0.2)
        sandbox.import_tiny_image()
        yield GpuDocker(sandbox, capture), wsl_root
    finally:
        sandbox.close()


def test_all_gets_dxg_the_wsl_libraries_nvidia_smi_and_the_ld_cache_folder(wsl_docker):
    docker, wsl_root = wsl_docker
    script = ("ls -l /dev; echo ---; ls {0}; echo ---; cat /etc/ld.so.conf.d/00-nvdocker.conf; echo ---; "
              "nvidia-smi -L; echo ---; cat /etc/ld.so.cache; echo ---; "
              "echo x > {0}/libcuda.so.1 2>&1 || echo read-only").format(WSL_LIB_DIR)
    done = docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all", "tiny", "sh", "-c", script)
    devices, libs, conf, smi, cache, write = done.stdout.decode(errors="replace").split("---\n")
    found = device_lines(devices)
    assert found["dxg"] == tuple(DXG_NODE), devices
    assert not any(name.startswith("nvidia") for name in found)
    assert {"libcuda.so.1", "libcuda.so.1.1", "libdxcore.so", "libnvidia-ml.so.1"} <= set(libs.split()), libs
    assert WSL_LIB_DIR in conf.split()
    assert smi == wsl_root.smi_listing
    assert WSL_LIB_DIR + "/libcuda.so.1\x00" in cache  # the hook's ldconfig ran over the folder
    assert "read-only" in write
    spec = json.loads(docker.captured("after"))
    rules = [rule for rule in spec["linux"]["resources"]["devices"] if rule.get("allow")]
    assert any((rule.get("type"), rule.get("major"), rule.get("minor")) == ("c",) + tuple(DXG_NODE) for rule in rules), rules


def test_index_0_is_all_there_is(wsl_docker):
    docker, _ = wsl_docker
    done = docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=0", "tiny", "ls", "-l", "/dev")
    assert device_lines(done.stdout.decode())["dxg"] == tuple(DXG_NODE)


@pytest.mark.parametrize("selector", ["1", "0,1", "GPU-0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"])
def test_other_selectors_are_refused_with_the_reason(wsl_docker, selector):
    docker, _ = wsl_docker
    done = docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=" + selector, "tiny", "true", check=False)
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "WSL2 gives a container every GPU through the one /dev/dxg node" in stderr, stderr


def test_cuda_requirements_do_not_refuse_an_unknown_version(wsl_docker):
    docker, _ = wsl_docker
    done = docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_REQUIRE_CUDA=cuda>=12.4",
                      "tiny", "true", check=False)
    assert done.returncode == 0, done.stderr.decode()
