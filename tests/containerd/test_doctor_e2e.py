"""`nvdocker-setup doctor --engine containerd` against real containerd 1.6, 1.7 and 2.1 (issue #10
item 5): a handler installed with `install --apply none` is "not loaded: restart containerd" until
the private containerd restarts, then doctor says ready; a config with the CRI plugin disabled fails
the CRI check with its fix. ``--config`` and NVDOCKER_CONTAINERD_BINARY pin doctor to the private
daemon: the host's containerd (if any) is never consulted."""

import json
import os
import subprocess
import sys

import pytest

from nvdocker_setup.doctor.checks import all_checks

pytestmark = pytest.mark.containerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The checks of containerd's config and daemon, and of our handler's binary (the driver, CDI and
#: host checks see this machine, which has no GPU).
CONTAINERD_CHECKS = [item.id for item in all_checks("containerd")
                     if item.group.startswith("containerd-") or item.id == "containerd-handler-binary"]


def _cli(daemon, work, *args):
    env = dict(os.environ, PATH=daemon.env["PATH"], PYTHONPATH=REPO, NVDOCKER_STATE_DIR=os.path.join(work, "state"),
               NVDOCKER_CONTAINERD_BINARY=daemon.containerd)
    env.pop("NVDOCKER_CONTAINERD_CONFIG", None)
    completed = subprocess.run([sys.executable, "-m", "nvdocker_setup", *args, "--json"], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    try:
        return completed.returncode, json.loads(completed.stdout)
    except ValueError:
        raise AssertionError("not JSON (exit {}): {}\n{}".format(
            completed.returncode, completed.stdout, completed.stderr)) from None


def _doctor(daemon, work, config):
    only = [arg for check_id in CONTAINERD_CHECKS for arg in ("--check", check_id)]
    code, report = _cli(daemon, work, "doctor", "--engine", "containerd", "--config", config, *only)
    assert report["engine"] == "containerd"
    return code, report, {item["id"]: item for item in report["checks"]}


@pytest.fixture
def work(tmp_path):
    os.chmod(str(tmp_path), 0o755)
    runtime = tmp_path / "nvdocker-runtime"
    runtime.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    os.chmod(str(runtime), 0o755)
    return str(tmp_path)


def _own_config(containerd, work, text=None):
    """The private containerd restarted on a config.toml of this test (the fixture goes back to its base)."""
    path = os.path.join(work, "config.toml")
    with open(path, "w") as handle:
        handle.write(text if text is not None else containerd.base_config())
    containerd.stop()
    containerd.start(config_path=path)
    return path


def test_installed_handler_is_not_loaded_until_containerd_restarts_then_ready(containerd, work):
    config = _own_config(containerd, work)
    runtime = os.path.join(work, "nvdocker-runtime")

    code, report, checks = _doctor(containerd, work, config)
    assert code == 12 and checks["containerd-runtime-entry"]["status"] == "fail"
    assert "nvdocker-setup install --engine containerd" in checks["containerd-runtime-entry"]["hint"]
    assert checks["containerd-reachable"]["status"] == "ok", checks["containerd-reachable"]
    assert checks["containerd-config-version"]["status"] == "ok"

    code, installed = _cli(containerd, work, "install", "--engine", "containerd", "--config", config,
                           "--runtime-path", runtime, "--apply", "none")
    assert code == 0, installed

    code, report, checks = _doctor(containerd, work, config)
    loaded = checks["containerd-runtime-loaded"]
    assert code == 12 and loaded["status"] == "fail", loaded
    assert "has not loaded it: restart containerd" in loaded["detail"]
    assert "running containers keep running" in loaded["hint"]
    assert report["verdict"]["check"] == "containerd-runtime-loaded"
    assert checks["containerd-runtime-entry"]["status"] == "ok"
    assert checks["containerd-runtime-entry"]["data"]["owner"] == "ours"

    containerd.restart()
    code, report, checks = _doctor(containerd, work, config)
    assert code == 0 and report["verdict"]["status"] == "ready", [
        (item["id"], item["status"], item["detail"]) for item in report["checks"] if item["status"] != "ok"]
    assert checks["containerd-runtime-loaded"]["data"]["binary_name"] == runtime
    assert checks["containerd-systemd-cgroup"]["status"] == "ok"
    assert checks["containerd-handler-binary"]["status"] == "ok"
    assert checks["containerd-config-location"]["data"]["rule"] == "option"


def test_cri_disabled_fails_the_cri_check_with_its_fix(containerd, work):
    base = containerd.base_config()
    text = base.replace("disabled_plugins = [", 'disabled_plugins = ["io.containerd.grpc.v1.cri", ', 1)
    assert text != base
    config = _own_config(containerd, work, text)
    code, report, checks = _doctor(containerd, work, config)
    cri = checks["containerd-cri-enabled"]
    assert code == 12 and cri["status"] == "fail"
    assert '"io.containerd.grpc.v1.cri"' in cri["detail"] and "remove" in cri["hint"]
    assert report["verdict"]["check"] == "containerd-cri-enabled"
    reachable = checks["containerd-reachable"]
    assert reachable["status"] == "fail" and reachable["follows_from"] == "containerd-cri-enabled", reachable


def test_unreachable_containerd_is_a_verdict_not_a_crash(containerd, work):
    config = _own_config(containerd, work)
    containerd.stop()
    code, report, checks = _doctor(containerd, work, config)
    reachable = checks["containerd-reachable"]
    assert code == 12 and reachable["status"] == "fail" and "not reachable" in reachable["detail"]
    assert checks["containerd-runtime-loaded"]["status"] == "skip"
    assert all("crashed" not in item["detail"] for item in report["checks"])
