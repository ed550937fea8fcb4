"""NVIDIA's real driver files (Debian 12's 535 packages, tests/support/real_driver.py) through the
runtime, in a Debian 12 image, on both layouts a host has: Debian's (alternatives links into
``nvidia/current``) and NVIDIA's ``.run`` installer's (issue #20, items 1 and 2).

No GPU is attached here: the real ``nvidia-smi`` runs far enough to say it cannot talk to the driver
(exit 9, which proves it found ``libnvidia-ml.so.1``), and a small program ``dlopen``s the real
``libcuda.so.1`` and calls ``cuInit`` (an error code, no crash)."""

import os
import subprocess
import sys

import pytest

from nvdocker_setup.runtime.config import hook_script
from tests.support.real_driver import real_driver_or_skip
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

pytestmark = pytest.mark.dockerd

LAYOUTS = ("debian", "run")
IMAGE = "bookworm:real-driver"
CUINIT = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("dlopen failed: %s\n", dlerror()); return 2; }
    int (*cu_init)(unsigned int) = (int (*)(unsigned int))dlsym(cuda, "cuInit");
    if (!cu_init) { printf("no cuInit\n"); return 3; }
    printf("cuInit=%d\n", cu_init(0));
    return 0;
}
"""
#: Libraries of capabilities a compute,utility container did not ask for.
NOT_REQUESTED = ("libGLX_nvidia", "libEGL_nvidia", "libnvidia-glcore", "libnvidia-eglcore", "libnvidia-encode",
                 "libnvcuvid", "libnvidia-rtcore", "libnvoptix", "libnvidia-fbc", "libnvidia-ngx")


class Lab:
    def __init__(self, sandbox: DockerdSandbox, conf: str, driver, cuinit: str) -> None:
        self.sandbox = sandbox
        self.conf = conf
        self.driver = driver
        self.cuinit = cuinit

    def use(self, layout: str) -> str:
        root = getattr(self.driver, layout)
        with open(self.conf, "w") as handle:
            handle.write("[runtime]\nruntimes = runc\ndriver-root = {}\n".format(root))
        return root

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return self.sandbox.docker("run", "--rm", "--network", "none", "-v", "{}:/cuinit:ro".format(self.cuinit),
                                   *args, check=False, timeout=120)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, launcher):
    dockerd_or_skip()
    driver = real_driver_or_skip()
    from tests.packaging.support import cache_dir, pristine_tarball

    work = str(tmp_path_factory.mktemp("real-driver"))
    os.chmod(work, 0o755)
    cuinit = os.path.join(work, "cuinit")
    with open(cuinit + ".c", "w") as handle:
        handle.write(CUINIT)
    subprocess.run(["gcc", "-O2", "-o", cuinit, cuinit + ".c", "-ldl"], check=True)
    hookdir = os.path.join(work, "hookbin")
    os.makedirs(hookdir, mode=0o755)
    hook = os.path.join(hookdir, "nvidia-container-runtime-hook")
    with open(hook, "w") as handle:
        handle.write('#!/bin/sh\nexec {} -I -S {} "$@"\n'.format(sys.executable, hook_script()))
    os.chmod(hook, 0o755)
    conf = os.path.join(work, "runtime.conf")
    sandbox = DockerdSandbox(
        os.path.join(work, "dockerd"), daemon_json=('{"runtimes": {"nvidia": {"path": "%s"}}}\n' % launcher).encode(),
        path_prepend=[hookdir], env={"NVDOCKER_RUNTIME_CONFIG": conf},
    )
    sandbox.start()
    try:
        with open(str(pristine_tarball(cache_dir())), "rb") as handle:
            sandbox.docker("import", "-", IMAGE, input=handle.read(), timeout=600)
        yield Lab(sandbox, conf, driver, cuinit)
    finally:
        sandbox.close()


def gpu(*extra: str) -> tuple:
    return ("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all") + extra


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_real_nvidia_smi_is_on_path_and_finds_nvml(lab, layout):
    lab.use(layout)
    done = lab.run(*gpu("-e", "NVIDIA_DRIVER_CAPABILITIES=utility"), IMAGE, "sh", "-c",
                   "command -v nvidia-smi; nvidia-smi; echo rc=$?")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert out.splitlines()[0] == "/usr/bin/nvidia-smi", out
    assert "couldn't communicate with the NVIDIA driver" in out and "rc=9" in out, out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_real_libcuda_loads_and_cuinit_returns(lab, layout):
    lab.use(layout)
    done = lab.run(*gpu("-e", "NVIDIA_DRIVER_CAPABILITIES=compute"), IMAGE, "/cuinit")
    out = done.stdout.decode()
    assert done.returncode == 0, (out, done.stderr.decode())
    assert out.startswith("cuInit=") and out.strip() != "cuInit=0", out  # no GPU: an error code, no crash


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_ld_cache_has_every_requested_library_and_nothing_else(lab, layout):
    root = lab.use(layout)
    done = lab.run(*gpu("-e", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"), IMAGE, "sh", "-c",
                   "ldconfig -p; ls /usr/lib/x86_64-linux-gnu /usr/share/vulkan/icd.d /usr/share/glvnd/egl_vendor.d 2>&1; true")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    cache = {line.split()[0] for line in out.splitlines() if "=>" in line}
    for soname in ("libcuda.so.1", "libcuda.so", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1",
                   "libnvidia-nvvm.so.4"):
        assert soname in cache, (soname, sorted(n for n in cache if "nvidia" in n or "cuda" in n))
    assert not [name for name in NOT_REQUESTED if name in out], out
    assert "nvidia_icd.json" not in out and "10_nvidia.json" not in out
    # every compute/utility library the layout has in its ld cache is in the container's
    host_cache = subprocess.run(["ldconfig", "-p", "-C", os.path.join(root, "etc/ld.so.cache")],
                                stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    wanted = {line.split()[0] for line in host_cache.splitlines()
              if line.split()[:1] and line.split()[0].startswith(("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"))}
    assert wanted and wanted <= cache, (wanted, cache)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_docker_gpus_gets_the_same(lab, layout):
    lab.use(layout)
    done = lab.run("--runtime", "nvidia", "--gpus", "all", IMAGE, "sh", "-c", "nvidia-smi; echo rc=$?; /cuinit")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "rc=9" in out and "cuInit=" in out, out


#: capability -> (files the container must have, SONAMEs its ld cache must list), from NVIDIA's list.
EXPECTED = {
    "compute": (("/etc/OpenCL/vendors/nvidia.icd",), ("libcuda.so.1", "libnvidia-opencl.so.1", "libnvidia-nvvm.so.4")),
    "graphics": (("/usr/share/vulkan/icd.d/nvidia_icd.json", "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
                  "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
                  "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
                  "/usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so", "/usr/share/nvidia/nvoptix.bin"),
                 ("libGLX_nvidia.so.0", "libEGL_nvidia.so.0", "libnvidia-glcore.so.535.261.03", "libnvidia-egl-gbm.so.1",
                  "libnvidia-egl-wayland.so.1", "libnvoptix.so.1")),
    "video": (("/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1",), ("libnvcuvid.so.1", "libnvidia-encode.so.1")),
    "utility": (("/usr/bin/nvidia-smi",), ("libnvidia-ml.so.1",)),
    "ngx": ((), ("libnvidia-ngx.so.1",)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("capability", sorted(EXPECTED))
def test_each_capability_gets_its_files_and_the_others_do_not(lab, layout, capability):
    lab.use(layout)
    files, sonames = EXPECTED[capability]
    everything = sorted({f for fs, _ in EXPECTED.values() for f in fs})
    script = "ldconfig -p; for f in {}; do test -e $f && echo present:$f; done; true".format(" ".join(everything))
    done = lab.run(*gpu("-e", "NVIDIA_DRIVER_CAPABILITIES=" + capability), IMAGE, "sh", "-c", script)
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    present = {line.split(":", 1)[1] for line in out.splitlines() if line.startswith("present:")}
    cache = {line.split()[0] for line in out.splitlines() if "=>" in line}
    assert set(files) <= present, (capability, sorted(present))
    assert not (present - set(files)), "files of other capabilities: {}".format(sorted(present - set(files)))
    missing = [name for name in sonames if name not in cache]
    assert not missing, (missing, sorted(n for n in cache if "nv" in n.lower() or "cuda" in n))


BY_PATH = ["pci-0000:86:00.0-card -> ../card2", "pci-0000:86:00.0-render -> ../renderD129"]  # GPU 1's


@pytest.mark.parametrize("capability, expected, links", [
    ("graphics", ["by-path", "card2", "renderD129"], BY_PATH),
    ("video", ["by-path", "card2", "renderD129"], BY_PATH),
    ("compute,utility", [], []),
])
def test_dev_dri_has_the_requested_gpus_nodes_for_graphics_and_video(lab, capability, expected, links):
    """The nodes and udev's by-path links to them (found by bus id: what Vulkan and EGL device
    selection read), made by our hook inside the container."""
    lab.use("debian")
    done = lab.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=1", "-e", "NVIDIA_DRIVER_CAPABILITIES=" + capability,
                   IMAGE, "sh", "-c", "ls /dev/dri 2>/dev/null; echo ==; for f in /dev/dri/by-path/*; do "
                   "[ -L \"$f\" ] || continue; echo \"${f##*/} -> $(readlink \"$f\")\"; test -c \"$f\" || exit 3; done; true")
    assert done.returncode == 0, done.stderr.decode()
    nodes, _, by_path = done.stdout.decode().partition("==\n")
    assert sorted(nodes.split()) == expected
    assert sorted(by_path.splitlines()) == links
