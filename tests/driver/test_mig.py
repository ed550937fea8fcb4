"""MIG and IMEX discovery from the driver root's files (nvdocker_setup/driver/mig.py), including
hostile-ish input: junk, huge numbers, oversized files, FIFOs, too many entries, stale nodes."""

import os
import stat
import threading

import pytest

from nvdocker_setup.driver import discover
from nvdocker_setup.driver import mig as mig_module
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.mig import is_mig_selector, parse_access, parse_mig_minors, parse_smi_listing
from tests.support.driver_root import (
    CAPS_MAJOR,
    DEFAULT_GPUS,
    DRIVER_VERSION,
    IMEX_MAJOR,
    MIG_UUIDS,
    NVIDIA_MAJOR,
    access_file,
    add_mig_and_imex,
    information,
    mig_minor,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


def small_root(path, mig=True):
    """proc files and device nodes only (no libraries: discovery of MIG needs none)."""
    proc = os.path.join(path, "proc/driver/nvidia")
    os.makedirs(proc)
    with open(os.path.join(proc, "version"), "w") as handle:
        handle.write("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {}  Thu\n".format(DRIVER_VERSION))
    for gpu in DEFAULT_GPUS:
        os.makedirs(os.path.join(proc, "gpus", gpu.bus_id))
        with open(os.path.join(proc, "gpus", gpu.bus_id, "information"), "w") as handle:
            handle.write(information(gpu))
    os.makedirs(os.path.join(path, "dev"))
    for name, minor in (("nvidiactl", 255), ("nvidia0", 0), ("nvidia1", 1)):
        os.mknod(os.path.join(path, "dev", name), stat.S_IFCHR | 0o666, os.makedev(NVIDIA_MAJOR, minor))
    if mig:
        add_mig_and_imex(path, DEFAULT_GPUS)
    return path


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    return small_root(str(tmp_path / "root"))


# -- parsers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, minor",
    [
        ("DeviceFileMinor: 21\nDeviceFileMode: 292\n", 21),
        ("DeviceFileMode: 292\n  DeviceFileMinor :  7 \n", 7),
        ("DeviceFileMinor: 99999999\n", None),  # 8 digits: beyond a minor
        ("DeviceFileMinor: -1\n", None),
        ("DeviceFileMinor: ١٢\n", None),  # non-ASCII digits
        ("DeviceFileMinor 21\n", None),
        ("\n" * 20 + "DeviceFileMinor: 21\n", None),  # only the first lines are read
        ("", None),
    ],
)
def test_parse_access(text, minor):
    assert parse_access(text) == minor


def test_parse_mig_minors_skips_junk_and_is_bounded():
    text = "config 1\nmonitor 2\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\njunk\nx y z\ngpu0/gi2/access -3\n"
    text += "gpu0/gi2/access 99999999\n" + "g" * 100 + " 5\ngpu0/gi1/access 77\n"
    assert parse_mig_minors(text) == {"config": 1, "monitor": 2, "gpu0/gi1/access": 12, "gpu0/gi1/ci0/access": 13}
    many = "".join("k{} {}\n".format(i, i % 1000) for i in range(mig_module.MAX_TABLE_LINES + 10))
    assert len(parse_mig_minors(many)) == mig_module.MAX_TABLE_LINES


def test_parse_smi_listing():
    text = (
        "GPU 0: NVIDIA A100 (UUID: GPU-aaa)\n"
        "  MIG 3g.20gb     Device  0: (UUID: MIG-111)\n"
        "  MIG 3g.20gb     Device  1: (UUID: MIG-222)\n"
        "GPU 1: NVIDIA A100 (UUID: GPU-bbb)\n"
        "  MIG 1g.5gb      Device  x: (UUID: MIG-333)\n"
        "  MIG 1g.5gb      Device  0: (UUID: MIG-" + "4" * 200 + ")\n"
        "garbage (UUID: MIG-555)\n"
    )
    assert parse_smi_listing(text) == {"MIG-111": ("GPU-aaa", 0), "MIG-222": ("GPU-aaa", 1)}
    assert parse_smi_listing("  MIG 1g Device 0: (UUID: MIG-1)\n") == {}  # no GPU line before it


