"""MIG devices and IMEX channels through CDI on Docker 26.1 (issue #11, item 4).

`cdi generate` on the simulated MIG root (MIG on GPU 0, IMEX channels 0 and 1) writes the GPU spec
and the IMEX spec into a spec directory Docker 26.1 reads (``features.cdi``); ``--device
nvidia.com/gpu=0:1`` and ``--device nvidia.com/imex-channel=0`` then give what the runtime gives.
"""

import json
import os

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from tests.support.driver_root import CAPS_MAJOR, IMEX_MAJOR, NVIDIA_MAJOR, simulated_mig_root_fixture
from tests.support.newer_docker import docker26, docker26_or_skip, sandbox26

pytestmark = pytest.mark.dockerd

LIST_DEVICES = "find /dev -type c -exec stat -c '%n %t:%T' {} +"
CONTROL = {"/dev/nvidiactl", "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}


@pytest.fixture(scope="module")
def mig_root(tmp_path_factory):
    return simulated_mig_root_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def box(tmp_path_factory, mig_root):
    folder = docker26_or_skip()
    work = tmp_path_factory.mktemp("mig26")
    os.chmod(str(work), 0o755)
    cdi_dir = work / "cdi"
    cdi_dir.mkdir(mode=0o755)
    no_config = work / "no-runtime.conf"
    no_config.write_text("")
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(
        app, ["cdi", "generate", "--driver-root", mig_root.path, "--output", str(cdi_dir / "nvdocker.yaml"), "--json"],
        env={"NVDOCKER_RUNTIME_CONFIG": str(no_config), "COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(str(cdi_dir))) == ["nvdocker-imex-channel.yaml", "nvdocker.yaml"]
    assert "nvidia.com/gpu=0:1" in json.loads(result.stdout)["devices"]
    config = {"cdi-spec-dirs": [str(cdi_dir)], "features": {"cdi": True}}
    sandbox = sandbox26(folder, str(work / "d"), json.dumps(config).encode())
    sandbox.start()
    try:
        sandbox.import_tiny_image()
        yield folder, sandbox
    finally:
        sandbox.close()


def devices(box, *flags):
    folder, sandbox = box
    done = docker26(folder, sandbox, "run", "--rm", "--network", "none", *flags, "tiny", "sh", "-c", LIST_DEVICES,
                    check=False, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    found = {}
    for line in done.stdout.decode().splitlines():
        path, _, numbers = line.rpartition(" ")
        if path.startswith("/dev/nvidia"):
            major, minor = numbers.split(":")
            found[path] = (int(major, 16), int(minor, 16))
    return found


def test_a_mig_device_by_cdi_gives_its_gpu_and_cap_nodes_and_nothing_of_gpu_1(box):
    found = devices(box, "--device", "nvidia.com/gpu=0:1")
    assert set(found) - CONTROL == {"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"}
    assert found["/dev/nvidia0"] == (NVIDIA_MAJOR, 0) and found["/dev/nvidia-caps/nvidia-cap22"] == (CAPS_MAJOR, 22)


def test_an_imex_channel_by_cdi_gives_only_that_channel(box):
    found = devices(box, "--device", "nvidia.com/imex-channel=0")
    assert found == {"/dev/nvidia-caps-imex-channels/channel0": (IMEX_MAJOR, 0)}
