"""doctor --smoke's expectation follows the driver (issue #11, WSL2): on a WSL2 driver root the
container must have /dev/dxg (there are no /dev/nvidia* nodes on WSL2), on a native one
/dev/nvidiactl and /dev/nvidia<N>. Unit tests: dockerd's answer is injected into Facts and the
docker CLI is a fake that prints what a container would have listed."""

import os

import pytest

from nvdocker_setup.doctor.checks import all_checks, run_one
from nvdocker_setup.doctor.containers import MARKER, expected_nodes
from nvdocker_setup.doctor.facts import DoctorOptions, Facts
from nvdocker_setup.driver import discover
from tests.doctor.simhost import SimHost
from tests.support.driver_root import wsl_root_or_skip

WSL_DEV = ["console", "dxg", "null", "zero", "pts", "shm"]
NATIVE_DEV = ["console", "null", "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "zero"]


@pytest.fixture(scope="module")
def wsl_template(tmp_path_factory):
    return wsl_root_or_skip(str(tmp_path_factory.mktemp("wsl-smoke") / "root"))


def _host(tmp_path, template):
    if os.geteuid() != 0:
        pytest.skip("simulated hosts need root (device nodes, root-owned binaries)")
    return SimHost(str(tmp_path), template)


@pytest.fixture
def wsl_host(tmp_path, wsl_template):
    return _host(tmp_path, wsl_template)


def fake_docker(host, dev, smi="none", smi_text=""):
    """A docker CLI whose `image inspect` finds the image and whose `run` prints ``dev`` as the
    container's /dev, then nvidia-smi -L's output and status (``none``: no nvidia-smi in the image)."""
    listing = "\\n".join(dev)
    host.fake_tool("docker", (
        'case " $* " in\n'
        '  *" image inspect "*) echo sha256:0; exit 0;;\n'
        '  *" run "*) printf "{listing}\\n{m}\\n{smi_text}{m}{smi}\\n"; exit 0;;\n'
        'esac\nexit 1\n').format(listing=listing, m=MARKER, smi_text=smi_text, smi=smi))


def smoke(host):
    facts = Facts(host.ctx(), DoctorOptions(smoke=True))
    facts._memo["info"] = (True, {"ServerVersion": "28.5.1", "Runtimes": {"nvidia": {}}})
    item = next(check for check in all_checks() if check.id == "container-gpu-smoke")
    return run_one(item, facts, explicit=True)


def test_expected_nodes_follow_the_driver_kind(wsl_template, driver_template):
    assert expected_nodes(discover(wsl_template.path))[0] == ["dxg"]
    native = expected_nodes(discover(driver_template.path))[0]
    assert native == ["nvidiactl", "nvidia0", "nvidia1"] and "dxg" not in native


def test_a_wsl2_container_with_dxg_passes(wsl_host):
    fake_docker(wsl_host, WSL_DEV)
    result = smoke(wsl_host)
    assert result.status == "ok", result
    assert result.detail.startswith("/dev/dxg (WSL2") and "nvidiactl" not in result.detail


def test_a_wsl2_container_without_dxg_fails_and_names_dxg_not_nvidia_nodes(wsl_host):
    fake_docker(wsl_host, ["console", "null", "zero"])
    result = smoke(wsl_host)
    assert result.status == "fail", result
    assert "the container has no /dev/dxg" in result.detail and "/dev/nvidia" not in result.detail
    assert result.data["missing"] == ["dxg"]


def test_wsl2_nvidia_smi_may_list_any_number_of_gpus(wsl_host):
    """One /dev/dxg serves every GPU of the Windows host: two listed is not a mismatch."""
    fake_docker(wsl_host, WSL_DEV, smi="0", smi_text="GPU 0: A (UUID: GPU-a)\\nGPU 1: B (UUID: GPU-b)\\n")
    result = smoke(wsl_host)
    assert result.status == "ok" and "lists 2 GPU(s)" in result.detail, result
    fake_docker(wsl_host, WSL_DEV, smi="0", smi_text="No devices were found\\n")
    assert smoke(wsl_host).status == "warn"


def test_a_native_driver_still_wants_the_nvidia_nodes(host):
    fake_docker(host, WSL_DEV)  # /dev/dxg is no GPU on a native driver
    result = smoke(host)
    assert result.status == "fail" and "/dev/nvidiactl, /dev/nvidia0, /dev/nvidia1" in result.detail
    fake_docker(host, NATIVE_DEV)
    result = smoke(host)
    assert result.status == "ok" and result.detail.startswith("2 GPU device node(s) and /dev/nvidiactl"), result


# -- end to end: the private dockerd, a runtime that gives /dev/dxg (tests/doctor/conftest.py) ------


@pytest.fixture
def live_wsl_host(wsl_host, dockerd_sandbox):
    from tests.support.sandbox import engine_binary

    docker = engine_binary("docker")
    os.symlink(docker, os.path.join(wsl_host.fakebin, "docker"))
    wsl_host.docker_socket = dockerd_sandbox.socket_path
    wsl_host.env["DOCKER_HOST"] = dockerd_sandbox.docker_host
    return wsl_host


@pytest.mark.dockerd
def test_smoke_on_wsl2_wants_dxg_end_to_end(live_wsl_host, tiny_image):
    result = live_wsl_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="fakewsl")
    assert result.status == "ok", result
    assert result.detail.startswith("/dev/dxg (WSL2")
    native = live_wsl_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="fakegpu")
    assert native.status == "fail" and "the container has no /dev/dxg" in native.detail, native