@pytest.mark.parametrize("item, mig", [("0:1", True), ("MIG-ab", True), ("0", False), ("GPU-x", False), (":1", False),
                                       ("0:x", False), ("0:1:2", False)])
def test_is_mig_selector(item, mig):
    assert is_mig_selector(item) == mig


# -- discovery -----------------------------------------------------------------------------------


def test_devices_in_gi_then_ci_order_with_uuids(root):
    driver = discover(root)
    found = [(d.name, d.gi, d.ci, d.gi_minor, d.ci_minor, d.uuid) for d in driver.mig.devices()]
    assert found == [("0:0", 1, 0, 12, 13, MIG_UUIDS[0]), ("0:1", 2, 0, 21, 22, MIG_UUIDS[1])]
    assert driver.mig.find("0:1").gi == 2 and driver.mig.find(MIG_UUIDS[0].upper().replace("MIG", "mig")).gi == 1
    assert driver.mig.enabled(driver.gpus[0]) and not driver.mig.enabled(driver.gpus[1])
    paths = [node.path for node in driver.mig.edits(driver.mig.find("0:1")).device_nodes]
    assert paths == ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"]


def test_without_the_uuid_map_only_indexes_work(root):
    os.unlink(os.path.join(root, "etc/nvdocker/mig-uuids"))
    driver = discover(root)
    assert [d.uuid for d in driver.mig.devices()] == ["", ""]
    with pytest.raises(GpuSetupError, match="unknown MIG device") as caught:
        driver.mig.find(MIG_UUIDS[0])
    assert "mig-uuids" in str(caught.value)


def test_an_access_file_without_a_minor_falls_back_to_mig_minors(root):
    access = os.path.join(root, "proc/driver/nvidia/capabilities/gpu0/mig/gi2/ci0/access")
    with open(access, "w") as handle:
        handle.write("DeviceFileMode: 292\n")
    assert discover(root).mig.find("0:1").ci_minor == mig_minor(0, 2, 0)
    os.unlink(os.path.join(root, "proc/driver/nvidia-caps/mig-minors"))
    assert [d.name for d in discover(root).mig.devices()] == ["0:0"]  # no minor anywhere: not a device


def test_a_fifo_or_directory_as_a_file_neither_blocks_nor_counts(root):
    access = os.path.join(root, "proc/driver/nvidia/capabilities/gpu0/mig/gi1/access")
    os.unlink(access)
    os.mkfifo(access)
    table = os.path.join(root, "proc/driver/nvidia-caps/mig-minors")
    os.unlink(table)
    os.mkdir(table)
    result = []
    worker = threading.Thread(target=lambda: result.append([d.name for d in discover(root).mig.devices()]), daemon=True)
    worker.start()
    worker.join(5)
    assert result == [["0:0"]]  # gi1's access unreadable -> its one device is gone; renumbered from 0
    assert discover(root).mig.find("0:0").gi == 2


def test_an_oversized_table_is_read_only_up_to_its_bound(root, monkeypatch):
    monkeypatch.setattr(mig_module, "MAX_TABLE_BYTES", 64)
    table = os.path.join(root, "proc/driver/nvidia-caps/mig-minors")
    with open(table, "w") as handle:
        handle.write("config 1\n" + "x" * 100000 + "\ngpu0/gi1/access 12\n")
    assert discover(root).mig.minors_table() == {"config": 1}


def test_directory_listings_and_devices_per_gpu_are_bounded(root, monkeypatch):
    base = os.path.join(root, "proc/driver/nvidia/capabilities/gpu0/mig")
    for gi in range(3, 40):
        os.makedirs(os.path.join(base, "gi{}".format(gi), "ci0"))
        with open(os.path.join(base, "gi{}".format(gi), "access"), "w") as handle:
            handle.write(access_file(12))
        with open(os.path.join(base, "gi{}".format(gi), "ci0", "access"), "w") as handle:
            handle.write(access_file(13))
    for junk in ("gi", "gi01", "gix", "gi99999999", "ci0"):
        os.makedirs(os.path.join(base, junk), exist_ok=True)
    monkeypatch.setattr(mig_module, "MAX_MIG_PER_GPU", 10)
    assert len(discover(root).mig.devices()) == 10
    monkeypatch.setattr(mig_module, "MAX_DIR_ENTRIES", 5)
    assert len(discover(root).mig.devices()) <= 5


