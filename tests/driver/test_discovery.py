"""Driver discovery on the simulated driver root, and on small hand-made roots."""

import os

import pytest

from nvdocker_setup.driver import discover, resolve_in_root
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.discovery import parse_information, parse_version, read_gpus
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.versions import version_tuple
from tests.support.driver_root import SimulatedGpu, driver_root_or_skip, information


def test_gpus_version_and_cuda(driver_root):
    driver = discover(driver_root.path)
    assert driver.version == "550.54.14"
    assert driver.cuda_version == "12.4"
    assert [(g.index, g.minor, g.uuid, g.bus_id) for g in driver.gpus] == [
        (i, gpu.minor, gpu.uuid, gpu.bus_id) for i, gpu in enumerate(driver_root.gpus)
    ]
    assert driver.gpus[0].model == "NVIDIA A100-SXM4-40GB"


def test_gpus_are_indexed_in_bus_order_not_by_minor(tmp_path):
    proc = tmp_path / "gpus"
    for gpu in (SimulatedGpu("0000:86:00.0", 0, "GPU-b", "B"), SimulatedGpu("0000:3b:00.0", 1, "GPU-a", "A")):
        (proc / gpu.bus_id).mkdir(parents=True)
        (proc / gpu.bus_id / "information").write_text(information(gpu))
    gpus = read_gpus(str(proc))
    assert [(g.index, g.minor, g.uuid) for g in gpus] == [(0, 1, "GPU-a"), (1, 0, "GPU-b")]
    assert gpus[0].device_path == "/dev/nvidia1"


@pytest.mark.parametrize(
    "text, version",
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n", "550.54.14"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build  (dvs-builder@U16)\n", "570.86.15"),
        ("NVRM version: NVIDIA UNIX aarch64 Kernel Module  535.104.05  Sat Aug 19 01:13:08 UTC 2023\n", "535.104.05"),
        ("GCC version: gcc 12\n", None),
    ],
)
def test_version_file_spellings(text, version):
    assert parse_version(text) == version


def test_information_and_version_tuple():
    fields = parse_information("Model: \t\t Tesla T4\nDevice Minor: \t 3\nGPU UUID: \t GPU-x\n")
    assert fields == {"Model": "Tesla T4", "Device Minor": "3", "GPU UUID": "GPU-x"}
    assert version_tuple("550.54.14") == (550, 54, 14) and version_tuple("12.4-beta") == (12,)


def test_find_gpu_by_index_or_uuid_and_unknown_names_the_gpus(driver_root):
    driver = discover(driver_root.path)
    uuid = driver_root.gpus[1].uuid
    assert driver.find_gpu("1").uuid == uuid
    assert driver.find_gpu(uuid.lower()).index == 1
    with pytest.raises(GpuSetupError) as caught:
        driver.find_gpu("7")
    message = caught.value.message
    assert "'7'" in message and driver_root.gpus[0].uuid in message and uuid in message


def test_device_nodes_come_from_stat(driver_root):
    driver = discover(driver_root.path)
    control = {node.path: (node.major, node.minor) for node in driver.control_device_nodes()}
    assert control == {"/dev/nvidiactl": (195, 255), "/dev/nvidia-modeset": (195, 254), "/dev/nvidia-uvm": (510, 0),
            "/dev/nvidia-uvm-tools": (510, 1)}
    node = driver.gpu_device_node(driver.gpus[1])
    assert (node.path, node.major, node.minor, node.file_mode) == ("/dev/nvidia1", 195, 1, 0o666)
    assert node.host_path == os.path.join(driver_root.path, "dev/nvidia1")


def test_libraries_per_capability_resolve_to_the_versioned_files(driver_root):
    driver = discover(driver_root.path)
    lib = "/usr/lib/x86_64-linux-gnu/"

    def containers(capabilities):
        return sorted(container for _, container in driver.libraries(capabilities))

    assert containers(["utility"]) == [lib + "libnvidia-ml.so.550.54.14"]
    assert containers(["compute"]) == [lib + "libcuda.so.550.54.14", lib + "libnvidia-ptxjitcompiler.so.550.54.14"]
    assert containers(["video"]) == [lib + "libnvidia-encode.so.550.54.14"]
    assert containers(["graphics"]) == [lib + "libGLX_nvidia.so.550.54.14"]
    assert len(containers(ALL_CAPABILITIES)) == 5
    assert driver.libraries(["compute"], word_size=32) == []
    host, container = driver.libraries(["utility"])[0]
    assert host == os.path.join(driver_root.path, container.lstrip("/"))


