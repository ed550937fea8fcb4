"""The nvdocker.gpu collection rolled out to three Debian 12 hosts, each running its own dockerd.

The scenarios share their hosts (module-scoped fixture, one set per Ansible flavour) and run in
file order, each starting where the previous one left the fleet:

1. the role installs our .debs from local files and configures every host (changed on each);
2. a second run changes nothing and leaves every daemon.json's bytes, inode and mtime alone;
3. check mode with a new setting reports the would-be change and the diff, and writes nothing;
4. h2's dockerd would refuse the change (it runs with ``--default-runtime`` on its command line, so a
   daemon.json that sets ``default-runtime`` too would fail its reload and its restart): with
   ``serial: 1`` and ``max_fail_percentage: 0`` the rollout stops at h2, which fails with our error
   id before anything is written (``daemon-would-not-start``: the running dockerd is never put at
   risk), its file and its dockerd untouched; h3 is never touched;
5. without serial, h2 fails the same way while the others finish;
6. ``state: absent`` gives every host its original daemon.json bytes back.
"""

import json

from tests.fleet.conftest import HOSTS
from tests.fleet.support import RESTART_COMMAND

DAEMON_JSON = "/etc/docker/daemon.json"
RUNTIME_TASK = "Configure the GPU runtime"
DOCTOR_TASK = "Diagnose the host"
DOCTOR_CHECKS = ["config-parse", "config-runtime-entry", "daemon-reachable", "daemon-runtime-loaded"]

PLAY = """
- name: GPU runtime rollout
  hosts: all
  gather_facts: false
{extra}
  roles:
    - role: nvdocker.gpu.setup
"""


def role_vars(fleet, **overrides):
    values = {
        "nvdocker_packages_source": "local",
        "nvdocker_local_packages": [str(deb) for deb in fleet.debs],
        "nvdocker_doctor": True,
        "nvdocker_doctor_checks": DOCTOR_CHECKS,
        "nvdocker_timeout": 15,
        "nvdocker_service_manager": "command",
        "nvdocker_restart_command": RESTART_COMMAND,
    }
    values.update(overrides)
    path = fleet.ansible.workdir / "vars.json"
    path.write_text(json.dumps(values))
    return "@" + str(path)


def rollout(fleet, *args, extra="", **overrides):
    return fleet.ansible.playbook(PLAY.format(extra=extra), "-e", role_vars(fleet, **overrides), *args)


def snapshot(fleet):
    return {name: (host.read(DAEMON_JSON), host.stat(DAEMON_JSON)) for name, host in fleet.hosts.items()}


def test_first_run_installs_the_packages_and_configures_every_host(fleet):
    run = rollout(fleet)
    print(run)
    assert run.rc == 0, run
    for name, host in fleet.hosts.items():
        assert run.stats[name]["failures"] == 0 and run.stats[name]["changed"] > 0, run
        result = run.result(RUNTIME_TASK, name)
        assert result["changed"] is True and result["would_change"] is True, result
        # a restart: the --gpus hook the packages installed is looked up by dockerd only at start
        assert result["config"] == DAEMON_JSON and result["apply"]["method"] == "restart", result
        assert result["apply"]["verified"] is True, result
        for package in ("nvdocker-toolkit", "nvdocker-setup", "nvdocker2"):
            assert host.installed(package), (name, package)
        after = json.loads(host.read(DAEMON_JSON))
        before = json.loads(fleet.originals[name])
        assert after["runtimes"]["nvidia"] == {"path": "/usr/bin/nvdocker-runtime"}
        for key, value in before.items():
            if key != "runtimes":
                assert after[key] == value, (name, key)
        # the running dockerd has it (reloaded, verified), and the doctor agrees
        assert "nvidia" in host.dockerd_info()["Runtimes"], name
        doctor = run.result(DOCTOR_TASK, name)
        statuses = {check["id"]: check["status"] for check in doctor["checks"]}
        assert statuses == dict.fromkeys(DOCTOR_CHECKS, "ok"), doctor["checks"]
        assert doctor["ansible_facts"]["nvdocker_doctor"]["verdict"]["failures"] == 0
    # h1's bytes: our entry spliced in, in the file's own style, the rest as it was
    assert fleet.hosts["h1"].read(DAEMON_JSON).startswith(fleet.originals["h1"][:-3])


def test_second_run_changes_nothing_and_writes_nothing(fleet):
    before = snapshot(fleet)
    run = rollout(fleet)
    assert run.rc == 0, run
    for name in HOSTS:
        assert run.stats[name]["changed"] == 0 and run.stats[name]["failures"] == 0, run
        result = run.result(RUNTIME_TASK, name)
        assert result["changed"] is False and result["would_change"] is False and result["backup"] is None
        assert result["diff_text"] == ""
    assert snapshot(fleet) == before, "daemon.json bytes, inode or mtime changed"


