"""Driver checks on simulated driver roots: each passes on the healthy 2-GPU root and names the
fault and the fix on a broken one."""

import glob
import json
import os
import stat
import subprocess

from tests.doctor.simhost import CONFIG
from tests.support.driver_root import LIB_DIR


def test_kernel_module_reports_the_driver_and_cuda_version(host):
    result = host.run("driver-kernel-module")
    assert result.status == "ok", result
    assert "550.54.14" in result.detail and "CUDA up to 12.4" in result.detail
    assert result.data["version"] == "550.54.14" and result.data["cuda"] == "12.4"


def test_kernel_module_not_loaded(host):
    host.remove("/proc/driver/nvidia/version")
    result = host.run("driver-kernel-module")
    assert result.status == "fail"
    assert "no NVIDIA driver is loaded" in result.detail
    assert "install and load the NVIDIA driver" in result.hint
    # every other driver check points at this one instead of failing again
    for other in ("driver-gpus", "driver-device-nodes", "driver-libraries", "driver-nvidia-smi"):
        skipped = host.run(other)
        assert skipped.status == "skip" and "see driver-kernel-module" in skipped.detail


def test_kernel_module_version_not_understood(host):
    host.write("/proc/driver/nvidia/version", "garbage\n")
    result = host.run("driver-kernel-module")
    assert result.status == "fail" and "not understood" in result.detail


def test_gpus_listed(host):
    result = host.run("driver-gpus")
    assert result.status == "ok" and result.detail.startswith("2 GPUs")
    assert [gpu["minor"] for gpu in result.data["gpus"]] == [0, 1]


def test_no_gpu_listed(host):
    host.remove("/proc/driver/nvidia/gpus")
    result = host.run("driver-gpus")
    assert result.status == "fail" and "lists no GPU" in result.detail
    assert "lspci" in result.hint


def test_device_nodes_with_their_numbers(host):
    result = host.run("driver-device-nodes")
    assert result.status == "ok", result
    for expected in ("/dev/nvidiactl 195:255", "/dev/nvidia0 195:0", "/dev/nvidia1 195:1", "/dev/nvidia-uvm 510:0"):
        assert expected in result.detail


def test_device_node_missing(host):
    host.remove("/dev/nvidia1")
    result = host.run("driver-device-nodes")
    assert result.status == "fail"
    assert "missing" in result.detail and "/dev/nvidia1" in result.detail and "/dev/nvidia0" not in result.data["missing"]
    assert "nvidia-modprobe" in result.hint and "nvidia-persistenced" in result.hint


def test_device_node_with_wrong_numbers(host):
    host.remove("/dev/nvidia1")
    os.mknod(host.path("/dev/nvidia1"), stat.S_IFCHR | 0o666, os.makedev(195, 7))
    os.unlink(host.path("/dev/nvidia-uvm"))
    os.mknod(host.path("/dev/nvidia-uvm"), stat.S_IFCHR | 0o666, os.makedev(511, 0))
    result = host.run("driver-device-nodes")
    assert result.status == "fail"
    assert "/dev/nvidia1 is 195:7, expected 195:1" in result.detail
    assert "/dev/nvidia-uvm is 511:0, expected 510:0" in result.detail
    assert "rm /dev/nvidia1 /dev/nvidia-uvm" in result.hint


def test_device_node_that_is_a_plain_file_counts_as_missing(host):
    host.remove("/dev/nvidia0")
    host.write("/dev/nvidia0", "not a device\n")
    result = host.run("driver-device-nodes")
    assert result.status == "fail" and "/dev/nvidia0" in result.data["missing"]


def test_uvm_tools_missing_is_a_warning(host):
    host.remove("/dev/nvidia-uvm-tools")
    result = host.run("driver-device-nodes")
    assert result.status == "warn" and "/dev/nvidia-uvm-tools" in result.detail


def test_libraries_match_the_kernel_module(host):
    result = host.run("driver-libraries")
    assert result.status == "ok", result
    assert "libcuda.so.1 -> {}/libcuda.so.550.54.14".format(LIB_DIR) in result.detail
    assert "libnvidia-ml.so.1" in result.detail


