"""WSL2 (issue #11 item 5): discovery of a simulated WSL2 driver root and the edits it implies."""

import os

import pytest

from nvdocker_setup.driver import discover, requirements
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES, parse_capabilities
from nvdocker_setup.driver.discovery import UNKNOWN_VERSION, WSL_LIB_DIR, parse_wsl_version
from nvdocker_setup.driver.edits import HookCommand, request_edits
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import READ_ONLY_MOUNT
from tests.support.driver_root import DXG_NODE, wsl_root_or_skip

HOOK = HookCommand("/usr/bin/nvdocker-runtime-hook", ["/usr/bin/nvdocker-runtime-hook"], "/sbin/ldconfig")


@pytest.fixture(scope="module")
def wsl_root(tmp_path_factory):
    return wsl_root_or_skip(str(tmp_path_factory.mktemp("wsl") / "root"))


def test_a_wsl_root_is_recognised(wsl_root):
    driver = discover(wsl_root.path)
    assert driver.wsl
    assert driver.version == UNKNOWN_VERSION and not driver.version_known
    assert driver.dev_root == os.path.join(wsl_root.path, "dev")
    (gpu,) = driver.gpus
    assert gpu.index == 0 and gpu.device_path == "/dev/dxg" and gpu.minor == DXG_NODE[1]


def test_a_native_driver_root_is_not_wsl(driver_root):
    assert not discover(driver_root.path).wsl


def test_dxg_must_be_a_character_device(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "dxg").write_text("not a device")
    (tmp_path / "usr/lib/wsl/lib").mkdir(parents=True)
    with pytest.raises(GpuSetupError, match="no NVIDIA driver is loaded"):
        discover(str(tmp_path))


def test_the_wsl_folder_is_needed(tmp_path, wsl_root):
    (tmp_path / "dev").mkdir()
    os.mknod(str(tmp_path / "dev" / "dxg"), 0o20666, os.makedev(*DXG_NODE))
    with pytest.raises(GpuSetupError, match="no NVIDIA driver is loaded"):
        discover(str(tmp_path))


def test_a_root_with_proc_driver_nvidia_is_never_wsl(tmp_path, wsl_root):
    (tmp_path / "dev").mkdir()
    os.mknod(str(tmp_path / "dev" / "dxg"), 0o20666, os.makedev(*DXG_NODE))
    (tmp_path / "usr/lib/wsl/lib").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    with pytest.raises(GpuSetupError, match="nvidia/version .* is missing"):
        discover(str(tmp_path))


@pytest.mark.parametrize("names, version", [
    (["libcuda.so.1", "libcuda.so.1.1", "libnvidia-ml.so.1"], None),
    (["libnvidia-ml.so.560.94", "libcuda.so.1.1"], "560.94"),
    (["libcuda.so.555.42.06"], "555.42.06"),
    (["libnvidia-ml.so.99.1", "libcuda.so.1.2.3.4.5", "libnvidia-ml.so.5x0.1"], None),
])
def test_the_version_only_from_a_library_named_after_it(names, version):
    assert parse_wsl_version(names) == version


def test_a_versioned_library_gives_the_version(tmp_path):
    root = wsl_root_or_skip(str(tmp_path / "root"), extra_files=["libnvidia-ml.so.560.94"])
    driver = discover(root.path)
    assert driver.version == "560.94" and driver.cuda_version == "12.6"


def test_only_all_and_0_select_the_gpu(wsl_root):
    driver = discover(wsl_root.path)
    assert driver.find_gpu("0") is driver.gpus[0]
    for selector in ("1", "GPU-0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6", ""):
        with pytest.raises(GpuSetupError) as caught:
            driver.find_gpu(selector)
        assert "WSL2 gives a container every GPU through the one /dev/dxg node" in caught.value.message
        assert "all or 0" in caught.value.message


