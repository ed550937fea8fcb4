"""MIG devices and IMEX channels end to end (issue #11, item 4).

On a private dockerd 20.10 whose ``nvidia`` runtime is the C launcher (real runtime: runc), on the
simulated driver root with MIG on GPU 0 (GPU instances 1 and 2, one compute instance each: MIG
devices ``0:0`` and ``0:1``, capability minors 12/13 and 21/22) and IMEX channels 0 and 1. The
container lists its device nodes with their major:minor, which runc made from the spec we wrote.
runtime.conf has ``accept-device-list-as-volume-mounts = true``, for IMEX channels passed as mounts.
"""

import os
import time

import pytest

from tests.support.driver_root import CAPS_MAJOR, IMEX_MAJOR, MIG_UUIDS, NVIDIA_MAJOR
from tests.support.sandbox import dockerd_or_skip, gpu_sandbox

pytestmark = pytest.mark.dockerd

#: Every character device under /dev, as "path major:minor" (busybox stat, hex numbers).
LIST_DEVICES = "find /dev -type c -exec stat -c '%n %t:%T' {} +"


@pytest.fixture(scope="module")
def box(tmp_path_factory, mig_root, launcher):
    dockerd_or_skip()
    work = str(tmp_path_factory.mktemp("mig"))
    os.chmod(work, 0o755)
    sandbox = gpu_sandbox(work, launcher, mig_root.path, "accept-device-list-as-volume-mounts = true\n")
    sandbox.start()
    try:
        sandbox.import_tiny_image()
        yield sandbox
    finally:
        sandbox.close()


def run(box, *args):
    started = time.monotonic()
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", *args, check=False, timeout=60)
    return done, time.monotonic() - started


def nvidia_devices(box, *flags):
    """{path: (major, minor)} of the NVIDIA nodes the container has."""
    done, _ = run(box, *flags, "tiny", "sh", "-c", LIST_DEVICES)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    found = {}
    for line in done.stdout.decode().splitlines():
        path, _, numbers = line.rpartition(" ")
        if path.startswith("/dev/nvidia"):
            major, minor = numbers.split(":")
            found[path] = (int(major, 16), int(minor, 16))
    return found


CONTROL = {"/dev/nvidiactl", "/dev/nvidia-modeset", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}


def test_a_mig_device_gives_its_gpu_and_its_capability_nodes_and_nothing_of_gpu_1(box):
    devices = nvidia_devices(box, "-e", "NVIDIA_VISIBLE_DEVICES=0:1")
    assert set(devices) - CONTROL == {"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"}
    assert devices["/dev/nvidia0"] == (NVIDIA_MAJOR, 0)
    assert devices["/dev/nvidia-caps/nvidia-cap21"] == (CAPS_MAJOR, 21)
    assert devices["/dev/nvidia-caps/nvidia-cap22"] == (CAPS_MAJOR, 22)


def test_a_mig_uuid_gives_the_same_as_its_index(box):
    devices = nvidia_devices(box, "-e", "NVIDIA_VISIBLE_DEVICES=" + MIG_UUIDS[0])
    assert set(devices) - CONTROL == {"/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13"}


@pytest.mark.parametrize("channel", [0, 1])
def test_an_imex_channel_gives_only_that_channel(box, channel):
    devices = nvidia_devices(box, "-e", "NVIDIA_IMEX_CHANNELS={}".format(channel))
    assert devices == {"/dev/nvidia-caps-imex-channels/channel{}".format(channel): (IMEX_MAJOR, channel)}


def test_imex_all_with_a_gpu(box):
    devices = nvidia_devices(box, "-e", "NVIDIA_IMEX_CHANNELS=all", "-e", "NVIDIA_VISIBLE_DEVICES=1")
    assert set(devices) - CONTROL == {"/dev/nvidia1", "/dev/nvidia-caps-imex-channels/channel0",
                                      "/dev/nvidia-caps-imex-channels/channel1"}


