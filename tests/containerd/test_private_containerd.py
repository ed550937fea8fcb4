"""Real containerd 1.6, 1.7 and 2.1 in private temp dirs (tests/support/containerd.py): the CRI
Status client against each, a runtime handler in each config schema, containers that outlive a
restart, ``ctr run --runc-binary``, and the stand-in ``systemctl`` driving a restart from another
process the way nvdocker_setup's SystemdService calls it."""

import os
import subprocess
import time

import pytest
import tomlkit

from nvdocker_setup.adapters.service import SystemdService
from nvdocker_setup.context import Context
from nvdocker_setup.engines.containerd import cri
from tests.support.containerd import UNIT, alive

pytestmark = pytest.mark.containerd

RUNC_V2 = "io.containerd.runc.v2"


def test_boots_with_its_cri_plugins_ok(containerd):
    version = containerd.ctr("version").stdout.decode()
    assert "Version:  " + containerd.release.version_prefix in version or \
        "Version:  v" + containerd.release.version_prefix in version, version
    plugins = containerd.plugins()
    for plugin in containerd.release.cri_plugin_ids:
        assert plugins.get(plugin) == "ok", (plugin, containerd.log_tail())
    assert [p for p, state in plugins.items() if state == "error"] == []


def test_cri_status_is_ready_with_runc(containerd):
    status = cri.status(containerd.socket, 5.0)
    assert status.api == "v1"
    assert status.ready() and status.problems() == []
    network = status.condition("NetworkReady")
    assert network is not None and network.status is False  # no CNI here: normal, not a problem
    assert status.config_problem is None
    runtimes = status.runtimes()
    assert runtimes["runc"]["runtime_type"] == RUNC_V2 and runtimes["runc"]["binary_name"] is None
    assert status.default_runtime_name == "runc"
    if containerd.release.name != "1.6":  # CDI came with 1.7 (off by default there, on in 2.x)
        assert status.enable_cdi is (containerd.release.schema >= 3)
        assert status.cdi_spec_dirs == ["/etc/cdi", "/var/run/cdi"]
    else:
        assert status.enable_cdi is None


def _dumped_runtime(dump: str, containerd, handler: str):
    document = tomlkit.parse(dump)
    return document["plugins"][containerd.release.cri_runtime_plugin]["containerd"]["runtimes"][handler]


def _handler_config(containerd, binary: str, with_runc: bool) -> str:
    lines = [containerd.base_config()]
    if with_runc:  # as `containerd config default` writes it
        lines += ["[{}]".format(containerd.runtime_table("runc")), '  runtime_type = "{}"'.format(RUNC_V2), ""]
    lines += [
        "[{}]".format(containerd.runtime_table("nvidia")),
        '  runtime_type = "{}"'.format(RUNC_V2),
        "[{}.options]".format(containerd.runtime_table("nvidia")),
        '  BinaryName = "{}"'.format(binary),
        "  SystemdCgroup = true",
        "",
    ]
    return "\n".join(lines)


def test_an_nvidia_handler_shows_up_after_a_restart(containerd):
    binary = os.path.join(containerd.workdir, "bin", "nvidia-container-runtime")
    path = containerd.write_config(_handler_config(containerd, binary, with_runc=True),
                                   os.path.join(containerd.workdir, "nvidia.toml"))
    dumped = _dumped_runtime(containerd.config_dump(path), containerd, "nvidia")
    assert dumped["runtime_type"] == RUNC_V2
    assert dumped["options"]["BinaryName"] == binary and dumped["options"]["SystemdCgroup"] is True

    before = cri.status(containerd.socket, 5.0).runtimes()
    assert "nvidia" not in before
    old_pid = containerd.pid
    containerd.stop()
    containerd.start(path)
    assert containerd.pid != old_pid
    status = cri.status(containerd.socket, 5.0)
    assert status.ready()
    runtimes = status.runtimes()
    assert runtimes["nvidia"]["runtime_type"] == RUNC_V2
    assert runtimes["nvidia"]["binary_name"] == binary
    assert runtimes["nvidia"]["options"]["SystemdCgroup"] is True
    assert runtimes["runc"]["runtime_type"] == RUNC_V2  # the defaults stay
    assert status.default_runtime_name == "runc"


