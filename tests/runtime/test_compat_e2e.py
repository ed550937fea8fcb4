"""CUDA forward compatibility through a real ``docker run`` (issue #11, item 3).

A private dockerd whose ``nvidia`` runtime is our C launcher, on the simulated driver root
(driver 550.54.14). Images built from static busybox carry a real ELF ``libcuda.so.<version>``
(SONAME ``libcuda.so.1``) in ``/usr/local/cuda/compat``; inside the container we read our conf
file and the ld cache the hook's ldconfig wrote (parsed here with driver/ldcache.py): a library of
a newer driver branch (600.1) puts the compat directory first, an older one (500.1) leaves the
driver's ``libcuda.so.1`` first and the compat directory out.
"""

import os
import subprocess

import pytest

from nvdocker_setup.driver import ldcache
from nvdocker_setup.driver.compat import COMPAT_DIR
from tests.runtime.test_hook_escape_e2e import import_image, tiny_rootfs
from tests.support.sandbox import dockerd_or_skip, gpu_sandbox

pytestmark = pytest.mark.dockerd

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
CONF = "/etc/ld.so.conf.d/00-nvdocker.conf"
SEPARATOR = b"\n=====ld.so.cache=====\n"


def stub_libcuda(path):
    source = path + ".c"
    with open(source, "w") as handle:
        handle.write("int cuInit(unsigned int flags) { return (int)flags; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", path, source], check=True)
    os.unlink(source)


@pytest.fixture(scope="module")
def compat_docker(tmp_path_factory, driver_root, launcher):
    dockerd_or_skip()
    work = str(tmp_path_factory.mktemp("compat"))
    os.chmod(work, 0o755)
    sandbox = gpu_sandbox(work, launcher, driver_root.path, gpus_hook=True)
    sandbox.start()
    try:
        for version in ("600.1", "500.1"):
            rootfs = tiny_rootfs(os.path.join(work, "image-" + version))
            compat = os.path.join(rootfs, COMPAT_DIR.lstrip("/"))
            os.makedirs(compat)
            stub_libcuda(os.path.join(compat, "libcuda.so." + version))
            os.symlink("libcuda.so." + version, os.path.join(compat, "libcuda.so.1"))  # as CUDA images ship it
            import_image(sandbox, rootfs, "compat:" + version, ["NVIDIA_VISIBLE_DEVICES=all"])
        yield sandbox
    finally:
        sandbox.close()


def conf_and_cache(sandbox, image):
    """Our conf file's folders and the container's ld cache entries, read inside the container."""
    script = "cat {}; printf '{}'; cat /etc/ld.so.cache".format(CONF, SEPARATOR.decode().replace("\n", "\\n"))
    done = sandbox.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", image, "sh", "-c", script,
                          check=False, timeout=90)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    conf, _, cache = done.stdout.partition(SEPARATOR)
    folders = [line for line in conf.decode().splitlines() if line and not line.startswith("#")]
    return folders, ldcache.parse(cache)


def libcuda_dirs(entries):
    return [os.path.dirname(entry.path) for entry in entries if entry.name == "libcuda.so.1"]


def test_a_newer_compat_libcuda_comes_first_in_the_container(compat_docker):
    folders, entries = conf_and_cache(compat_docker, "compat:600.1")
    assert folders[0] == COMPAT_DIR and LIB_DIR in folders
    assert libcuda_dirs(entries) == [COMPAT_DIR, LIB_DIR]


def test_an_older_compat_libcuda_leaves_the_driver_first(compat_docker):
    folders, entries = conf_and_cache(compat_docker, "compat:500.1")
    assert COMPAT_DIR not in folders and LIB_DIR in folders
    assert libcuda_dirs(entries) == [LIB_DIR]
