"""`nvdocker-setup doctor` in-process: rendering, --json, --check, exit codes, and whole simulated
hosts, healthy (all green) and broken one way each (the fault and the fix are named)."""

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from nvdocker_setup.doctor.checks import all_checks
from nvdocker_setup.exit_status import ExitStatus
from tests.doctor.simhost import CONFIG, GPU_HOOK, RUNTIME


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Dict[str, Any]:
        return json.loads(self.stdout)

    def result(self, check_id: str) -> Dict[str, Any]:
        return next(item for item in self.json["checks"] if item["id"] == check_id)


def doctor(host, *args: str, env: Optional[Dict[str, str]] = None) -> Outcome:
    output.reset_consoles()
    merged = dict(host.env)
    merged.setdefault("DOCKER_HOST", "unix://" + host.socket)  # nothing reaches this machine's docker
    merged.update({
        "NVDOCKER_STATE_DIR": host.state_dir, "NVDOCKER_DOCKER_CONFIG": "", "NVDOCKER_DRIVER_ROOT": "",
        "NVDOCKER_RUNTIME_CONFIG": "", "NVIDIA_CTK_CONFIG_FILE_PATH": "", "DOCKER_CONTEXT": "",
        "COLUMNS": "200", "NO_COLOR": "1",
    })
    merged.update(env or {})
    result = _runner().invoke(app, ["doctor", "--root", host.root] + list(args), env=merged, catch_exceptions=False)
    return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.mark.dockerd
def test_a_healthy_host_is_all_green(live_host):
    outcome = doctor(live_host, "--json")
    assert outcome.exit_code == ExitStatus.SUCCESS, outcome.stdout
    report = outcome.json
    assert report["ok"] is True
    statuses = {item["id"]: item["status"] for item in report["checks"]}
    assert set(statuses.values()) <= {"ok", "skip"}, {k: v for k, v in statuses.items() if v not in ("ok", "skip")}
    assert report["summary"]["fail"] == report["summary"]["warn"] == 0
    assert report["summary"]["total"] == len(all_checks())
    for item in report["checks"]:
        assert item["detail"], item  # every skip says why
    for check_id in ("driver-gpus", "driver-libraries", "runtime-binary", "gpu-hook-on-path", "config-runtime-entry",
                     "daemon-reachable", "daemon-runtime-loaded"):
        assert statuses[check_id] == "ok", check_id


@pytest.mark.dockerd
def test_a_healthy_host_as_text(live_host):
    outcome = doctor(live_host)
    assert outcome.exit_code == 0
    lines = outcome.stdout.splitlines()
    assert lines[0] == "GPU containers: ready"
    for heading in ("driver", "runtime binaries", "engine config", "docker daemon", "host", "CDI", "containers"):
        assert "[{}]".format(heading) in lines
    assert "\nok    driver-gpus: 2 GPUs" in outcome.stdout and "\nskip  " in outcome.stdout
    assert "fix:" not in outcome.stdout
    skipped = sum(1 for line in lines if line.startswith("skip  "))
    assert lines[-1] == "{} ok, 0 warnings, 0 failed, {} skipped".format(len(all_checks()) - skipped, skipped)


@pytest.mark.dockerd
def test_smoke_through_the_cli(live_host, tiny_image, docker_cli):
    outcome = doctor(live_host, "--smoke", "--smoke-image", tiny_image, "--runtime-name", "fakegpu",
                     "--check", "container-gpu-smoke", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert outcome.result("container-gpu-smoke")["status"] == "ok"


def test_without_dockerd_the_daemon_check_fails_with_exit_12(host):
    outcome = doctor(host, "--json")
    assert outcome.exit_code == ExitStatus.DOCTOR_FAILED == 12
    assert outcome.json["ok"] is False
    failed = [item["id"] for item in outcome.json["checks"] if item["status"] == "fail"]
    assert failed == ["daemon-reachable"]


def _break_runtime_entry(host):
    host.write_config({"log-driver": "json-file"})


def _break_json(host):
    host.write_config(None, raw='{"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}}')


def _break_nodes(host):
    host.remove("/dev/nvidiactl")
    host.write("/dev/nvidiactl", "")


def _break_hook(host):
    host.remove(GPU_HOOK)


def _break_default_runtime(host):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "default-runtime": "nvidia"})
    host.remove(RUNTIME)


def _break_driver(host):
    host.write("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat\n")


