"""Runtime-binary checks: our runtime and hook, runc/crun, the --gpus hook, the toolkit config."""

import os

from tests.doctor.simhost import GPU_HOOK, HOOK, RUNC, RUNTIME, SCRIPT


def test_runtime_binary_ok(host):
    result = host.run("runtime-binary")
    assert result.status == "ok", result
    assert RUNTIME in result.detail


def test_runtime_binary_missing(host):
    host.remove(RUNTIME)
    result = host.run("runtime-binary")
    assert result.status == "fail" and "does not exist" in result.detail
    assert "nvdocker-toolkit" in result.hint


def test_runtime_binary_writable_by_others(host):
    os.chmod(host.path(RUNTIME), 0o777)
    result = host.run("runtime-binary")
    assert result.status == "fail" and "writable by group and others" in result.detail
    assert result.hint == "chmod go-w {}".format(host.path(RUNTIME))


def test_runtime_binary_not_owned_by_root(host):
    os.chown(host.path(RUNTIME), 1234, 1234)
    result = host.run("runtime-binary")
    assert result.status == "fail" and "owned by uid 1234" in result.detail
    assert "chown root" in result.hint


def test_runtime_binary_relative_path_resolved_on_dockerds_path(host):
    host.write_config({"runtimes": {"nvidia": {"path": "nvdocker-runtime"}}})
    assert host.run("runtime-binary").status == "ok"
    host.remove(RUNTIME)
    result = host.run("runtime-binary")
    assert result.status == "fail" and "is not on dockerd's PATH" in result.detail
    assert "--runtime-path /usr/bin/nvdocker-runtime" in result.hint


def test_runtime_binary_without_an_entry_checks_where_install_would_point(host):
    host.write_config({})
    assert host.run("runtime-binary").status == "ok"  # found on the context's PATH
    host.write_config(None, raw="{broken")
    assert host.run("runtime-binary").status == "ok"  # config-parse reports the file; the binary is still checked


def test_runtime_config_absent_present_and_broken(host):
    result = host.run("runtime-config")
    assert result.status == "ok" and "defaults" in result.detail
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\nruntimes = crun runc\ndriver-root = /\n")
    result = host.run("runtime-config")
    assert result.status == "ok" and "runtimes = crun runc" in result.detail
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\nthis is not a setting\n")
    result = host.run("runtime-config")
    assert result.status == "fail" and "expected 'key = value'" in result.detail
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\ndriver-root = /run/nvidia/driver\ndebug = maybe\n")
    result = host.run("runtime-config")
    assert result.status == "fail"
    assert "driver-root '/run/nvidia/driver' is not an existing absolute directory" in result.detail
    assert "debug must be true or false" in result.detail


def test_hook_binary_ok_and_missing(host):
    result = host.run("runtime-hook-binary")
    assert result.status == "ok" and result.data["path"] == host.path(HOOK)
    host.remove(GPU_HOOK)
    host.remove(HOOK)
    result = host.run("runtime-hook-binary")
    assert result.status == "fail" and "/usr/bin/nvdocker-runtime-hook" in result.detail
    assert "nvdocker-toolkit" in result.hint


def test_hook_binary_group_writable(host):
    os.chmod(host.path(HOOK), 0o775)
    result = host.run("runtime-hook-binary")
    assert result.status == "fail" and "writable by its group" in result.detail
    assert "chmod g-w" in result.hint


def test_hook_binary_from_the_runtime_config(host):
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\nhook-path = /opt/nvdocker/hook\n")
    result = host.run("runtime-hook-binary")
    assert result.status == "fail" and "hook (hook-path) /opt/nvdocker/hook" in result.detail
    host.write("/opt/nvdocker/hook", SCRIPT, 0o755)
    assert host.run("runtime-hook-binary").status == "ok"


def test_low_level_runtime_ok_missing_and_crun(host):
    result = host.run("runtime-low-level")
    assert result.status == "ok" and RUNC in result.detail
    host.remove(RUNC)
    result = host.run("runtime-low-level")
    assert result.status == "fail" and "none of runc, crun" in result.detail
    assert "apt-get install runc" in result.hint
    host.write("/usr/bin/crun", SCRIPT, 0o755)
    result = host.run("runtime-low-level")
    assert result.status == "ok" and "crun /usr/bin/crun" in result.detail


