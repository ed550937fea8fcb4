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
