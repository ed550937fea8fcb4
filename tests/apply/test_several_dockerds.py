"""Two private dockerds with different files: the file edited is the one of the daemon we verify
through, never one daemon's file checked against the other's socket (issue #14)."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

pytestmark = pytest.mark.dockerd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRST = b'{"labels": ["which=first"]}\n'
SECOND = b'{"labels": ["which=second"]}\n'


@pytest.fixture
def two(tmp_path):
    dockerd_or_skip()
    boxes = [DockerdSandbox(str(tmp_path / name), daemon_json=data) for name, data in (("a", FIRST), ("b", SECOND))]
    try:
        for box in boxes:
            box.start()
        yield boxes
    finally:
        for box in boxes:
            box.close()


def _cli(tmp_path, *args, docker_host=None):
    env = {key: value for key, value in os.environ.items() if key not in ("DOCKER_HOST", "NVDOCKER_DOCKER_CONFIG")}
    env.update(PYTHONPATH=ROOT, NVDOCKER_STATE_DIR=str(tmp_path / "state"), COLUMNS="200")
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    return done.returncode, json.loads(done.stdout.decode() or "{}"), done.stderr.decode()


def _read(box):
    with open(box.config_path, "rb") as handle:
        return handle.read()


def test_without_a_choice_install_refuses_and_names_both(tmp_path, two, runtime_binary):
    code, out, err = _cli(tmp_path, "install", "--runtime-path", runtime_binary, "--json")
    assert code == 2, (out, err)
    assert out["error"]["id"] == "several-dockerds"
    details = "\n".join(out["error"]["details"])
    for box in two:
        assert "pid {}".format(box.pid) in details and box.config_path in details
    assert [_read(box) for box in two] == [FIRST, SECOND]
    code, out, _ = _cli(tmp_path, "show", "--json")
    assert code == 2 and out["error"]["id"] == "several-dockerds"


def test_docker_host_picks_that_daemons_file_and_verifies_on_it(tmp_path, two, runtime_binary):
    first, second = two
    code, out, err = _cli(tmp_path, "install", "--runtime-path", runtime_binary, "--service-manager", "signal",
                          "--json", docker_host=second.docker_host)
    assert code == 0, (out, err)
    assert out["config"] == second.config_path and out["config_rule"] == "docker-host"
    assert out["apply"]["verified"] is True and out["apply"]["method"] == "reload"
    assert second.info()["Runtimes"]["nvidia"]["path"] == runtime_binary
    assert "nvidia" not in first.info()["Runtimes"]
    assert _read(first) == FIRST
    code, out, _ = _cli(tmp_path, "show", "--json", docker_host=second.docker_host)
    assert code == 0 and out["config"] == second.config_path and out["installed_by_us"] is True
    code, out, err = _cli(tmp_path, "uninstall", "--service-manager", "signal", "--apply", "restart", "--yes",
                          "--json", docker_host=second.docker_host)
    # the signal manager cannot restart: uninstall says so, and the file is back either way
    assert _read(second) == SECOND, (code, out, err)
