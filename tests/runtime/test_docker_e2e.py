"""End to end: a private dockerd whose nvidia runtime is our launcher, on a simulated 2-GPU driver.

One sandbox for the module. The runtime is registered in the sandbox's daemon.json by the
project's own install (as default runtime), plus a second runtime "nvidia-probe" that copies each
bundle's config.json before our launcher sees it; the "real runtime" our launcher execs is a
wrapper that copies it again after us, then execs runc. dockerd starts with the hook on its PATH
as nvidia-container-runtime-hook, so `--gpus` is registered, and with NVDOCKER_DRIVER_ROOT and
NVDOCKER_RUNTIME_CONFIG in its environment, which reach the runtime.
"""

import json
import os
import re
import shutil
import sys
import time

import pytest

from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.operations import install
from nvdocker_setup.runtime.config import hook_script
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip, engine_runc

pytestmark = pytest.mark.dockerd

CAPTURE_SCRIPT = """#!/bin/sh
# Copy the bundle's config.json to {capture}/{stage}.json on create, then exec {target}.
bundle=""
prev=""
create=""
for arg in "$@"; do
  if [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; then bundle="$arg"; fi
  if [ "$arg" = "create" ]; then create=1; fi
  prev="$arg"
done
if [ -n "$create" ] && [ -n "$bundle" ]; then cp "$bundle/config.json" "{capture}/{stage}.json"; fi
exec {target} "$@"
"""


def executable(path: str, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return path


class GpuDocker:
    def __init__(self, sandbox: DockerdSandbox, capture: str) -> None:
        self.sandbox = sandbox
        self.capture = capture

    def run(self, *args: str, check: bool = True):
        for stage in ("before", "after"):
            path = os.path.join(self.capture, stage + ".json")
            if os.path.exists(path):
                os.unlink(path)
        return self.sandbox.docker("run", "--rm", "--network", "none", *args, check=check)

    def captured(self, stage: str) -> bytes:
        with open(os.path.join(self.capture, stage + ".json"), "rb") as handle:
            return handle.read()


@pytest.fixture(scope="module")
def gpu_docker(tmp_path_factory, driver_root, launcher):
    dockerd_or_skip()
    runc = engine_runc()
    work = str(tmp_path_factory.mktemp("gpu-docker"))
    os.chmod(work, 0o755)
    capture = os.path.join(work, "capture")
    bindir = os.path.join(work, "bin")
    hookdir = os.path.join(work, "hookbin")
    for directory in (capture, bindir, hookdir):
        os.makedirs(directory, mode=0o755)
    after = executable(os.path.join(bindir, "capture-after"), CAPTURE_SCRIPT.format(capture=capture, stage="after", target=runc))
    probe = executable(os.path.join(bindir, "nvidia-probe"), CAPTURE_SCRIPT.format(capture=capture, stage="before", target=launcher))
    executable(
        os.path.join(hookdir, "nvidia-container-runtime-hook"),
        '#!/bin/sh\nexec {} -I -S {} "$@"\n'.format(sys.executable, hook_script()),
    )
    runtime_conf = os.path.join(work, "runtime.conf")
    with open(runtime_conf, "w") as handle:
        handle.write("[runtime]\nruntimes = {}\n".format(after))
    sandbox = DockerdSandbox(
        os.path.join(work, "dockerd"),
        path_prepend=[hookdir],
        env={"NVDOCKER_DRIVER_ROOT": driver_root.path, "NVDOCKER_RUNTIME_CONFIG": runtime_conf},
    )
    sandbox.start()
    try:
        ctx = Context(env=dict(os.environ), state_dir=os.path.join(work, "state"))
        install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=launcher, set_default=True), config=sandbox.config_path)
        install(ctx, InstallRequest(runtime_name="nvidia-probe", runtime_path=probe), config=sandbox.config_path)
        sandbox.reload()
        deadline = time.monotonic() + 20
        while not {"nvidia", "nvidia-probe"} <= set(sandbox.info().get("Runtimes", {})):
            assert time.monotonic() < deadline, "dockerd did not pick up the runtimes: " + sandbox.log_tail()
            time.sleep(0.2)
        assert sandbox.info()["DefaultRuntime"] == "nvidia"
        sandbox.import_tiny_image()
        yield GpuDocker(sandbox, capture)
    finally:
        sandbox.close()