def _break_flags(host):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "hosts": ["unix:///run/docker.sock"]})


def _break_hook_timing(host):
    host.add_dockerd(started_ago=600)


BROKEN: Dict[str, tuple] = {
    "runtime-entry-missing": (_break_runtime_entry, "config-runtime-entry", "unknown or invalid runtime name",
                              "nvdocker-setup install"),
    "invalid-json": (_break_json, "config-parse", "dockerd refuses to start", "nvdocker-setup restore"),
    "control-node-missing": (_break_nodes, "driver-device-nodes", "/dev/nvidiactl", "nvidia-modprobe"),
    "gpu-hook-missing": (_break_hook, "gpu-hook-on-path", "could not select device driver", "restart"),
    "default-runtime-missing": (_break_default_runtime, "config-default-runtime", "EVERY container fails",
                                "default-runtime"),
    "driver-library-mismatch": (_break_driver, "driver-libraries", "version mismatch", "reboot"),
    "hosts-flag-conflict": (_break_flags, "config-flag-conflicts", "specified both as a flag",
                            "systemctl daemon-reload"),
    "hook-newer-than-dockerd": (_break_hook_timing, "gpu-hook-registered", "appeared after dockerd",
                                "reload is not enough"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_host_names_the_fault_and_the_fix(host, name):
    breaker, check_id, fault, fix = BROKEN[name]
    breaker(host)
    outcome = doctor(host, "--json")
    assert outcome.exit_code == ExitStatus.DOCTOR_FAILED
    result = outcome.result(check_id)
    assert result["status"] == "fail", result
    assert fault in result["detail"] and fix in result["hint"]
    text = doctor(host, "--check", check_id)
    assert text.exit_code == ExitStatus.DOCTOR_FAILED
    assert "\nfail  {}: ".format(check_id) in text.stdout and "\n  fix: " in text.stdout


def test_check_runs_only_the_named_checks(host):
    outcome = doctor(host, "--check", "host-selinux", "--check", "driver-gpus", "--json")
    assert outcome.exit_code == 0
    assert [item["id"] for item in outcome.json["checks"]] == ["driver-gpus", "host-selinux"]
    assert outcome.json["summary"] == {"ok": 2, "warn": 0, "fail": 0, "skip": 0, "total": 2}


def test_unknown_check_id_is_a_usage_error(host):
    outcome = doctor(host, "--check", "no-such-check")
    assert outcome.exit_code == ExitStatus.USAGE
    assert "unknown check id: no-such-check" in outcome.stderr and "--list" in outcome.stderr
    as_json = doctor(host, "--check", "no-such-check", "--json")
    assert as_json.exit_code == ExitStatus.USAGE and as_json.json["error"]["id"] == "usage"


def test_warnings_alone_exit_zero(host):
    host.write("/sys/fs/selinux/enforce", "1")
    outcome = doctor(host, "--check", "host-selinux")
    assert outcome.exit_code == 0
    assert "\nwarn  host-selinux: SELinux is enforcing" in outcome.stdout and "\n  fix: " in outcome.stdout
    assert outcome.stdout.startswith("GPU containers (1 check run): work, with 1 warning (first: host-selinux)\n")
    assert outcome.stdout.rstrip().endswith("0 ok, 1 warning, 0 failed, 0 skipped")


def test_list(host):
    outcome = doctor(host, "--list")
    assert outcome.exit_code == 0
    for item in all_checks():
        assert item.id in outcome.stdout
    listed = doctor(host, "--list", "--json").json["checks"]
    assert [item["id"] for item in listed] == [item.id for item in all_checks()]
    assert [item["id"] for item in listed if item["opt_in"]] == ["container-gpu-smoke"]


def test_config_option(host, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"runtimes": {"nvidia": {"path": RUNTIME}}}))
    outcome = doctor(host, "--config", str(other), "--check", "config-location", "--check", "config-runtime-entry",
                     "--json")
    assert outcome.result("config-location")["status"] == "warn"
    assert outcome.result("config-runtime-entry")["status"] == "ok"
    assert outcome.exit_code == 0


def test_runtime_name_option(host):
    outcome = doctor(host, "--runtime-name", "gpu", "--check", "config-runtime-entry", "--json")
    assert outcome.exit_code == ExitStatus.DOCTOR_FAILED
    assert "runtimes.gpu" in outcome.result("config-runtime-entry")["detail"]


