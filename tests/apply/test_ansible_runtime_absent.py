"""nvdocker.gpu.runtime with state=absent against a live private dockerd (issue #19, item 5).

The module runs the way Ansible runs it on a managed host: its own file, its arguments in a JSON
file, under the system python3 with Debian's ansible-core, the collection on PYTHONPATH. It runs
this tree's nvdocker-setup (cli_path); the dockerd is a detached sandbox (tests/support/sandbox.py)
restarted by ``python -m tests.support.sandbox restart DIR`` (restart_command), i.e. by the pid
in its pidfile. The CLI takes the decision (apply_plan.choose_method); the module reports it.
"""

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
ADMIN = b'{\n  "log-level": "warn"\n}\n'


def _need_ansible():
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import ansible.module_utils.basic"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        why = "the system python3 has no ansible-core (apt install ansible-core)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: " + why)
        pytest.skip(why)


def _sandbox_command(action, workdir):
    return "cd {} && {} -m tests.support.sandbox {} {}".format(REPO, sys.executable, action, workdir)


@pytest.fixture
def daemon():
    """A detached private dockerd in a short directory (its socket path stays the same across restarts)."""
    dockerd_or_skip()
    _need_ansible()
    workdir = tempfile.mkdtemp(prefix="nva.", dir="/tmp")
    with open(os.path.join(workdir, "daemon.json"), "wb") as handle:
        handle.write(ADMIN)
    subprocess.run(["/bin/sh", "-c", _sandbox_command("start", workdir)], check=True)
    sandbox = DockerdSandbox(workdir, daemon_json=None)
    try:
        yield sandbox
    finally:
        subprocess.run(["/bin/sh", "-c", _sandbox_command("stop", workdir)], check=False)
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def pid_of(sandbox):
    with open(sandbox.pidfile) as handle:
        return int(handle.read().strip())


def run_module(tmp_path, sandbox, **args):
    params = dict(cli_path=cli_script(str(tmp_path / "cli")), config=sandbox.config_path, state_dir=str(tmp_path / "state"),
                  restart_command=_sandbox_command("restart", sandbox.workdir), timeout=60)
    params.update(args)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    env = dict(os.environ, DOCKER_HOST=sandbox.docker_host, PYTHONPATH=str(COLLECTIONS))
    done = subprocess.run([SYSTEM_PYTHON, str(MODULE), str(args_file)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=300)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise AssertionError("no JSON from the module ({}): {}\n{}".format(
            done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))) from None


def test_absent_restarts_dockerd_when_a_reload_cannot_forget_the_default(tmp_path, daemon, runtime_binary):
    sandbox = daemon
    present = run_module(tmp_path, sandbox, runtime_path=runtime_binary, default_runtime=True)
    assert not present.get("failed"), present
    assert present["changed"] and present["reloaded"] and not present["restarted"], present["apply"]
    assert sandbox.info()["DefaultRuntime"] == "nvidia"

    pid = pid_of(sandbox)
    absent = run_module(tmp_path, sandbox, state="absent")
    assert not absent.get("failed"), absent
    assert absent["changed"] is True and absent["restarted"] is True and absent["reloaded"] is False, absent["apply"]
    assert absent["restart_needed"] is False
    assert absent["apply"]["method"] == "restart" and absent["apply"]["verified"] is True, absent["apply"]
    assert "a reload does not forget the removed default-runtime" in absent["apply"]["reason"], absent["apply"]
    assert pid_of(sandbox) != pid
    info = sandbox.info()
    assert info["DefaultRuntime"] == "runc" and "nvidia" not in info["Runtimes"], info
    with open(sandbox.config_path, "rb") as handle:
        assert handle.read() == ADMIN
    # the binary gone (as after removing the package): containers still run
    os.unlink(runtime_binary)
    sandbox.import_tiny_image()
    ran = sandbox.docker("run", "--rm", "--network", "none", "tiny", "true", check=False)
    assert ran.returncode == 0, ran.stderr

    # nothing left to remove: no change, no restart
    again = run_module(tmp_path, sandbox, state="absent")
    assert again["changed"] is False and again["restarted"] is False and again["reloaded"] is False, again


def test_absent_with_apply_none_warns_that_dockerd_keeps_the_runtime(tmp_path, daemon, runtime_binary):
    sandbox = daemon
    assert not run_module(tmp_path, sandbox, runtime_path=runtime_binary, default_runtime=True).get("failed")
    pid = pid_of(sandbox)
    absent = run_module(tmp_path, sandbox, state="absent", apply="none")
    assert not absent.get("failed"), absent
    assert absent["changed"] is True and absent["restarted"] is False and absent["restart_needed"] is True
    assert any("keeps the removed runtime 'nvidia'" in w and "systemctl restart docker" in w
               for w in absent.get("warnings") or []), absent.get("warnings")
    assert pid_of(sandbox) == pid and sandbox.info()["DefaultRuntime"] == "nvidia"


def test_absent_reloads_when_a_reload_is_enough(tmp_path, daemon, runtime_binary):
    sandbox = daemon
    # the admin's own runtimes and explicit default stay in the file, so a reload replaces both
    admin = b'{"default-runtime": "runc", "runtimes": {"custom": {"path": "/usr/local/bin/custom-rt"}}}\n'
    with open(sandbox.config_path, "wb") as handle:
        handle.write(admin)
    subprocess.run(["/bin/sh", "-c", _sandbox_command("restart", sandbox.workdir)], check=True)
    assert not run_module(tmp_path, sandbox, runtime_path=runtime_binary, default_runtime=True).get("failed")
    assert sandbox.info()["DefaultRuntime"] == "nvidia"
    pid = pid_of(sandbox)
    absent = run_module(tmp_path, sandbox, state="absent")
    assert absent["changed"] is True and absent["reloaded"] is True and absent["restarted"] is False, absent["apply"]
    assert absent["apply"]["verified"] is True
    assert pid_of(sandbox) == pid
    info = sandbox.info()
    assert info["DefaultRuntime"] == "runc" and "nvidia" not in info["Runtimes"], info
