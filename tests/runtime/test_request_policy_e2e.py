"""Request policy on a real dockerd (issue #11, item 6).

A private dockerd 20.10 whose ``nvidia`` runtime is the C launcher (real runtime: runc), on the
simulated 2-GPU driver root, with ``accept-envvar-when-unprivileged = false`` and
``accept-device-list-as-volume-mounts = true`` in the runtime.conf named by
``NVDOCKER_RUNTIME_CONFIG`` in dockerd's environment. ``--privileged`` cannot start a container on
this VM ("unable to apply caps"), so ``--cap-add SYS_ADMIN`` stands for it: that is what the
policy checks (``CAP_SYS_ADMIN`` in the bounding set), as NVIDIA's does.
"""

import os

import pytest

from tests.support.sandbox import dockerd_or_skip, gpu_sandbox

pytestmark = pytest.mark.dockerd

DEVICE_LIST = "/var/run/nvidia-container-devices"


@pytest.fixture(scope="module")
def box(tmp_path_factory, driver_root, launcher):
    dockerd_or_skip()
    work = str(tmp_path_factory.mktemp("policy"))
    os.chmod(work, 0o755)
    log = os.path.join(work, "nvdocker.log")
    sandbox = gpu_sandbox(work, launcher, driver_root.path, (
        "log = {}\ndebug = true\naccept-envvar-when-unprivileged = false\n"
        "accept-device-list-as-volume-mounts = true\n").format(log), gpus_hook=True)
    sandbox.start()
    try:
        sandbox.import_tiny_image()
        sandbox.log = log
        yield sandbox
    finally:
        sandbox.close()


def gpus_seen(box, *args):
    """The /dev/nvidia<N> nodes a container sees, and whether it saw the device-list directory."""
    script = "ls /dev; echo ---; ls {} 2>&1; true".format(DEVICE_LIST)
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", *args, "tiny", "sh", "-c", script,
                      check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    listing, listed = done.stdout.decode().split("---\n")
    return sorted(name for name in listing.split() if name[len("nvidia"):].isdigit() and name.startswith("nvidia")), listed


def log_text(box):
    with open(box.log) as handle:
        return handle.read()


def test_an_unprivileged_container_gets_no_gpu_from_the_variable_and_the_log_says_why(box):
    gpus, _ = gpus_seen(box, "-e", "NVIDIA_VISIBLE_DEVICES=all")
    assert gpus == []
    assert "NVIDIA_VISIBLE_DEVICES ignored: the container is not privileged" in log_text(box)


def test_a_device_list_mount_gives_exactly_that_gpu_and_the_mount_is_gone(box):
    gpus, listed = gpus_seen(box, "-e", "NVIDIA_VISIBLE_DEVICES=all", "-v", "/dev/null:{}/1".format(DEVICE_LIST))
    assert gpus == ["nvidia1"]
    assert "No such file or directory" in listed  # removed from the spec, never mounted
    assert "devices=1 via mounts" in log_text(box)


def test_cap_sys_admin_makes_the_variable_count(box):
    gpus, _ = gpus_seen(box, "--cap-add", "SYS_ADMIN", "-e", "NVIDIA_VISIBLE_DEVICES=0")
    assert gpus == ["nvidia0"]


def test_docker_gpus_is_the_callers_request_and_counts(box):
    # dockerd appends its NVIDIA_VISIBLE_DEVICES=1 after the container's "all": the last one wins
    gpus, _ = gpus_seen(box, "-e", "NVIDIA_VISIBLE_DEVICES=all", "--gpus", "device=1")
    assert gpus == ["nvidia1"]


def test_an_image_volume_at_the_device_list_path_gives_nothing(box):
    created = box.docker("create", "tiny", "true").stdout.decode().strip()
    try:
        box.docker("commit", "--change", 'VOLUME ["{}/all"]'.format(DEVICE_LIST), created, "policy-volume-image")
    finally:
        box.docker("rm", created)
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", "policy-volume-image", "ls", "/dev",
                      check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert not [name for name in done.stdout.decode().split() if name.startswith("nvidia")]
    assert "whose source is not /dev/null ignored" in log_text(box)


def test_a_cdi_name_in_the_variable_of_a_privileged_container(box):
    gpus, _ = gpus_seen(box, "--cap-add", "SYS_ADMIN", "-e", "NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=1")
    assert gpus == ["nvidia1"]
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", "--cap-add", "SYS_ADMIN",
                      "-e", "NVIDIA_VISIBLE_DEVICES=vendor.com/net=eth0", "tiny", "true", check=False, timeout=60)
    assert done.returncode != 0 and "is not of kind nvidia.com/gpu" in done.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def image_asking_all(box, tmp_path_factory):
    """An image whose own ENV asks for every GPU (as CUDA images do; not its last entry)."""
    context = tmp_path_factory.mktemp("image-all")
    (context / "Dockerfile").write_text("FROM tiny\nENV NVIDIA_VISIBLE_DEVICES=all\nENV AFTER=1\n")
    box.docker("build", "-q", "-t", "tiny-asks-all", str(context), timeout=120)
    return "tiny-asks-all"


def gpus_of_image(box, image, *args):
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", *args, image, "ls", "/dev",
                      check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return sorted(name for name in done.stdout.decode().split() if name.startswith("nvidia") and name[6:].isdigit())


def test_gpus_0_does_not_turn_the_images_variable_into_the_callers_request(box, image_asking_all):
    """dockerd's --gpus 0 adds its hook and no value: the image's `all` is what would be read."""
    assert gpus_of_image(box, image_asking_all, "--gpus", "0") == []
    assert gpus_of_image(box, image_asking_all, "--gpus", "count=0") == []
    assert "set no value of its own (count 0)" in log_text(box)


def test_gpus_1_and_all_still_count_over_the_images_variable(box, image_asking_all):
    assert gpus_of_image(box, image_asking_all, "--gpus", "1") == ["nvidia0"]
    assert gpus_of_image(box, image_asking_all, "--gpus", "all") == ["nvidia0", "nvidia1"]
    assert gpus_of_image(box, image_asking_all, "--gpus", "device=1") == ["nvidia1"]
    assert gpus_of_image(box, "tiny", "--gpus", "1") == ["nvidia0"]
    assert gpus_of_image(box, image_asking_all, "--cap-add", "SYS_ADMIN", "--gpus", "0") == ["nvidia0", "nvidia1"]
