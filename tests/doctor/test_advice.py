"""What doctor tells the admin to do is right for the host it sees (issue #13, item 2): Docker not
installed, an entry that is NVIDIA's or the docker snap's (never ours to uninstall or overwrite),
rootless and snap fixes with our own commands, and a --smoke that could not run."""

import json
import os

from nvdocker_setup.adapters.state import StateStore
from nvdocker_setup.core.plan import InstallRecord
from nvdocker_setup.doctor.checks import DoctorReport
from tests.doctor.simhost import CONFIG, UNIT
from tests.doctor.test_cli import doctor

#: /etc/docker/daemon.json as NVIDIA's `nvidia-ctk runtime configure --set-as-default` writes it.
NVIDIA_STOCK = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}, "default-runtime": "nvidia"}
SNAP_CONFIG = "/var/snap/docker/current/config/daemon.json"
BESIDE = "nvdocker-setup install --runtime-name nvdocker"


def _no_docker(host):
    host.remove(UNIT)
    host.remove_dockerd()


def _report(host, *check_ids, **options):
    return DoctorReport([host.run(check_id, **options) for check_id in check_ids])


def test_docker_not_installed_says_so_and_how_to_install_it(host):
    _no_docker(host)
    result = host.run("daemon-reachable")
    assert result.status == "fail" and "Docker is not installed" in result.detail
    for package in ("docker.io", "moby-engine", "docker-ce"):
        assert package in result.hint
    assert "service docker start" not in result.hint and "systemctl start" not in result.hint
    assert result.data["docker_installed"] is False


def test_without_docker_a_missing_runtime_entry_follows_from_it(host):
    _no_docker(host)
    host.remove(CONFIG)
    report = _report(host, "runtime-binary", "config-runtime-entry", "daemon-reachable")
    entry = report.by_id("config-runtime-entry")
    assert entry.status == "fail" and entry.cause == "daemon-reachable"
    assert "install Docker first" in entry.hint and "nvdocker-setup install" in entry.hint
    verdict = report.verdict()
    assert (verdict.group, verdict.check) == ("docker-daemon", "daemon-reachable")


def test_docker_installed_but_stopped_is_told_to_start(host):
    host.remove_dockerd()  # the unit is still there: installed, not running
    result = host.run("daemon-reachable")
    assert result.status == "fail" and "Docker is not installed" not in result.detail
    assert "start" in result.hint and "docker.io" not in result.hint


def test_docker_host_elsewhere_is_not_called_uninstalled(host):
    _no_docker(host)
    host.env["DOCKER_HOST"] = "tcp://10.0.0.1:2375"
    result = host.run("daemon-reachable")
    assert result.status == "fail" and "Docker is not installed" not in result.detail


def test_stock_nvidia_config_with_nvidias_binary_missing(host):
    host.write_config(NVIDIA_STOCK)
    report = _report(host, "runtime-binary", "config-runtime-entry", "config-default-runtime")
    binary = report.by_id("runtime-binary")
    assert binary.status == "fail" and "NVIDIA's runtime" in binary.detail
    assert "nvidia-container-toolkit" in binary.hint and BESIDE in binary.hint
    assert "nvdocker-toolkit" not in binary.hint and "--runtime-path" not in binary.hint
    entry = report.by_id("config-runtime-entry")
    assert entry.status == "ok" and entry.data["owner"] == "nvidia" and "not made by nvdocker-setup" in entry.detail
    default = report.by_id("config-default-runtime")
    assert default.status == "fail" and "EVERY container fails" in default.detail
    assert "nvidia-container-toolkit" in default.hint and '"default-runtime": "runc"' in default.hint
    assert "nvdocker-setup uninstall" not in default.hint and "nvdocker-toolkit" not in default.hint
    assert default.cause == "runtime-binary" and report.follows_from(default) is binary
    assert report.verdict().check == "runtime-binary"


