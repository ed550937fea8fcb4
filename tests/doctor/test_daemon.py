"""docker-daemon checks: against a real private dockerd where it can show the state, and a fake
Engine API for the states it cannot (Desktop, rootless, cgroup v2, other versions)."""

import hashlib
import json
import os

import pytest

from tests.doctor.simhost import RUNTIME

# -- a real private dockerd ---------------------------------------------------------------------

@pytest.mark.dockerd
def test_real_dockerd_reachable_with_our_runtime_loaded(live_host, dockerd_sandbox):
    reachable = live_host.run("daemon-reachable")
    assert reachable.status == "ok" and reachable.data["version"].startswith(dockerd_sandbox.info()["ServerVersion"][:5])
    loaded = live_host.run("daemon-runtime-loaded")
    assert loaded.status == "ok" and RUNTIME in loaded.detail
    assert live_host.run("daemon-default-runtime").status == "ok"
    assert live_host.run("daemon-version").status == "ok"
    cgroup = live_host.run("daemon-cgroup")
    assert cgroup.status == "ok" and "(docker info)" in cgroup.detail


@pytest.mark.dockerd
def test_real_dockerd_has_not_loaded_the_file(live_host):
    live_host.write_config({"runtimes": {"nvidia": {"path": "/opt/new/nvdocker-runtime"}}, "default-runtime": "nvidia"})
    loaded = live_host.run("daemon-runtime-loaded")
    assert loaded.status == "fail"
    assert "has path '/usr/bin/nvdocker-runtime', expected '/opt/new/nvdocker-runtime'" in loaded.detail
    assert "kill -HUP" in loaded.hint  # no service manager on the simulated host: SIGHUP
    default = live_host.run("daemon-default-runtime")
    assert default.status == "fail" and "default runtime is runc, but daemon.json says nvidia" in default.detail


@pytest.mark.dockerd
def test_real_dockerd_runtime_not_registered(live_host):
    live_host.write_config({"runtimes": {"gpu": {"path": RUNTIME}}})
    result = live_host.run("daemon-runtime-loaded", runtime_name="gpu")
    assert result.status == "fail" and "runtime 'gpu' is not registered" in result.detail
    assert "unknown or invalid runtime name" in result.detail


# -- no dockerd ---------------------------------------------------------------------------------

def test_unreachable_dockerd_fails_once_and_the_rest_skips(host):
    result = host.run("daemon-reachable")
    assert result.status == "fail" and "does not exist" in result.detail
    assert "DOCKER_HOST" in result.hint and "start" in result.hint
    for other in ("daemon-runtime-loaded", "daemon-default-runtime", "daemon-version"):
        skipped = host.run(other)
        assert skipped.status == "skip" and "see daemon-reachable" in skipped.detail


# -- a fake Engine API ----------------------------------------------------------------------------

def test_runtime_registered_by_flags_only(host, engine):
    engine()
    host.write_config({"log-driver": "json-file"})
    result = host.run("daemon-runtime-loaded")
    assert result.status == "warn" and "--add-runtime" in result.detail
    assert host.run("daemon-runtime-loaded", runtime_name="other").status == "skip"


def test_version_old_and_new(host, engine):
    fake = engine()
    result = host.run("daemon-version")
    assert result.status == "ok" and "Docker 26.1.5" in result.detail and "CDI supported" in result.detail
    fake.version = dict(fake.version, Version="18.09.1", ApiVersion="1.39")
    host_facts_result = host.run("daemon-version")
    assert host_facts_result.status == "warn" and "--gpus` does not exist" in host_facts_result.detail


def test_cli_context_default_and_docker_host(host, engine):
    engine()
    result = host.run("daemon-cli-context")
    assert result.status == "ok" and "DOCKER_HOST" in result.detail
    del host.env["DOCKER_HOST"]
    assert host.run("daemon-cli-context").status == "ok"


def test_cli_context_remote_docker_host(host, engine):
    engine()
    host.env["DOCKER_HOST"] = "tcp://10.0.0.7:2376"
    result = host.run("daemon-cli-context")
    assert result.status == "warn" and "tcp://10.0.0.7:2376" in result.detail


