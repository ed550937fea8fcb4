"""nvdocker.gpu.runtime on a host whose daemon.json dockerd could no longer start on (issue #19, item 6).

The module runs as Ansible runs it on a managed host (its own file, arguments in a JSON file, the
system python3 with Debian's ansible-core, the collection on PYTHONPATH) against a live detached
private dockerd (tests/support/sandbox.py). A key added behind dockerd's back: the task fails with
nvdocker-setup's id and hint, host_state "unchanged", daemon.json's bytes the same, dockerd still
running (same pid, answering /_ping)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.sandbox import DockerdSandbox, cli_script, dockerd_or_skip, unmount_below

pytestmark = pytest.mark.dockerd

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible" / "collections"
MODULE = COLLECTIONS / "ansible_collections" / "nvdocker" / "gpu" / "plugins" / "modules" / "runtime.py"
SYSTEM_PYTHON = "/usr/bin/python3"
BROKEN = b'{\n  "log-level": "warn",\n  "not-a-docker-key": true\n}\n'


def _sandbox_command(action, workdir):
    return "cd {} && {} -m tests.support.sandbox {} {}".format(REPO, sys.executable, action, workdir)


@pytest.fixture
def daemon():
    dockerd_or_skip()
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import ansible.module_utils.basic"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: the system python3 has no ansible-core")
        pytest.skip("the system python3 has no ansible-core (apt install ansible-core)")
    workdir = tempfile.mkdtemp(prefix="nvn.", dir="/tmp")
    with open(os.path.join(workdir, "daemon.json"), "wb") as handle:
        handle.write(b'{\n  "log-level": "warn"\n}\n')
    subprocess.run(["/bin/sh", "-c", _sandbox_command("start", workdir)], check=True)
    try:
        yield DockerdSandbox(workdir, daemon_json=None)
    finally:
        subprocess.run(["/bin/sh", "-c", _sandbox_command("stop", workdir)], check=False)
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _pid(sandbox):
    with open(sandbox.pidfile) as handle:
        return int(handle.read().strip())


def test_module_fails_with_our_id_and_hint_and_leaves_the_host_unchanged(tmp_path, daemon, runtime_binary):
    with open(daemon.config_path, "wb") as handle:  # behind the running dockerd's back
        handle.write(BROKEN)
    pid = _pid(daemon)
    params = dict(cli_path=cli_script(str(tmp_path / "cli")), config=daemon.config_path, state_dir=str(tmp_path / "state"),
                  runtime_path=runtime_binary, cdi=True, apply="auto",
                  restart_command=_sandbox_command("restart", daemon.workdir), timeout=60)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    env = dict(os.environ, DOCKER_HOST=daemon.docker_host, PYTHONPATH=str(COLLECTIONS))
    done = subprocess.run([SYSTEM_PYTHON, str(MODULE), str(args_file)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=300)
    result = json.loads(done.stdout)
    assert result.get("failed") is True, result
    assert result["error_id"] == "daemon-would-not-start" and result["rc"] == 4, result
    assert result["host_state"] == "unchanged" and result["rolled_back"] is False
    assert result["hint"].startswith('remove "not-a-docker-key" from {}'.format(daemon.config_path)), result["hint"]
    assert "(daemon-would-not-start)" in result["msg"]
    with open(daemon.config_path, "rb") as handle:
        assert handle.read() == BROKEN
    assert _pid(daemon) == pid and daemon.ping()
