"""Which library links a container gets (issue #14, item 2): the host's own links for the mounted
libraries, plus NVIDIA's ``libcuda.so``/``libnvidia-opticalflow.so``/``libGLX_indirect.so.0``, in
the runtime's hook and the CDI spec alike (both come from ``common_edits``)."""

import os
import subprocess

import pytest

from nvdocker_setup.driver import links as rules
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES, DEFAULT_CAPABILITIES
from nvdocker_setup.driver.discovery import Driver, discover
from nvdocker_setup.driver.edits import HookCommand, common_edits
from tests.support.driver_root import LIB_DIR, driver_root_or_skip

V = "550.54.14"
HOOK = HookCommand("/usr/bin/python3", ["/usr/bin/python3", "-I", "-S", "/h.py"], "/sbin/ldconfig")


def hook_links(edits):
    (hook,) = edits.hooks
    return [hook.args[i + 1] for i, arg in enumerate(hook.args) if arg == "--link"]


def reindex(root):
    subprocess.run(["ldconfig", "-r", root], check=True, stderr=subprocess.DEVNULL)


def test_the_host_links_for_the_default_capabilities(driver_root):
    assert discover(driver_root.path).library_links(DEFAULT_CAPABILITIES) == [
        ("libcuda.so.1", LIB_DIR, "libcuda.so"),
        ("libcuda.so." + V, LIB_DIR, "libcuda.so.1"),
        ("libnvidia-ml.so.1", LIB_DIR, "libnvidia-ml.so"),
        ("libnvidia-ml.so." + V, LIB_DIR, "libnvidia-ml.so.1"),
        ("libnvidia-ptxjitcompiler.so.1", LIB_DIR, "libnvidia-ptxjitcompiler.so"),
        ("libnvidia-ptxjitcompiler.so." + V, LIB_DIR, "libnvidia-ptxjitcompiler.so.1"),
    ]


def test_graphics_gets_glvnds_indirect_glx_link(driver_root):
    found = discover(driver_root.path).library_links(ALL_CAPABILITIES)
    assert ("libGLX_nvidia.so.0", LIB_DIR, "libGLX_indirect.so.0") in found
    assert ("libnvidia-encode.so.1", LIB_DIR, "libnvidia-encode.so") in found
    assert not [link for link in discover(driver_root.path).library_links(("utility",)) if "cuda" in link[2]]


def test_runtime_hook_and_cdi_spec_carry_the_same_links(driver_root):
    from nvdocker_setup.cdi import spec as cdi_spec

    driver = discover(driver_root.path)
    runtime = hook_links(common_edits(driver, ALL_CAPABILITIES, HOOK, "/rootfs"))
    assert rules.format_link("libcuda.so.1", LIB_DIR, "libcuda.so") in runtime
    generated = cdi_spec.generate(driver, HOOK)
    text = repr(generated)
    for value in runtime:
        assert value in text


def test_the_cdi_version_does_not_depend_on_the_links(driver_root, monkeypatch):
    from nvdocker_setup.cdi import spec as cdi_spec

    driver = discover(driver_root.path)
    with_links = cdi_spec.generate(driver, HOOK)
    monkeypatch.setattr(Driver, "library_links", lambda self, capabilities, word_size=64: [])
    without = cdi_spec.generate(discover(driver_root.path), HOOK)
    assert "--link" in repr(with_links) and "--link" not in repr(without)
    assert with_links["cdiVersion"] == without["cdiVersion"]


@pytest.fixture
def own_root(tmp_path):
    return driver_root_or_skip(str(tmp_path / "root"))


def lib(root, name=""):
    return os.path.join(root.path, LIB_DIR.lstrip("/"), name)


def test_without_the_hosts_development_links_only_nvidias_libcuda_so_is_added(own_root):
    for name in ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so", "libnvidia-encode.so"):
        os.unlink(lib(own_root, name))
    reindex(own_root.path)
    names = {name: target for target, _, name in discover(own_root.path).library_links(DEFAULT_CAPABILITIES)}
    assert names["libcuda.so"] == "libcuda.so.1"  # NVIDIA adds it: applications dlopen it
    assert "libnvidia-ml.so" not in names and names["libnvidia-ml.so.1"] == "libnvidia-ml.so." + V


def test_links_that_leave_their_directory_are_not_copied(own_root):
    elsewhere = os.path.join(own_root.path, "opt", "other")
    os.makedirs(elsewhere)
    os.rename(lib(own_root, "libnvidia-ml.so." + V), os.path.join(elsewhere, "libnvidia-ml.so." + V))
    os.unlink(lib(own_root, "libnvidia-ml.so.1"))
    os.symlink("../../../opt/other/libnvidia-ml.so." + V, lib(own_root, "libnvidia-ml.so.1"))
    os.unlink(lib(own_root, "libcuda.so"))
    os.symlink(LIB_DIR + "/libcuda.so.1", lib(own_root, "libcuda.so"))  # absolute, same directory: fine
    reindex(own_root.path)
    found = discover(own_root.path).library_links(DEFAULT_CAPABILITIES)
    # the host's target text ("../../../opt/other/...") is never copied: the container's link names
    # the mounted file, a plain name in the same directory (as for Debian's alternatives)
    ml = [link for link in found if "nvidia-ml" in link[2]]
    assert ml and all(target == "libnvidia-ml.so." + V and "/" not in target for target, _d, _n in ml), ml
    assert ("libcuda.so.1", LIB_DIR, "libcuda.so") in found


def test_merged_usr_links_land_in_the_resolved_directory(own_root):
    """A cache entry under /lib/x86_64-linux-gnu, with /lib -> usr/lib (merged /usr)."""
    with open(os.path.join(own_root.path, "etc", "ld.so.conf"), "w") as handle:
        handle.write("/lib/x86_64-linux-gnu\n")
    os.symlink("usr/lib", os.path.join(own_root.path, "lib-merged"))
    os.rename(os.path.join(own_root.path, "lib"), os.path.join(own_root.path, "lib-firmware"))
    os.rename(os.path.join(own_root.path, "lib-merged"), os.path.join(own_root.path, "lib"))
    reindex(own_root.path)
    found = discover(own_root.path).library_links(("compute",))
    assert ("libcuda.so.1", LIB_DIR, "libcuda.so") in found


def test_the_number_of_links_is_bounded(own_root):
    """ldconfig keeps one entry per SONAME, so the many links come as cache entries of our own."""
    from nvdocker_setup.driver.ldcache import CacheEntry

    driver = discover(own_root.path)
    entries = list(driver.cache_entries())
    for index in range(rules.MAX_LINKS + 10):
        name = "libcuda.so.x{}".format(index)
        os.symlink("libcuda.so.1", lib(own_root, name))
        entries.append(CacheEntry(name, LIB_DIR + "/" + name, 0x0303))  # libc6, x86-64
    driver._cache = entries
    found = driver.library_links(("compute",))
    assert len(found) == rules.MAX_LINKS
    assert len(hook_links(common_edits(driver, ("compute", "compat32"), HOOK))) == rules.MAX_LINKS


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "x" * 256, "\ud800"])
def test_names_that_are_not_plain_entries(name):
    assert not rules.is_plain_name(name)


def test_plain_directories():
    assert rules.is_plain_directory("/usr/lib/x86_64-linux-gnu")
    for bad in ("/", "", "usr/lib", "/usr/../etc", "/usr//lib", "/usr/lib/", "/usr/./lib", "/" + "d/" * 600 + "d"):
        assert not rules.is_plain_directory(bad), bad