def test_driver_root_option_and_environment(host, driver_template, tmp_path):
    host.remove("/proc/driver/nvidia")
    if not os.path.exists("/proc/driver/nvidia/version"):  # discovery falls back to the machine's own /proc
        assert doctor(host, "--check", "driver-kernel-module").exit_code == ExitStatus.DOCTOR_FAILED
    outcome = doctor(host, "--driver-root", driver_template.path, "--check", "driver-gpus", "--json")
    assert outcome.exit_code == 0 and outcome.result("driver-gpus")["status"] == "ok"
    outcome = doctor(host, "--check", "driver-kernel-module", "--json",
                     env={"NVDOCKER_DRIVER_ROOT": driver_template.path})
    assert outcome.exit_code == 0 and outcome.result("driver-kernel-module")["status"] == "ok"


def test_state_dir_option(host, tmp_path):
    from nvdocker_setup.adapters.state import StateStore
    from nvdocker_setup.core.plan import InstallRecord

    state_dir = tmp_path / "elsewhere"
    store = StateStore(str(state_dir / "state.json")).load()
    store.put(os.path.realpath(host.path(CONFIG)), InstallRecord(runtime_name="nvidia", entry={"path": "/old"}))
    store.save()
    outcome = doctor(host, "--state-dir", str(state_dir), "--check", "config-install-record", "--json")
    assert outcome.result("config-install-record")["status"] == "warn"


def test_a_crashing_check_is_reported_and_the_others_run(host, monkeypatch):
    from nvdocker_setup.doctor import checks

    def boom(facts):
        raise KeyError("surprise")

    monkeypatch.setitem(checks._REGISTRY, "host-selinux", checks.Check("host-selinux", "host", "t", boom))
    outcome = doctor(host, "--json")
    crashed = outcome.result("host-selinux")
    assert crashed["status"] == "fail" and "KeyError" in crashed["detail"]
    assert outcome.result("driver-gpus")["status"] == "ok"


def _no_trailing_spaces_nor_ellipsis(text, width=None):
    from rich.cells import cell_len

    for line in text.splitlines():
        assert line == line.rstrip() and "…" not in line, repr(line)
        assert width is None or cell_len(line) <= width, repr(line)


def test_piped_output_is_plain_lines(host):
    outcome = doctor(host, env={"COLUMNS": "80"})
    assert outcome.exit_code == ExitStatus.DOCTOR_FAILED
    _no_trailing_spaces_nor_ellipsis(outcome.stdout)
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("GPU containers: blocked at the docker daemon: daemon-reachable: dockerd does not answer")
    rows = [line for line in lines if line[:6] in ("ok    ", "warn  ", "fail  ", "skip  ")]
    assert len(rows) == len(all_checks())  # one line per check, however long
    assert any(len(line) > 80 for line in rows)  # not wrapped to COLUMNS
    assert "skip  daemon-version: (follows from docker daemon: daemon-reachable) dockerd is not reachable" in outcome.stdout
    assert "\x1b[" not in outcome.stdout


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("colour", [False, True])
def test_terminal_output_fits_the_width(host, columns, colour):
    import re

    env = {"COLUMNS": str(columns), "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    if colour:
        env["NO_COLOR"] = None  # CliRunner unsets it
    outcome = doctor(host, env=env)
    colours = re.findall(r"\x1b\[[0-9;]*3[1-6]m", outcome.stdout)
    assert bool(colours) is colour  # NO_COLOR: bold and dim at most, no colours
    assert "\x1b[" in outcome.stdout  # a terminal layout, with attributes
    text = re.sub(r"\x1b\[[0-9;]*m", "", outcome.stdout)
    _no_trailing_spaces_nor_ellipsis(text, columns)
    assert text.startswith("GPU containers: blocked at the docker daemon: daemon-reachable:")
    assert "\ndocker daemon\n  ✗ fail  daemon-reachable  " in text and "fix: " in text
    assert "[docker daemon]" not in text  # the plain format is for pipes


def test_json_keeps_its_shape_and_adds_the_verdict(host):
    report = doctor(host, "--json").json
    assert {"ok", "summary", "checks", "verdict"} <= set(report)
    assert report["verdict"]["status"] == "blocked" and report["verdict"]["check"] == "daemon-reachable"
    for item in report["checks"]:
        assert {"id", "group", "title", "status", "detail", "hint", "data", "seconds"} <= set(item)
    assert doctor(host, "--json").result("daemon-version")["follows_from"] == "daemon-reachable"