def _context(host, name, endpoint, current=True):
    docker_dir = os.path.join(host.home, ".docker")
    meta = os.path.join(docker_dir, "contexts", "meta", hashlib.sha256(name.encode()).hexdigest())
    os.makedirs(meta)
    with open(os.path.join(meta, "meta.json"), "w") as handle:
        json.dump({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": endpoint}}}, handle)
    if current:
        with open(os.path.join(docker_dir, "config.json"), "w") as handle:
            json.dump({"currentContext": name}, handle)


def test_cli_context_docker_desktop(host, engine):
    engine()
    del host.env["DOCKER_HOST"]
    _context(host, "desktop-linux", "unix:///home/ann/.docker/desktop/docker.sock")
    result = host.run("daemon-cli-context")
    assert result.status == "fail" and "Docker Desktop" in result.detail and "currentContext" in result.detail
    assert "docker context use default" in result.hint


def test_cli_context_from_docker_context_variable(host, engine):
    fake = engine()
    del host.env["DOCKER_HOST"]
    _context(host, "local", fake.docker_host, current=False)
    host.env["DOCKER_CONTEXT"] = "local"
    assert host.run("daemon-cli-context").status == "ok"
    host.env["DOCKER_CONTEXT"] = "unknown-ctx"
    result = host.run("daemon-cli-context")
    assert result.status == "warn" and "unknown-ctx" in result.detail


def test_engine_that_is_docker_desktop(host, engine):
    engine(OperatingSystem="Docker Desktop", Name="docker-desktop")
    result = host.run("daemon-cli-context")
    assert result.status == "fail" and "is Docker Desktop" in result.detail


def test_rootless_dockerd(host, engine):
    assert host.run("daemon-rootless").status == "ok"
    engine(SecurityOptions=["name=seccomp,profile=builtin", "name=rootless"])
    result = host.run("daemon-rootless")
    assert result.status == "warn" and "devices.allow: permission denied" in result.detail
    assert "no-cgroups" in result.hint and "systemctl --user restart docker" in result.hint
    host.write("/etc/nvidia-container-runtime/config.toml", "[nvidia-container-cli]\nno-cgroups = true\n")
    assert host.run("daemon-rootless").status == "ok"


def test_rootless_dockerd_seen_in_proc(host):
    host.remove_dockerd()
    host.add_dockerd(pid=5151, uid=1000, extra_env="ROOTLESSKIT_STATE_DIR=/run/user/1000/dockerd-rootless\0")
    result = host.run("daemon-rootless", ctx=host.ctx(euid=1000))
    assert result.status == "warn"
    assert "dockerd (pid 5151) runs under RootlessKit" in result.detail
    assert "the config file is the rootless one" in result.detail


def test_cgroup_v2_with_an_old_libnvidia_container(host, engine):
    engine(CgroupVersion="2", CgroupDriver="systemd")
    result = host.run("daemon-cgroup")
    assert result.status == "ok" and "cgroup v2 (docker info), cgroup driver systemd" in result.detail
    host.fake_tool("nvidia-container-cli", 'echo "cli-version: 1.7.0"\necho "lib-version: 1.7.0"\n')
    result = host.run("daemon-cgroup")
    assert result.status == "fail" and "cgroup subsystem devices not found" in result.detail
    assert "1.8.0" in result.hint
    host.fake_tool("nvidia-container-cli", 'echo "cli-version: 1.14.3"\n')
    assert host.run("daemon-cgroup").status == "ok"


def test_cgroup_facts_without_a_daemon(host):
    os.makedirs(host.path("/sys/fs/cgroup"))
    host.write("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
    os.makedirs(host.path("/run/systemd/system"))
    result = host.run("daemon-cgroup")
    assert "cgroup v2" in result.detail and "systemd (dockerd's default on cgroup v2 with systemd)" in result.detail


def test_fake_engine_with_our_runtime_loaded(host, engine):
    fake = engine()
    assert host.run("daemon-reachable").status == "ok"
    assert host.run("daemon-runtime-loaded").status == "ok"
    assert host.run("daemon-default-runtime").status == "ok"
    fake.info = dict(fake.info, Runtimes={"runc": {"path": "runc"}}, DefaultRuntime="runc")
    # a new Facts per run: nothing cached across runs
    result = host.run("daemon-runtime-loaded")
    assert result.status == "fail" and "runtime 'nvidia' is not registered" in result.detail


def test_fake_engine_with_another_default_runtime(host, engine):
    engine(DefaultRuntime="nvidia")
    result = host.run("daemon-default-runtime")
    assert result.status == "fail" and "default runtime is nvidia, but daemon.json says runc" in result.detail


def test_config_pairing_flags_the_file_of_another_daemon(host, engine):
    import os

    engine()  # answers in this process: its peer pid is ours
    host.add_dockerd(argv=("/usr/bin/dockerd", "--config-file", "/srv/other.json"), pid=os.getpid())
    host.env["NVDOCKER_DOCKER_CONFIG"] = "/etc/docker/daemon.json"  # the admin named another file
    result = host.run("daemon-config-pairing")
    assert result.status == "fail", result
    assert "/srv/other.json" in result.detail and "pid {}".format(os.getpid()) in result.detail
    assert "DOCKER_HOST" in result.hint


def test_config_pairing_ok_when_the_daemon_reads_the_checked_file(host, engine):
    import os

    engine()
    host.add_dockerd(argv=("/usr/bin/dockerd", "-H", "fd://"), pid=os.getpid())
    host.env.pop("NVDOCKER_DOCKER_CONFIG", None)
    result = host.run("daemon-config-pairing")
    assert result.status == "ok", result
    assert "/etc/docker/daemon.json" in result.detail


def test_config_pairing_skips_without_a_known_daemon(host):
    host.remove_dockerd()
    assert host.run("daemon-config-pairing").status == "skip"