def test_libraries_of_another_version_than_the_kernel_module(host):
    host.write("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19\n")
    result = host.run("driver-libraries")
    assert result.status == "fail"
    assert "libcuda.so.1 is 550.54.14" in result.detail and "535.104.05" in result.detail
    assert "Driver/library version mismatch" in result.detail
    assert "reboot" in result.hint


def test_library_missing_from_the_ld_cache(host):
    for path in glob.glob(host.path(LIB_DIR + "/libnvidia-ml.so*")):
        os.unlink(path)
    subprocess.run(["ldconfig", "-r", host.root], check=True, stderr=subprocess.DEVNULL)
    result = host.run("driver-libraries")
    assert result.status == "fail"
    assert "libnvidia-ml.so.1" in result.detail and "load library failed" in result.detail
    assert "ldconfig" in result.hint


def test_cache_entry_pointing_at_a_deleted_file(host):
    os.unlink(host.path(LIB_DIR + "/libcuda.so.1"))
    result = host.run("driver-libraries")
    assert result.status == "fail" and "does not exist" in result.detail


def test_no_ld_cache(host):
    host.remove("/etc/ld.so.cache")
    result = host.run("driver-libraries")
    assert result.status == "fail" and "cannot read the dynamic linker cache" in result.detail
    assert "ldconfig" in result.hint


def test_nvidia_smi_lists_the_gpus(host):
    result = host.run("driver-nvidia-smi")
    assert result.status == "ok" and "lists 2 GPU(s)" in result.detail


def test_nvidia_smi_missing(host):
    host.remove("/usr/bin/nvidia-smi")
    result = host.run("driver-nvidia-smi")
    assert result.status == "fail" and "nvidia-smi is not in" in result.detail
    assert "nvidia-utils" in result.hint


def test_nvidia_smi_failing(host):
    host.write("/usr/bin/nvidia-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the "
               "NVIDIA driver.' >&2\nexit 9\n", 0o755)
    result = host.run("driver-nvidia-smi")
    assert result.status == "warn"  # a driver root other than /: the host binary may not run from here
    assert "could not communicate with the NVIDIA driver" in result.detail


def test_nvidia_smi_lists_fewer_gpus(host):
    host.write("/usr/bin/nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-x)'\n", 0o755)
    result = host.run("driver-nvidia-smi")
    assert result.status == "warn" and "lists 1 GPU(s), the kernel driver 2" in result.detail


def _systemd_cgroups(host):
    host.write_config({"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
                       "exec-opts": ["native.cgroupdriver=systemd"]})


def test_dev_char_links_not_needed_with_cgroupfs(host):
    result = host.run("driver-dev-char-links")
    assert result.status == "skip" and "cgroupfs" in result.detail


def test_dev_char_links_missing_with_the_systemd_cgroup_driver(host):
    _systemd_cgroups(host)
    result = host.run("driver-dev-char-links")
    assert result.status == "fail"
    assert "/dev/char/195:0 -> /dev/nvidia0" in result.detail and "Unknown Error" in result.detail
    assert "nvdocker-setup system create-dev-char-symlinks --driver-root " + host.root in result.hint
    assert "native.cgroupdriver=cgroupfs" in result.hint


def test_dev_char_links_present_with_the_systemd_cgroup_driver(host):
    _systemd_cgroups(host)
    os.makedirs(host.path("/dev/char"))
    for name in os.listdir(host.path("/dev")):
        node = host.path("/dev/" + name)
        info = os.lstat(node)
        if stat.S_ISCHR(info.st_mode) and name.startswith("nvidia"):
            os.symlink("../" + name, host.path("/dev/char/{}:{}".format(os.major(info.st_rdev), os.minor(info.st_rdev))))
    result = host.run("driver-dev-char-links")
    assert result.status == "ok", result
    assert "all 5 NVIDIA nodes" in result.detail


def test_driver_root_option_and_environment(host, driver_template, tmp_path):
    empty = tmp_path / "empty-host"
    empty.mkdir()
    ctx = host.ctx(root=str(empty))
    assert host.run("driver-gpus", ctx=ctx, driver_root=driver_template.path).status == "ok"
    env = dict(host.env, NVDOCKER_DRIVER_ROOT=driver_template.path)
    assert host.run("driver-gpus", ctx=host.ctx(root=str(empty), env=env)).status == "ok"
    assert json.loads(open(host.path(CONFIG)).read())  # the host itself is untouched