def test_a_missing_or_stale_cap_node_is_refused(root):
    cap = os.path.join(root, "dev/nvidia-caps/nvidia-cap22")
    os.unlink(cap)
    driver = discover(root)
    with pytest.raises(GpuSetupError, match="MIG device 0:1 has no device node /dev/nvidia-caps/nvidia-cap22"):
        driver.mig.edits(driver.mig.find("0:1"))
    os.mknod(cap, stat.S_IFCHR | 0o444, os.makedev(8, 22))  # a disk's major, not nvidia-caps'
    driver = discover(root)
    with pytest.raises(GpuSetupError, match="/proc/devices lists nvidia-caps with major {}".format(CAPS_MAJOR)):
        driver.mig.edits(driver.mig.find("0:1"))


def test_unknown_mig_devices_name_what_exists(root):
    driver = discover(root)
    with pytest.raises(GpuSetupError, match=r"unknown MIG device '0:7': this host has 0:0 \(GPU instance 1"):
        driver.mig.find("0:7")
    with pytest.raises(GpuSetupError, match="GPU 1 is not in MIG mode"):
        driver.mig.find("1:0")
    with pytest.raises(GpuSetupError, match="unknown GPU '5'"):
        driver.mig.find("5:0")


def test_mig_access_nodes(root):
    driver = discover(root)
    assert [n.path for n in driver.mig.access_edits("config", ["all"]).device_nodes] == ["/dev/nvidia-caps/nvidia-cap1"]
    assert [n.path for n in driver.mig.access_edits("monitor", ["1"]).device_nodes] == ["/dev/nvidia-caps/nvidia-cap2"]
    with pytest.raises(GpuSetupError, match="not in MIG mode"):
        driver.mig.access_edits("config", ["1"])


def test_imex_channels_odd_names_are_ignored_and_unknown_ones_refused(root):
    directory = os.path.join(root, "dev/nvidia-caps-imex-channels")
    for name in ("channel01", "channelx", "other"):
        open(os.path.join(directory, name), "w").close()
    driver = discover(root)
    assert driver.mig.imex_channels() == [0, 1]
    assert [(n.major, n.minor) for n in driver.mig.imex_edits(["all"]).device_nodes] == [(IMEX_MAJOR, 0), (IMEX_MAJOR, 1)]
    with pytest.raises(GpuSetupError, match="unknown IMEX channel '2': this host has channels 0, 1"):
        driver.mig.imex_edits(["2"])


def test_imex_channel_scan_is_bounded(root, monkeypatch):
    monkeypatch.setattr(mig_module, "MAX_IMEX_CHANNELS", 1)
    assert len(discover(root).mig.imex_channels()) == 1


def test_a_stale_imex_node_is_refused(root):
    channel = os.path.join(root, "dev/nvidia-caps-imex-channels/channel1")
    os.unlink(channel)
    os.mknod(channel, stat.S_IFCHR | 0o666, os.makedev(CAPS_MAJOR, 1))
    with pytest.raises(GpuSetupError, match="nvidia-caps-imex-channels with major {}".format(IMEX_MAJOR)):
        discover(root).mig.imex_edits(["1"])


@needs_root
def test_a_root_without_mig_has_no_mig_devices(tmp_path):
    driver = discover(small_root(str(tmp_path / "plain"), mig=False))
    assert driver.mig.devices() == [] and driver.mig.imex_channels() == []
    with pytest.raises(GpuSetupError, match="GPU 0 is not in MIG mode"):
        driver.mig.find("0:0")
    with pytest.raises(GpuSetupError, match="this host has no IMEX channel"):
        driver.mig.imex_edits(["0"])