def test_a_lone_handler_table_replaces_the_default_runtimes_before_2_1(containerd):
    """containerd 1.6 and 1.7 decode ``containerd.runtimes`` as a whole map: a file that names only
    ``nvidia`` loses the built-in ``runc``, and the CRI plugin then fails to load (default_runtime_name
    "runc" has no runtime); CRI Status is UNIMPLEMENTED on both API versions. 2.1 merges the maps."""
    binary = os.path.join(containerd.workdir, "bin", "nvidia-container-runtime")
    path = containerd.write_config(_handler_config(containerd, binary, with_runc=False),
                                   os.path.join(containerd.workdir, "lone.toml"))
    containerd.stop()
    containerd.start(path)
    if containerd.release.schema >= 3:
        status = cri.status(containerd.socket, 5.0)
        assert sorted(status.runtimes()) == ["nvidia", "runc"]
        assert containerd.plugins()["io.containerd.cri.v1 runtime"] == "ok"
    else:
        assert containerd.plugins()["io.containerd.grpc.v1 cri"] == "error"
        with pytest.raises(cri.CriUnavailable) as caught:
            cri.status(containerd.socket, 5.0)
        assert caught.value.reference == "cri-unavailable"
        with open(containerd.log_path) as handle:
            assert "no corresponding runtime configured in `containerd.runtimes`" in handle.read()


def test_a_container_keeps_running_across_a_restart(containerd):
    containerd.run_container("sleeper", ["sleep", "300"], detach=True)
    pid, state = containerd.tasks()["sleeper"]
    assert state == "RUNNING" and alive(pid)
    old_daemon = containerd.pid
    containerd.restart()
    assert containerd.pid not in (None, old_daemon)
    assert containerd.tasks()["sleeper"] == (pid, "RUNNING")  # the shim survived and reconnected
    assert alive(pid)
    assert containerd.ctr("tasks", "exec", "--exec-id", "probe", "sleeper", "echo", "still here").stdout == b"still here\n"


def test_ctr_run_through_a_runc_wrapper(containerd):
    log = os.path.join(containerd.workdir, "wrapper.log")
    wrapper = os.path.join(containerd.workdir, "runc-wrapper")
    with open(wrapper, "w") as handle:
        handle.write('#!/bin/sh\necho "$*" >> {}\nexec {} "$@"\n'.format(log, containerd.runc))
    os.chmod(wrapper, 0o755)
    done = containerd.run_container("wrapped", ["echo", "through the wrapper"], runc_binary=wrapper)
    assert done.stdout == b"through the wrapper\n"
    with open(log) as handle:
        calls = handle.read().splitlines()
    assert any(" create " in " {} ".format(call) for call in calls), calls
    assert any(" start " in " {} ".format(call) for call in calls), calls


def test_the_stand_in_systemctl_restarts_it_from_another_process(containerd, tmp_path):
    bindir = containerd.install_systemctl()
    systemctl = os.path.join(bindir, "systemctl")

    def call(*args):
        return subprocess.run([systemctl, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

    old_pid = containerd.pid
    assert call("is-active", "--quiet", UNIT).returncode == 0
    assert call("show", "-p", "MainPID", "--value", UNIT).stdout.decode().strip() == str(old_pid)
    done = call("restart", UNIT)
    assert done.returncode == 0, done.stderr.decode()
    new_pid = containerd.pid
    assert new_pid is not None and new_pid != old_pid and not alive(old_pid)
    assert cri.status(containerd.socket, 5.0).ready()
    assert call("reload", UNIT).returncode == 1  # containerd.service has no ExecReload
    assert call("frobnicate", UNIT).returncode == 64

    # the arguments nvdocker_setup's SystemdService sends
    ctx = Context(env={"PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")},
                  root=str(tmp_path), state_dir=str(tmp_path / "state"))
    service = SystemdService(ctx, unit=UNIT)
    assert service.is_active() and service.main_pid() == new_pid
    service.reset_failed()
    service.restart()
    assert service.is_active() and service.main_pid() == containerd.pid != new_pid
    active, main_pid = "is-active --quiet " + UNIT, "show -p MainPID --value " + UNIT
    assert containerd.systemctl_calls() == [
        active, main_pid, "restart " + UNIT, "reload " + UNIT, "frobnicate " + UNIT,
        active, main_pid, "reset-failed " + UNIT, "restart " + UNIT, active, main_pid,
    ]
    containerd.stop()
    assert not service.is_active() and service.main_pid() is None


def test_unreachable_after_it_stops(containerd):
    containerd.stop()
    started = time.monotonic()
    with pytest.raises(cri.CriUnreachable) as caught:
        cri.status(containerd.socket, 2.0)
    assert time.monotonic() - started < 3.0
    assert caught.value.reference == "containerd-unreachable"
