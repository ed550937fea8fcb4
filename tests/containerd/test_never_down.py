"""Never take a running containerd down (issue #19, item 6): before a restart, the config.toml a rollback
would restore is judged with the installed containerd's own parser (``containerd config dump``); when it
would not load (it changed behind the running containerd's back), nothing is written and nothing is
restarted. A real private containerd 1.6 (Debian 12's), through the CLI."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.support.containerd import BY_NAME, PrivateContainerd, containerd_or_skip

pytestmark = pytest.mark.containerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def daemon(tmp_path):
    release = BY_NAME["1.6"]
    ctd = PrivateContainerd(release, containerd_or_skip(release))
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.close()


def _cli(daemon, state_dir, *args):
    env = dict(os.environ, PATH=daemon.env["PATH"], PYTHONPATH=REPO, NVDOCKER_STATE_DIR=state_dir,
               NVDOCKER_CONTAINERD_BINARY=daemon.containerd)
    env.pop("NVDOCKER_CONTAINERD_CONFIG", None)
    completed = subprocess.run([sys.executable, "-m", "nvdocker_setup", *args, "--json"], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=180)
    return completed.returncode, json.loads(completed.stdout)


def test_a_config_toml_containerd_could_not_start_on_is_refused_before_writing(tmp_path, daemon, runtime_binary):
    with open(daemon.config_path, "rb") as handle:
        good = handle.read()
    # a setting containerd's own parser rejects ("Can't convert high(string) to int"), added after it started
    broken = good.replace(b"version = 2\n", b'version = 2\noom_score = "high"\n', 1)
    assert broken != good
    with open(daemon.config_path, "wb") as handle:
        handle.write(broken)
    pid = daemon.pid
    marker = tmp_path / "restarted"
    code, data = _cli(daemon, str(tmp_path / "state"), "install", "--engine", "containerd", "--config",
                      daemon.config_path, "--runtime-path", runtime_binary, "--service-manager", "command",
                      "--restart-command", "touch {}".format(shlex.quote(str(marker))), "--timeout", "5")
    assert code == 4, data
    error = data["error"]
    assert error["id"] == "daemon-would-not-start"
    assert "containerd could not start again on {}".format(daemon.config_path) in error["message"]
    assert "nothing was written" in error["message"]
    assert any("what a rollback restores" in line and "high" in line for line in error["details"]), error
    assert "config dump" in error["hint"]
    with open(daemon.config_path, "rb") as handle:
        assert handle.read() == broken
    assert not marker.exists() and daemon.pid == pid and daemon.is_running()


def test_a_good_config_toml_is_still_installed_and_restarted(tmp_path, daemon, runtime_binary):
    """The judgement lets a loadable file through (the restart command really restarts the private daemon)."""
    restart = "{} -m tests.support.containerd restart {}".format(shlex.quote(sys.executable),
                                                                 shlex.quote(daemon.workdir))
    code, data = _cli(daemon, str(tmp_path / "state"), "install", "--engine", "containerd", "--config",
                      daemon.config_path, "--runtime-path", runtime_binary, "--service-manager", "command",
                      "--restart-command", restart, "--timeout", "20")
    assert code == 0, data
    assert data["apply"]["method"] == "restart" and data["apply"]["verified"] is True