def test_check_mode_reports_the_change_and_the_diff_and_writes_nothing(fleet):
    before = snapshot(fleet)
    run = rollout(fleet, "--check", "--diff", nvdocker_default_runtime=True)
    assert run.rc == 0, run
    for name, host in fleet.hosts.items():
        result = run.result(RUNTIME_TASK, name)
        assert result["changed"] is True and result["would_change"] is True, result
        assert result["nvdocker"]["dry_run"] is True and result["apply"] is None
        added = [line for line in result["diff"]["prepared"].splitlines() if line.startswith("+") and not line.startswith("+++")]
        assert any('"default-runtime": "nvidia"' in line for line in added), result["diff"]
        assert host.dockerd_info()["DefaultRuntime"] == "runc"
    assert snapshot(fleet) == before, "check mode wrote a daemon.json"


def assert_h2_refused_untouched(run, fleet):
    result = run.result(RUNTIME_TASK, "h2")
    assert result is not None and result.get("failed") is True, result
    assert result["error_id"] == "daemon-would-not-start", result
    assert result["rc"] == 4 and result["host_state"] == "unchanged", result
    assert result["rolled_back"] is False, result
    assert result["hint"] and result["error_message"] in result["msg"], result
    assert "--default-runtime" in result["error_message"], result
    host = fleet.hosts["h2"]
    assert host.read(DAEMON_JSON) == fleet.memo["h2-before"], "h2's file is not the one it had"
    info = host.dockerd_info()
    assert info is not None, "h2's dockerd is not running"
    assert info["DefaultRuntime"] == "runc" and "nvidia" in info["Runtimes"]


def test_serial_rollout_stops_at_the_host_whose_dockerd_refuses(fleet):
    fleet.memo["h2-before"] = fleet.hosts["h2"].read(DAEMON_JSON)
    h3_before = fleet.hosts["h3"].read(DAEMON_JSON), fleet.hosts["h3"].stat(DAEMON_JSON)
    run = rollout(fleet, extra="  serial: 1\n  max_fail_percentage: 0", nvdocker_default_runtime=True)
    print(run)
    assert run.rc != 0, run
    # h1 went first and finished
    h1 = run.result(RUNTIME_TASK, "h1")
    assert h1["changed"] is True and h1["apply"]["verified"] is True, h1
    assert fleet.hosts["h1"].dockerd_info()["DefaultRuntime"] == "nvidia"
    # h2 refused before writing anything
    assert_h2_refused_untouched(run, fleet)
    # and the rollout stopped there: h3 never ran a task
    assert run.result(RUNTIME_TASK, "h3") is None
    assert "h3" not in run.stats or run.stats["h3"]["ok"] == 0
    assert (fleet.hosts["h3"].read(DAEMON_JSON), fleet.hosts["h3"].stat(DAEMON_JSON)) == h3_before
    assert fleet.hosts["h3"].dockerd_info()["DefaultRuntime"] == "runc"


def test_without_serial_the_refusing_host_fails_and_the_others_finish(fleet):
    run = rollout(fleet, nvdocker_default_runtime=True)
    print(run)
    assert run.rc != 0, run
    assert_h2_refused_untouched(run, fleet)
    assert run.stats["h2"]["failures"] == 1
    assert run.result(RUNTIME_TASK, "h1")["changed"] is False  # done in the serial run already
    h3 = run.result(RUNTIME_TASK, "h3")
    assert h3["changed"] is True and h3["apply"]["verified"] is True, h3
    assert fleet.hosts["h3"].dockerd_info()["DefaultRuntime"] == "nvidia"
    for name in ("h1", "h3"):
        assert run.stats[name]["failures"] == 0
        assert run.result(DOCTOR_TASK, name)["failed_checks"] == []


def test_state_absent_gives_every_host_its_original_bytes(fleet):
    run = rollout(fleet, nvdocker_state="absent")
    print(run)
    assert run.rc == 0, run
    for name, host in fleet.hosts.items():
        result = run.result(RUNTIME_TASK, name)
        assert result["changed"] is True, result
        assert host.read(DAEMON_JSON) == fleet.originals[name], name
        assert run.result(DOCTOR_TASK, name).get("skipped") is True
    # once more: nothing left to take out
    again = rollout(fleet, nvdocker_state="absent")
    assert again.rc == 0 and all(again.stats[name]["changed"] == 0 for name in HOSTS), again