def test_edits_give_dxg_the_wsl_files_and_the_ldcache_folder(wsl_root):
    driver = discover(wsl_root.path)
    edits = request_edits(driver, driver.gpus, parse_capabilities(None), HOOK, "/rootfs")
    (node,) = edits.device_nodes
    assert (node.path, node.host_path, node.major, node.minor) == ("/dev/dxg", wsl_root.host("/dev/dxg")) + DXG_NODE
    assert node.cgroup_rule()["allow"] is True and (node.cgroup_rule()["major"], node.cgroup_rule()["minor"]) == DXG_NODE
    mounts = {mount.container_path: mount for mount in edits.mounts}
    assert sorted(mounts) == [
        "/usr/bin/nvidia-smi",
        WSL_LIB_DIR + "/libcuda.so.1",
        WSL_LIB_DIR + "/libcuda.so.1.1",
        WSL_LIB_DIR + "/libdxcore.so",
        WSL_LIB_DIR + "/libnvidia-ml.so.1",
    ]
    for path, mount in mounts.items():
        assert tuple(mount.options) == READ_ONLY_MOUNT
        expected = WSL_LIB_DIR + "/nvidia-smi" if path == "/usr/bin/nvidia-smi" else path
        assert mount.host_path == wsl_root.host(expected)
    (hook,) = edits.hooks
    folders = [hook.args[i + 1] for i, arg in enumerate(hook.args) if arg == "--folder"]
    assert folders == [WSL_LIB_DIR]
    assert "--link" not in hook.args and "--host-driver-version" not in hook.args  # no version: no compat step


def test_capabilities_still_choose_the_libraries(wsl_root):
    driver = discover(wsl_root.path)
    edits = request_edits(driver, driver.gpus, parse_capabilities("utility"), HOOK)
    assert sorted(m.container_path for m in edits.mounts) == [
        "/usr/bin/nvidia-smi", WSL_LIB_DIR + "/libdxcore.so", WSL_LIB_DIR + "/libnvidia-ml.so.1"]
    edits = request_edits(driver, driver.gpus, ALL_CAPABILITIES, HOOK)
    assert not any("firmware" in m.container_path for m in edits.mounts)


def test_a_symlink_out_of_the_root_stays_in_it(tmp_path):
    root = wsl_root_or_skip(str(tmp_path / "root"))
    os.symlink("/etc/shadow", root.host(WSL_LIB_DIR + "/libnvidia-ml.so.2"))
    os.makedirs(root.host("/etc"))
    with open(root.host("/etc/libcuda.so.9"), "w") as handle:
        handle.write("outside the WSL folder")
    os.symlink("/etc/libcuda.so.9", root.host(WSL_LIB_DIR + "/libcuda.so.9"))
    os.symlink("libcuda.so.1.1", root.host(WSL_LIB_DIR + "/libcuda.so"))  # a link inside the folder counts
    driver = discover(root.path)
    edits = request_edits(driver, driver.gpus, ALL_CAPABILITIES, HOOK)
    assert all(m.host_path.startswith(root.path + "/") for m in edits.mounts)
    targets = {m.container_path for m in edits.mounts}
    assert WSL_LIB_DIR + "/libcuda.so.1.1" in targets and WSL_LIB_DIR + "/libcuda.so" not in targets
    assert not any(t.startswith("/etc") or t.endswith(".so.2") or t.endswith(".so.9") for t in targets), targets
    (hook,) = edits.hooks
    assert [hook.args[i + 1] for i, arg in enumerate(hook.args) if arg == "--folder"] == [WSL_LIB_DIR]


def test_requirements_are_skipped_when_the_version_is_unknown(wsl_root):
    driver = discover(wsl_root.path)
    facts = requirements.Facts(driver.version, driver.cuda_version)
    requirements.check({"NVIDIA_REQUIRE_CUDA": "cuda>=12.4 brand=tesla,driver>=470"}, facts)
    with pytest.raises(GpuSetupError, match="unsatisfied requirement"):
        requirements.check({"NVIDIA_REQUIRE_CUDA": "cuda>=12.4"}, requirements.Facts("535.54.03", "12.2"))
