"""Library links through a CDI spec on Docker 26 (issue #14, item 2).

With ``features.cdi`` dockerd applies the spec ``cdi generate`` wrote, and runc runs its
createContainer hook (our ``update-ldcache``, with ``--link``) reading the root from the state on
stdin. The container gets ``libcuda.so -> libcuda.so.1`` as with our runtime; an image whose
library directory is a symlink to a host path, or that planted ``libcuda.so``, changes no host file.
"""

import json
import os

import pytest

from tests.newer_docker.test_hook_security26 import generate_spec, run26
from tests.runtime.test_hook_escape_e2e import hashes_of, import_image, tiny_rootfs
from tests.support.driver_root import simulated_driver_root_fixture
from tests.support.newer_docker import docker26_or_skip, sandbox26

pytestmark = pytest.mark.dockerd

LIB_DIR = "/usr/lib/x86_64-linux-gnu"


@pytest.fixture(scope="module")
def docker26_dir():
    return docker26_or_skip()


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


class Box:
    def __init__(self, box, work, spec, host):
        self.box = box
        self.work = work
        self.spec = spec
        self.host = host  # host dir the planted symlinks point at


@pytest.fixture(scope="module")
def cdi26(tmp_path_factory, docker26_dir, driver_root):
    work = str(tmp_path_factory.mktemp("links26"))
    os.chmod(work, 0o755)
    specs = os.path.join(work, "cdi")
    os.makedirs(specs, mode=0o755)
    spec = generate_spec(driver_root, os.path.join(specs, "nvdocker.json"))
    host = os.path.join(work, "host")
    os.makedirs(os.path.join(host, "x86_64-linux-gnu"))
    with open(os.path.join(host, "sentinel"), "w") as handle:
        handle.write("host file, must not change\n")
    daemon = {"features": {"cdi": True}, "cdi-spec-dirs": [specs]}
    box = sandbox26(docker26_dir, os.path.join(work, "d"), json.dumps(daemon).encode())
    box.start()
    try:
        assert box.info()["ServerVersion"].startswith("26.")
        box.import_tiny_image()
        yield Box(box, work, spec, host)
    finally:
        box.close()


def test_the_cdi_spec_hook_carries_the_links(cdi26):
    (hook,) = cdi26.spec["containerEdits"]["hooks"]
    links = [hook["args"][i + 1] for i, arg in enumerate(hook["args"]) if arg == "--link"]
    assert "libcuda.so.1::{}/libcuda.so".format(LIB_DIR) in links
    assert "libGLX_nvidia.so.0::{}/libGLX_indirect.so.0".format(LIB_DIR) in links  # the spec has every capability
    assert hook["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


@pytest.mark.parametrize("device", ["nvidia.com/gpu=0", "nvidia.com/gpu=all"])
def test_cdi_containers_get_libcuda_so(docker26_dir, cdi26, driver_root, device):
    script = "ls -l {0}; echo ---; for n in libcuda.so libnvidia-ml.so libGLX_indirect.so.0; do readlink {0}/$n; done".format(LIB_DIR)
    done, _ = run26(docker26_dir, cdi26.box, "--device", device, "tiny", "sh", "-c", script)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    listing, targets = done.stdout.decode().split("---\n")
    assert "libcuda.so -> libcuda.so.1" in listing, listing
    assert targets.split() == ["libcuda.so.1", "libnvidia-ml.so.1", "libGLX_nvidia.so.0"]


@pytest.mark.parametrize("name", ["lib_dir_is_a_link", "libcuda_so_is_a_link", "libcuda_so_is_a_fifo"])
def test_cdi_links_never_touch_the_host(docker26_dir, cdi26, driver_root, name):
    rootfs = tiny_rootfs(os.path.join(cdi26.work, "image-" + name))
    lib = os.path.join(rootfs, LIB_DIR.lstrip("/"))
    os.makedirs(os.path.dirname(lib), exist_ok=True)
    if name == "lib_dir_is_a_link":
        os.symlink(os.path.join(cdi26.host, "x86_64-linux-gnu"), lib)
    else:
        os.makedirs(lib)
        if name == "libcuda_so_is_a_link":
            os.symlink(os.path.join(cdi26.host, "sentinel"), os.path.join(lib, "libcuda.so"))
        else:
            os.mkfifo(os.path.join(lib, "libcuda.so"))
    image = import_image(cdi26.box, rootfs, "links26-{}:latest".format(name.replace("_", "-")), [])
    watched = [cdi26.host, driver_root.host(LIB_DIR), driver_root.host("/etc")]
    before = hashes_of(watched)
    done, took = run26(docker26_dir, cdi26.box, "--device", "nvidia.com/gpu=0", image, "sh", "-c",
                       "stat -c %F {0}/libcuda.so; readlink {0}/libcuda.so.1".format(LIB_DIR))
    assert hashes_of(watched) == before
    assert os.listdir(os.path.join(cdi26.host, "x86_64-linux-gnu")) == []
    assert took < 30 and done.returncode == 0, done.stderr.decode(errors="replace")
    lines = done.stdout.decode().splitlines()
    assert "libcuda.so." + driver_root.version in lines  # the hook ran
    if name == "libcuda_so_is_a_fifo":
        assert lines[0] == "fifo"