def test_binaries_firmware_and_ipc(driver_root):
    driver = discover(driver_root.path)
    assert [c for _, c in driver.binaries(["utility"])] == ["/usr/bin/nvidia-smi"]
    assert driver.binaries(["compute"]) == []
    assert driver.firmware() == (os.path.join(driver_root.path, "lib/firmware/nvidia/550.54.14"), "/lib/firmware/nvidia/550.54.14")
    if driver_root.persistenced_socket:
        assert [c for _, c in driver.ipc_paths(["utility"])] == ["/run/nvidia-persistenced/socket"]


def test_resolve_in_root_keeps_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/real.so").write_text("x")
    os.symlink("usr/lib", str(root / "lib"))  # merged /usr, relative
    os.symlink("/usr/lib/real.so", str(root / "usr/lib/abs.so"))  # absolute: means root/usr/lib/real.so
    os.symlink("../../../../../../etc/passwd", str(root / "usr/lib/escape.so"))  # must not leave the root
    r = str(root)
    assert resolve_in_root(r, "/lib/abs.so") == (str(root / "usr/lib/real.so"), "/usr/lib/real.so")
    assert resolve_in_root(r, "/lib/../lib/real.so")[1] == "/usr/lib/real.so"
    assert resolve_in_root(r, "/usr/lib/escape.so") is None  # root/etc/passwd does not exist
    assert resolve_in_root(r, "/usr/lib/missing.so") is None
    os.symlink("loop", str(root / "loop"))
    assert resolve_in_root(r, "/loop") is None


def test_no_driver_and_missing_nodes_are_clear_errors(tmp_path):
    with pytest.raises(GpuSetupError) as caught:
        discover(str(tmp_path / "absent"))
    assert "not a directory" in caught.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    if not os.path.exists("/proc/driver/nvidia/version"):
        with pytest.raises(GpuSetupError) as caught:
            discover(str(empty))
        assert "no NVIDIA driver is loaded" in caught.value.message and str(empty) in caught.value.message


def test_a_gpu_without_its_device_node_says_how_to_create_it(tmp_path):
    root = driver_root_or_skip(str(tmp_path / "root"), with_ldcache=False)
    os.unlink(os.path.join(root.path, "dev/nvidia1"))
    driver = discover(root.path)
    with pytest.raises(GpuSetupError) as caught:
        driver.gpu_device_node(driver.gpus[1])
    assert "/dev/nvidia1" in caught.value.message and "nvidia-modprobe" in caught.value.hint
    os.unlink(os.path.join(root.path, "dev/nvidiactl"))
    with pytest.raises(GpuSetupError):
        driver.control_device_nodes()


def test_the_fast_prefix_lookup_matches_the_plain_rule():
    """_matching_prefix (set lookups, the hot path) says exactly what scanning with _matches says."""
    from nvdocker_setup.driver import capabilities as caps
    from nvdocker_setup.driver.discovery import _matches, _matching_prefix

    prefixes = caps.libraries_for(caps.ALL_CAPABILITIES)
    assert all(prefix.endswith(".so") for prefix in prefixes)
    names = [prefix + suffix for prefix in prefixes for suffix in ("", ".1", ".550.54.14", "_x", ".so", "x")]
    names += ["libcuda.so.so.1", "libcuda.sox.1", "lib.so", ".so", "libnvidia-ml.so.1.so", "libcuda", "libcudaso.1"]
    prefix_set = frozenset(prefixes)
    for name in names:
        scanned = [prefix for prefix in prefixes if _matches(name, prefix)]
        assert (_matching_prefix(name, prefix_set) is not None) == bool(scanned), name