def test_stock_nvidia_config_with_nvidias_binary_present(host):
    host.write_config(NVIDIA_STOCK)
    host.write("/usr/bin/nvidia-container-runtime", "#!/bin/sh\nexit 0\n", 0o755)
    assert host.run("runtime-binary").status == "ok"
    assert host.run("config-default-runtime").status == "ok"
    assert host.run("config-runtime-entry").status == "ok"


def test_nvidias_entry_with_real_args_warns_and_never_offers_to_overwrite_it(host):
    host.write_config({"runtimes": {"nvidia": {"args": ["--debug"], "path": "/usr/bin/nvidia-container-runtime"}}})
    result = host.run("config-runtime-entry")
    assert result.status == "warn" and "ignored by dockerd" in result.detail
    assert BESIDE in result.hint and "--runtime-path" not in result.hint


def test_install_hints_go_beside_a_foreign_entry(host):
    host.write_config({"runtimes": {"nvidia": {"path": "/opt/other/gpu-runtime"}}})
    host.write("/etc/docker/daemon.json.dpkg-old", "{}")
    result = host.run("config-packaging-leftovers")
    assert result.status == "warn" and BESIDE in result.hint


def test_our_recorded_default_may_be_uninstalled(host):
    host.write_config({"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}}, "default-runtime": "nvidia"})
    host.remove("/usr/bin/nvdocker-runtime")
    assert "nvdocker-setup uninstall" not in host.run("config-default-runtime").hint  # no record: not said
    store = StateStore(os.path.join(host.state_dir, "state.json")).load()
    store.put(os.path.realpath(host.path(CONFIG)),
              InstallRecord(runtime_name="nvidia", entry={"path": "/usr/bin/nvdocker-runtime"}, default_changed=True,
                            previous_default=None))
    store.save()
    result = host.run("config-default-runtime")
    assert result.status == "fail" and "`nvdocker-setup uninstall`" in result.hint and "nvdocker-toolkit" in result.hint


def test_rootless_fix_uses_our_commands(host, engine):
    engine(SecurityOptions=["name=seccomp,profile=builtin", "name=rootless"])
    result = host.run("daemon-rootless")
    assert result.status == "warn"
    assert "nvidia-ctk" not in result.hint
    assert "`nvdocker-setup install --config ~/.config/docker/daemon.json`" in result.hint
    assert "systemctl --user restart docker" in result.hint and "no-cgroups = true" in result.hint


def test_snap_rows_agree(host):
    host.remove(UNIT)
    host.remove_dockerd()
    os.makedirs(host.path("/var/snap/docker/current/config"))
    host.write(SNAP_CONFIG, json.dumps({"runtimes": {"nvidia": {"path": "/snap/docker/2932/usr/bin/nvidia-container-runtime"}}}))
    command = "`nvdocker-setup install --runtime-name nvdocker --config {}`".format(SNAP_CONFIG)
    report = _report(host, "runtime-binary", "config-location", "config-runtime-entry")
    for result in report.results:
        assert command in result.hint, (result.id, result.hint)
        assert "nvidia-ctk" not in result.hint and "--runtime-name)" not in result.hint
        assert "nvdocker-toolkit" not in result.hint
    assert report.by_id("runtime-binary").status == "fail"
    assert "the docker snap's runtime" in report.by_id("runtime-binary").detail
    assert report.by_id("config-runtime-entry").data["owner"] == "snap"
    host.write(SNAP_CONFIG, "{}")
    missing = host.run("config-runtime-entry")
    assert missing.status == "fail" and command.strip("`") in missing.hint


def test_a_smoke_test_that_could_not_run_exits_12(host):
    outcome = doctor(host, "--smoke", "--check", "container-gpu-smoke", "--json")
    assert outcome.exit_code == 12
    assert outcome.result("container-gpu-smoke")["status"] == "fail"
    assert doctor(host, "--check", "container-gpu-smoke").exit_code == 12  # --check asks for it too