def test_mig_config_needs_a_privileged_container_and_then_gets_the_config_capability(box):
    done, took = run(box, "-e", "NVIDIA_MIG_CONFIG_DEVICES=all", "tiny", "echo", "STARTED")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and b"STARTED" not in done.stdout, stderr
    assert "NVIDIA_MIG_CONFIG_DEVICES='all' asks for MIG configuration access, which only a privileged" in stderr
    assert took < 10 and len(stderr) < 4000
    devices = nvidia_devices(box, "--cap-add", "SYS_ADMIN", "-e", "NVIDIA_MIG_CONFIG_DEVICES=0",
                             "-e", "NVIDIA_MIG_MONITOR_DEVICES=all")
    assert devices == {"/dev/nvidia-caps/nvidia-cap1": (CAPS_MAJOR, 1), "/dev/nvidia-caps/nvidia-cap2": (CAPS_MAJOR, 2)}


@pytest.mark.parametrize(
    "env, fragment",
    [
        (["NVIDIA_VISIBLE_DEVICES=0:2"], "unknown MIG device '0:2': this host has 0:0 (GPU instance 1"),
        (["NVIDIA_VISIBLE_DEVICES=1:0"], "GPU 1 is not in MIG mode"),
        (["NVIDIA_VISIBLE_DEVICES=MIG-00000000-0000-0000-0000-000000000000"], "unknown MIG device"),
        (["NVIDIA_IMEX_CHANNELS=7"], "unknown IMEX channel '7': this host has channels 0, 1"),
        (["NVIDIA_IMEX_CHANNELS=x"], "cannot read IMEX channel 'x'"),
        (["--cap-add", "SYS_ADMIN", "NVIDIA_MIG_CONFIG_DEVICES=1"], "GPU 1 asked for, but it is not in MIG mode"),
    ],
    ids=["unknown-mig", "gpu-not-mig", "unknown-mig-uuid", "unknown-channel", "bad-channel", "config-not-mig"],
)
def test_what_does_not_exist_fails_docker_run_with_our_message(box, env, fragment):
    flags = [item for value in env for item in ((value,) if value.startswith("-") or value == "SYS_ADMIN" else ("-e", value))]
    done, took = run(box, *flags, "tiny", "echo", "STARTED")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and b"STARTED" not in done.stdout, stderr
    assert "nvdocker-runtime: " in stderr and fragment in stderr, stderr
    assert took < 10 and len(stderr) < 4000


def test_an_oversized_imex_value_is_refused_by_its_size(box):
    done, took = run(box, "-e", "NVIDIA_IMEX_CHANNELS=" + "0," * 20000, "tiny", "true")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and "NVIDIA_IMEX_CHANNELS is 40000 characters long; at most 8192 are accepted" in stderr
    assert took < 10 and len(stderr) < 4000


def test_void_asks_for_nothing_and_the_container_runs(box):
    devices = nvidia_devices(box, "-e", "NVIDIA_IMEX_CHANNELS=void", "-e", "NVIDIA_VISIBLE_DEVICES=0")
    assert set(devices) - CONTROL == {"/dev/nvidia0"}


def test_an_imex_channel_as_a_volume_mount_gives_only_that_channel_and_no_mount(box):
    """NVIDIA's device-plugin path: /dev/null at /var/run/nvidia-container-devices/imex/1; the
    variable's channel 0 is ignored, and the container has no such mount left."""
    devices = nvidia_devices(box, "-v", "/dev/null:/var/run/nvidia-container-devices/imex/1:ro",
                             "-e", "NVIDIA_IMEX_CHANNELS=0")
    assert devices == {"/dev/nvidia-caps-imex-channels/channel1": (IMEX_MAJOR, 1)}
    done, _ = run(box, "-v", "/dev/null:/var/run/nvidia-container-devices/imex/1:ro", "tiny", "sh", "-c",
                  "ls /var/run/nvidia-container-devices/imex/1 2>&1; echo done")
    assert done.returncode == 0 and b"No such file" in done.stdout, done.stdout
