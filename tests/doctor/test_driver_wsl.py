"""Doctor on a simulated WSL2 host (issue #11 item 5): "WSL2 driver (/dev/dxg)" instead of "no
kernel module" / "no GPUs"; checks that cannot apply are skipped with the reason."""

import os

import pytest

from tests.doctor.simhost import SimHost
from tests.support.driver_root import DXG_NODE, WSL_LIB_DIR, wsl_root_or_skip

DRIVER_CHECKS = ("driver-kernel-module", "driver-gpus", "driver-device-nodes", "driver-libraries", "driver-nvidia-smi")


@pytest.fixture(scope="module")
def wsl_template(tmp_path_factory):
    return wsl_root_or_skip(str(tmp_path_factory.mktemp("wsl-doctor") / "root"))


@pytest.fixture
def wsl_host(tmp_path, wsl_template):
    if os.geteuid() != 0:
        pytest.skip("simulated hosts need root (device nodes, root-owned binaries)")
    return SimHost(str(tmp_path), wsl_template)


def test_every_driver_check_passes_on_a_healthy_wsl_host(wsl_host):
    for check_id in DRIVER_CHECKS:
        result = wsl_host.run(check_id)
        assert result.status == "ok", (check_id, result)


def test_the_driver_is_reported_as_wsl2_with_its_node(wsl_host):
    result = wsl_host.run("driver-kernel-module")
    assert result.detail.startswith("WSL2 driver (/dev/dxg {}:{}".format(*DXG_NODE))
    assert "driver version unknown" in result.detail and "NVIDIA_REQUIRE_* checks are skipped" in result.detail
    assert result.data["wsl"] is True and result.data["version"] is None
    assert "no GPU" not in wsl_host.run("driver-gpus").detail
    assert "/dev/dxg {}:{}".format(*DXG_NODE) in wsl_host.run("driver-device-nodes").detail


def test_a_version_named_library_is_reported(wsl_host):
    wsl_host.write(WSL_LIB_DIR + "/libnvidia-ml.so.560.94", "")
    result = wsl_host.run("driver-kernel-module")
    assert "driver 560.94 (CUDA up to 12.6)" in result.detail and result.data["version"] == "560.94"


def test_a_missing_wsl_library_fails_with_the_fix(wsl_host):
    wsl_host.remove(WSL_LIB_DIR + "/libdxcore.so")
    result = wsl_host.run("driver-libraries")
    assert result.status == "fail" and "libdxcore.so" in result.detail
    assert "update the NVIDIA driver on Windows" in result.hint


def test_nvidia_smi_from_the_wsl_folder(wsl_host):
    result = wsl_host.run("driver-nvidia-smi")
    assert result.status == "ok" and WSL_LIB_DIR + "/nvidia-smi -L lists 1 GPU(s) (WSL2)" in result.detail
    wsl_host.remove(WSL_LIB_DIR + "/nvidia-smi")
    result = wsl_host.run("driver-nvidia-smi")
    assert result.status == "fail" and "not in " + WSL_LIB_DIR in result.detail


def test_dev_char_links_are_skipped_with_the_reason(wsl_host):
    wsl_host.write_config({"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
                           "exec-opts": ["native.cgroupdriver=systemd"]})
    result = wsl_host.run("driver-dev-char-links")
    assert result.status == "skip" and "WSL2" in result.detail


def test_without_dxg_it_is_no_driver_at_all(wsl_host):
    wsl_host.remove("/dev/dxg")
    result = wsl_host.run("driver-kernel-module")
    assert result.status == "fail" and "no NVIDIA driver is loaded" in result.detail
