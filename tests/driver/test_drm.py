"""/dev/dri for graphics, video and display (issue #20): each requested GPU's card and render node,
found through udev's by-path links, and nothing of another GPU or of a capability that needs none."""

import os

import pytest

from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.discovery import discover
from nvdocker_setup.driver.edits import gpu_edits, request_edits
from tests.support.driver_root import DEFAULT_GPUS, DRM_MAJOR, add_drm, build_driver_root, missing_tools

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes need root")


@pytest.fixture
def root(tmp_path):
    if missing_tools():
        pytest.skip("needs " + ", ".join(missing_tools()))
    built = build_driver_root(str(tmp_path / "root"))
    add_drm(built.path)
    return built


def nodes(edits):
    return {(node.path, node.major, node.minor) for node in edits.device_nodes}


@pytest.mark.parametrize("capability", ["graphics", "video", "display"])
def test_a_graphics_request_gets_its_gpus_drm_nodes_only(root, capability):
    driver = discover(root.path)
    got = nodes(request_edits(driver, [driver.gpus[1]], (capability,), None))
    assert ("/dev/dri/card2", DRM_MAJOR, 2) in got and ("/dev/dri/renderD129", DRM_MAJOR, 129) in got
    assert not [path for path, _ma, _mi in got if path in ("/dev/dri/card1", "/dev/dri/renderD128", "/dev/dri/card0")]


def test_compute_and_utility_get_no_drm_node(root):
    driver = discover(root.path)
    got = nodes(request_edits(driver, driver.gpus, ("compute", "utility"), None))
    assert not [path for path, _ma, _mi in got if path.startswith("/dev/dri/")]


def test_the_cdi_device_of_each_gpu_carries_its_drm_nodes(root):
    driver = discover(root.path)
    paths = [node.path for node in gpu_edits(driver, driver.gpus[0], ALL_CAPABILITIES).device_nodes]
    assert paths == ["/dev/nvidia0", "/dev/dri/card1", "/dev/dri/renderD128"]


def test_links_and_nodes_a_user_could_have_made_are_left_out(root):
    by_path = root.host("/dev/dri/by-path")
    bus = DEFAULT_GPUS[0].bus_id
    os.lchown(os.path.join(by_path, "pci-{}-card".format(bus)), NOBODY, NOBODY)
    os.unlink(os.path.join(by_path, "pci-{}-render".format(bus)))
    os.symlink("/dev/sda", os.path.join(by_path, "pci-{}-render".format(bus)))  # not ../renderD<N>
    os.chown(root.host("/dev/dri/card2"), NOBODY, NOBODY)
    driver = discover(root.path)
    got = nodes(request_edits(driver, driver.gpus, ("graphics",), None))
    assert not [path for path, _ma, _mi in got if path.startswith("/dev/dri/card")]
    assert ("/dev/dri/renderD129", DRM_MAJOR, 129) in got
    assert len([note for note in driver.refused if "dri" in note]) == 3, driver.refused


def test_a_node_whose_major_is_not_drms_is_refused(root):
    path = root.host("/dev/dri/renderD128")
    os.unlink(path)
    os.mknod(path, 0o20666, os.makedev(8, 0))  # a disk's numbers under a render node's name
    driver = discover(root.path)
    got = nodes(request_edits(driver, [driver.gpus[0]], ("graphics",), None))
    assert ("/dev/dri/card1", DRM_MAJOR, 1) in got and not [n for n in got if n[0] == "/dev/dri/renderD128"]
    assert any("major 8 but /proc/devices lists drm as 226" in note for note in driver.refused)