def test_low_level_runtime_list_from_the_runtime_config(host):
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\nruntimes = /opt/runsc\n")
    result = host.run("runtime-low-level")
    assert result.status == "fail" and "none of /opt/runsc" in result.detail
    host.write("/opt/runsc", SCRIPT, 0o755)
    assert host.run("runtime-low-level").status == "ok"


def test_gpu_hook_on_dockerds_path(host):
    result = host.run("gpu-hook-on-path")
    assert result.status == "ok", result
    assert result.data["path"] == GPU_HOOK and "dockerd (pid 4242)" in result.detail


def test_gpu_hook_missing(host):
    host.remove(GPU_HOOK)
    result = host.run("gpu-hook-on-path")
    assert result.status == "fail"
    assert 'could not select device driver "" with capabilities: [[gpu]]' in result.detail
    assert "restart" in result.hint and "nvidia-container-runtime-hook" in result.hint


def test_gpu_hook_not_on_the_path_dockerd_runs_with(host):
    host.add_dockerd(path_env="/opt/docker/bin")
    result = host.run("gpu-hook-on-path")
    assert result.status == "fail" and "/opt/docker/bin" in result.detail


def test_gpu_hook_without_a_running_dockerd_uses_the_service_path(host):
    host.remove_dockerd()
    result = host.run("gpu-hook-on-path")
    assert result.status == "ok" and "systemd's default service PATH" in result.detail


def test_gpu_hook_registered(host):
    result = host.run("gpu-hook-registered")
    assert result.status == "ok" and "started after" in result.detail


def test_gpu_hook_installed_after_dockerd_started(host):
    host.add_dockerd(started_ago=600)
    result = host.run("gpu-hook-registered")
    assert result.status == "fail" and "appeared after dockerd (pid 4242) started" in result.detail
    assert "restart" in result.hint and "reload is not enough" in result.hint


def test_gpu_hook_registered_skips_without_dockerd_or_hook(host):
    host.remove(GPU_HOOK)
    assert "gpu-hook-on-path" in host.run("gpu-hook-registered").detail
    host.remove_dockerd()
    assert host.run("gpu-hook-registered").status == "skip"


def test_toolkit_config_absent_and_legacy(host):
    assert host.run("toolkit-config").status == "ok"
    host.write("/etc/nvidia-container-runtime/config.toml",
               '[nvidia-container-cli]\nroot = "/"\n[nvidia-container-runtime]\nmode = "legacy"\n')
    result = host.run("toolkit-config")
    assert result.status == "ok" and "mode legacy" in result.detail


def test_toolkit_config_root_missing(host):
    host.write("/etc/nvidia-container-runtime/config.toml", '[nvidia-container-cli]\nroot = "/run/nvidia/driver"\n')
    result = host.run("toolkit-config")
    assert result.status == "fail" and "load library failed: libnvidia-ml.so.1" in result.detail
    assert "root" in result.hint


def test_toolkit_config_mode_that_refuses_gpus(host):
    host.write("/etc/nvidia-container-runtime/config.toml", '[nvidia-container-runtime]\nmode = "cdi"\n')
    result = host.run("toolkit-config")
    assert result.status == "warn" and "Hook directly" in result.detail
    assert "mode=legacy" in result.hint
    host.write("/etc/nvidia-container-runtime/config.toml",
               '[nvidia-container-runtime]\nmode = "cdi"\n[nvidia-container-runtime-hook]\nskip-mode-detection = true\n')
    assert host.run("toolkit-config").status == "ok"


def test_toolkit_config_auto_mode_on_tegra(host):
    host.write("/etc/nvidia-container-runtime/config.toml", '[nvidia-container-runtime]\nmode = "auto"\n')
    host.write("/etc/nv_tegra_release", "# R35 (release), REVISION: 4.1\n")
    result = host.run("toolkit-config")
    assert result.status == "warn" and "csv (Tegra host)" in result.detail



def test_runtime_config_agrees_with_the_runtime_on_every_key(host):
    """A value the runtime refuses (here a log-level it does not know) fails doctor's check too."""
    host.write("/etc/nvdocker/runtime.conf", "[runtime]\nlog-level = chatty\n")
    result = host.run("runtime-config")
    assert result.status == "fail" and "log-level" in result.detail, result.detail
