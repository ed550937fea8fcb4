"""Non-library files per capability on simulated roots laid out like each distribution (issue #20):
the display capability's Xorg modules where Debian, RHEL and NVIDIA's installer put them, and nothing
of display without it."""

import os

import pytest

from nvdocker_setup.driver.discovery import discover
from nvdocker_setup.driver.edits import common_edits
from tests.support.driver_root import build_driver_root, missing_tools

LAYOUTS = {
    "run-installer": ("/usr/lib/xorg/modules/drivers/nvidia_drv.so", "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so"),
    "rhel": ("/usr/lib64/xorg/modules/drivers/nvidia_drv.so", "/usr/lib64/xorg/modules/extensions/libglxserver_nvidia.so"),
    "debian": ("/usr/lib/nvidia/nvidia_drv.so", "/usr/lib/nvidia/libglxserver_nvidia.so"),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="the simulated root needs root (device nodes)")
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_display_gets_the_xorg_modules_of_each_layout(tmp_path, layout):
    if missing_tools():
        pytest.skip("needs " + ", ".join(missing_tools()))
    root = build_driver_root(str(tmp_path / "root"))
    for path in LAYOUTS[layout] + ("/usr/share/X11/xorg.conf.d/10-nvidia.conf",):
        os.makedirs(os.path.dirname(root.host(path)), exist_ok=True)
        with open(root.host(path), "w") as handle:
            handle.write("module\n")
    driver = discover(root.path)
    display = {m.container_path for m in common_edits(driver, ("display",), None).mounts}
    assert set(LAYOUTS[layout]) | {"/usr/share/X11/xorg.conf.d/10-nvidia.conf"} <= display, display
    others = {m.container_path for m in common_edits(driver, ("compute", "utility", "graphics", "video"), None).mounts}
    assert not (set(LAYOUTS[layout]) & others)


# -- a library a future driver adds, firmware search path, IMEX binaries (issue #20) ----------------

LIB = "/usr/lib/x86_64-linux-gnu"


@pytest.fixture
def root(tmp_path):
    if os.geteuid() != 0 or missing_tools():
        pytest.skip("the simulated root needs root, gcc and ldconfig")
    return build_driver_root(str(tmp_path / "root"))


def library_paths(driver, capabilities):
    return {container for _, container in driver.libraries(capabilities)}


def test_a_library_a_future_driver_adds_comes_with_compute_only(root):
    """NVIDIA's CDI mounts every lib*.so.<version> of the driver's directories; ours gives one that no
    list names (580's libnvidia-tileiras was one) with compute, never under another version."""
    for name in ("libnvidia-future.so." + root.version, "libnvidia-old.so.535.104.05", "libcuda-helper.so",
                 "libnvidia-tileiras.so." + root.version):
        with open(root.host(LIB + "/" + name), "wb") as handle:
            handle.write(b"\x7fELF")
    os.mkdir(root.host(LIB + "/libnvidia-dir.so." + root.version))  # not a regular file
    driver = discover(root.path)
    compute = library_paths(driver, ("compute",))
    assert {LIB + "/libnvidia-future.so." + root.version, LIB + "/libnvidia-tileiras.so." + root.version} <= compute
    assert not {p for p in compute if "old" in p or "helper" in p or "libnvidia-dir" in p}
    assert not {p for p in library_paths(driver, ("utility", "graphics", "video")) if "future" in p}


def test_an_unlisted_library_a_user_could_replace_is_left_out_and_named(root):
    path = root.host(LIB + "/libnvidia-future.so." + root.version)
    with open(path, "wb") as handle:
        handle.write(b"\x7fELF")
    os.chown(path, 65534, 65534)
    driver = discover(root.path)
    assert not {p for p in library_paths(driver, ("compute",)) if "future" in p}
    assert any("libnvidia-future" in note for note in driver.refused), driver.refused


def test_firmware_comes_from_the_kernels_search_path_first_found(root):
    version = root.version
    assert discover(root.path).firmware()[1] == "/lib/firmware/nvidia/" + version
    updates = root.host("/lib/firmware/updates/nvidia/" + version)
    os.makedirs(updates)
    assert discover(root.path).firmware() == (updates, "/lib/firmware/updates/nvidia/" + version)
    custom = root.host("/opt/fw/nvidia/" + version)
    os.makedirs(custom)
    os.makedirs(root.host("/sys/module/firmware_class/parameters"))
    with open(root.host(FIRMWARE_PARAM), "w") as handle:
        handle.write("/opt/fw\n")
    assert discover(root.path).firmware() == (custom, "/opt/fw/nvidia/" + version)
    os.chmod(root.host("/opt/fw"), 0o777)  # a directory anyone could swap: refused, the next one counts
    driver = discover(root.path)
    assert driver.firmware()[1] == "/lib/firmware/updates/nvidia/" + version
    assert any(note.startswith("/opt/fw/nvidia/") for note in driver.refused)


FIRMWARE_PARAM = "/sys/module/firmware_class/parameters/path"


def test_the_imex_binaries_come_with_utility(root):
    for name in ("nvidia-imex", "nvidia-imex-ctl"):
        with open(root.host("/usr/bin/" + name), "w") as handle:
            handle.write("#!/bin/sh\n")
        os.chmod(root.host("/usr/bin/" + name), 0o755)
    driver = discover(root.path)
    assert {"/usr/bin/nvidia-imex", "/usr/bin/nvidia-imex-ctl"} <= {c for _, c in driver.binaries(("utility",))}
    assert not {c for _, c in driver.binaries(("compute",)) if "imex" in c}