def device_lines(listing: str):
    """{name: (major, minor)} of character devices in busybox `ls -l /dev` output."""
    found = {}
    for line in listing.splitlines():
        match = re.match(r"c\S+\s+\d+\s+\S+\s+\S+\s+(\d+),\s+(\d+)\s+.*\s(\S+)$", line)
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def test_all_gpus_nvidia_smi_and_libraries(gpu_docker, driver_root):
    script = ("ls -l /dev; echo ---; nvidia-smi -L; echo ---; ls /usr/lib/x86_64-linux-gnu; echo ---; "
              "readlink /usr/lib/x86_64-linux-gnu/libcuda.so.1")
    done = gpu_docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all", "tiny", "sh", "-c", script)
    devices, smi, libs, link = done.stdout.decode().split("---\n")
    found = device_lines(devices)
    assert found["nvidia0"] == (195, 0) and found["nvidia1"] == (195, 1) and found["nvidiactl"] == (195, 255)
    assert found["nvidia-uvm"] == (510, 0)
    assert smi == driver_root.smi_listing
    assert {"libcuda.so.550.54.14", "libnvidia-ml.so.550.54.14", "libnvidia-ptxjitcompiler.so.550.54.14"} <= set(libs.split())
    assert "libnvidia-encode.so.550.54.14" not in libs  # video was not requested
    assert link.strip() == "libcuda.so.550.54.14"  # the ld cache hook ran ldconfig in the container


def link_lines(listing):
    """{name: target} of the symlinks in busybox `ls -l` output."""
    found = {}
    for line in listing.splitlines():
        match = re.match(r"l\S+\s+.*\s(\S+) -> (\S+)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("request_by", ["env", "gpus"])
def test_the_hosts_library_links_are_in_the_container(gpu_docker, driver_root, request_by):
    """Issue #14 item 2: `libcuda.so`, which applications dlopen, is there like on the host."""
    request = ["-e", "NVIDIA_VISIBLE_DEVICES=0"] if request_by == "env" else ["--gpus", "device=0"]
    script = "ls -l /usr/lib/x86_64-linux-gnu; echo ---; cat /etc/ld.so.cache"
    done = gpu_docker.run("--runtime", "nvidia", *request, "tiny", "sh", "-c", script)
    listing, cache = done.stdout.decode(errors="replace").split("---\n")
    links = link_lines(listing)
    assert links["libcuda.so"] == "libcuda.so.1", listing
    assert links["libnvidia-ml.so"] == "libnvidia-ml.so.1"
    assert links["libcuda.so.1"] == "libcuda.so." + driver_root.version
    assert "libnvidia-encode.so" not in links  # video was not requested
    # created before the hook's ldconfig: the container's ld cache lists the name
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so\x00" in cache


def test_no_library_links_without_a_request(gpu_docker):
    done = gpu_docker.run("--runtime", "nvidia", "tiny", "sh", "-c", "ls /usr/lib/x86_64-linux-gnu 2>&1; true")
    assert "libcuda" not in done.stdout.decode()


def test_one_gpu_by_index(gpu_docker):
    done = gpu_docker.run("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=1", "tiny", "ls", "-l", "/dev")
    found = device_lines(done.stdout.decode())
    assert found["nvidia1"] == (195, 1) and "nvidia0" not in found and "nvidiactl" in found


def test_no_request_leaves_config_json_byte_identical(gpu_docker):
    done = gpu_docker.run("--runtime", "nvidia-probe", "-e", "NVIDIA_DRIVER_CAPABILITIES=all", "tiny", "ls", "/dev")
    assert "nvidia0" not in done.stdout.decode()
    before, after = gpu_docker.captured("before"), gpu_docker.captured("after")
    assert before == after and b"/dev/nvidia" not in after


def test_docker_gpus_with_nvidia_as_default_runtime(gpu_docker):
    done = gpu_docker.run("--gpus", "all", "tiny", "ls", "/dev")
    assert {"nvidia0", "nvidia1", "nvidiactl"} <= set(done.stdout.decode().split())
    spec = json.loads(gpu_docker.captured("after"))
    prestart = spec.get("hooks", {}).get("prestart", [])
    assert not any(hook["path"].endswith("nvidia-container-runtime-hook") for hook in prestart)
    assert any("update-ldcache" in hook.get("args", []) for hook in spec["hooks"]["createContainer"])


def test_docker_gpus_under_plain_runc_says_how_to_fix_it(gpu_docker):
    if shutil.which("nvidia-container-cli"):
        pytest.skip("NVIDIA's nvidia-container-cli is installed here: the hook would delegate to it")
    done = gpu_docker.run("--runtime", "runc", "--gpus", "all", "tiny", "true", check=False)
    assert done.returncode != 0
    assert "nvdocker-setup install --default-runtime" in done.stderr.decode()


@pytest.mark.parametrize(
    "env, fragment",
    [
        (["NVIDIA_VISIBLE_DEVICES=7"], "unknown GPU '7': this host has GPU 0"),
        (["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=12.9"], "unsatisfied requirement NVIDIA_REQUIRE_CUDA"),
    ],
)
def test_a_bad_request_fails_docker_run_with_our_message(gpu_docker, env, fragment):
    flags = [item for pair in (("-e", value) for value in env) for item in pair]
    done = gpu_docker.run("--runtime", "nvidia", *flags, "tiny", "true", check=False)
    stderr = done.stderr.decode()
    assert done.returncode != 0 and fragment in stderr and "nvdocker-runtime" in stderr, stderr
