"""Never take a running dockerd down (issue #19, item 6): a daemon.json that dockerd would refuse at
start (a key added behind its back, a key its command line also sets as a flag) is refused before
anything is written, whether the new file or the one a rollback would restore; a live private
dockerd keeps running and answering."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from nvdocker_setup import operations
from nvdocker_setup.apply import ApplyOptions
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.engines.docker.startable import flag_conflicts, start_blockers
from nvdocker_setup.errors import WouldNotStart
from nvdocker_setup.exit_status import ExitStatus
from tests.support.sandbox import DockerdSandbox, SandboxService, dockerd_or_skip

GOOD = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"]\n}\n'
WITH_UNKNOWN = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"],\n  "not-a-docker-key": true\n}\n'
NO_SUCH_OPTION = "the following directives don't match any configuration option"
BOTH = "the following directives are specified both as a flag and in the configuration file"


# --- the pure judgement ---------------------------------------------------------------------------


def test_unknown_top_level_key_blocks_with_the_fix():
    blockers = start_blockers(json.loads(WITH_UNKNOWN))
    assert [(b.key, b.code) for b in blockers] == [("not-a-docker-key", "unknown-key")]
    fix = blockers[0].fix("/etc/docker/daemon.json")
    assert fix.startswith('remove "not-a-docker-key" from /etc/docker/daemon.json: dockerd refuses unknown keys')
    assert "started before the key was added" in fix


def test_a_good_file_has_no_blockers_even_with_flags():
    argv = ("/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock", "--iptables=false")
    assert start_blockers(json.loads(GOOD), [("the running dockerd (pid 1)", argv)]) == []


def test_flag_file_conflicts_hosts_and_others():
    value = {"hosts": ["unix:///run/d.sock"], "log-level": "warn", "insecure-registries": ["r:5000"],
             "runtimes": {"x": {"path": "/bin/x"}}, "data-root": "/d"}
    argv = ("dockerd", "-H", "fd://", "--insecure-registry=r:5000", "--add-runtime", "y=/bin/y", "--config-file",
            "/etc/docker/daemon.json", "--debug")
    found = {(b.key, b.flag) for b in flag_conflicts(value, argv, "unit")}
    # runtimes are merged by dockerd (not a conflict); --config-file and --debug set nothing in the file
    assert found == {("hosts", "-H"), ("insecure-registries", "--insecure-registry")}
    hosts = next(b for b in flag_conflicts(value, argv, "docker.service's ExecStart") if b.key == "hosts")
    assert "remove 'hosts' from /etc/docker/daemon.json or -H from docker.service's ExecStart" in hosts.fix(
        "/etc/docker/daemon.json")


def test_validate_acceptance_keeps_only_what_validate_cannot_see():
    value = {"not-a-docker-key": True, "default-runtime": "missing"}
    codes = {b.code for b in start_blockers(value, validate_accepted=True)}
    assert codes == {"default-runtime-unknown"}
    assert {b.code for b in start_blockers(value)} == {"unknown-key", "default-runtime-unknown"}


# --- live private dockerd (20.10 here; 26.1 below) ------------------------------------------------


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _context(tmp_path, box, service=None, path=None):
    env = dict(os.environ, DOCKER_HOST=box.docker_host)
    if path is not None:
        env["PATH"] = path
    return Context(state_dir=str(tmp_path / "state"), docker_socket=box.socket_path,
                   service=service or SandboxService(box), env=env)


@pytest.fixture
def box(tmp_path):
    dockerd_or_skip()
    sandbox = DockerdSandbox(str(tmp_path / "dockerd"), daemon_json=GOOD)
    sandbox.start()
    yield sandbox
    sandbox.close()


def _add_key_behind_its_back(box):
    with open(box.config_path, "wb") as handle:
        handle.write(WITH_UNKNOWN)


@pytest.mark.dockerd
@pytest.mark.parametrize("mode,extra", [("restart", {}), ("auto", {"enable_cdi": True}), ("auto", {}),
                                        ("reload", {})])
def test_key_added_behind_dockerds_back_is_refused_before_any_write(tmp_path, box, runtime_binary, mode, extra):
    _add_key_behind_its_back(box)
    pid = box.pid
    ctx = _context(tmp_path, box)
    with pytest.raises(WouldNotStart) as caught:
        operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary, **extra),
                           config=box.config_path, apply_options=ApplyOptions(mode=mode, timeout=30))
    error = caught.value
    assert error.reference == "daemon-would-not-start" and error.exit_status == ExitStatus.VALIDATION_FAILED == 4
    assert "'not-a-docker-key'" in error.message and "nothing was written" in error.message
    assert error.hint == ('remove "not-a-docker-key" from {}: dockerd refuses unknown keys at start; it is running '
                          'only because it started before the key was added'.format(box.config_path))
    assert any("what a rollback restores" in line and "not-a-docker-key" in line for line in error.details)
    assert ctx.service.calls == []  # neither reloaded nor restarted
    assert _read(box.config_path) == WITH_UNKNOWN
    assert box.pid == pid and box.ping() and "nvidia" not in box.info()["Runtimes"]
    assert not os.path.exists(str(tmp_path / "state" / "backups")) or os.listdir(str(tmp_path / "state" / "backups")) == []


@pytest.mark.dockerd
def test_apply_none_still_writes_with_a_warning(tmp_path, box, runtime_binary):
    """Only writing cannot take dockerd down: --apply none keeps its old behaviour (a warning)."""
    _add_key_behind_its_back(box)
    ctx = _context(tmp_path, box)
    result = operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary),
                                config=box.config_path, apply_options=ApplyOptions(mode="none"))
    assert result.changed and any("not-a-docker-key" in w and "already in the file" in w for w in result.warnings)
    assert ctx.service.calls == [] and box.ping()


@pytest.mark.dockerd
def test_dockerds_own_sighup_refuses_a_file_with_an_unknown_key(box):
    """Why a reload is refused too: dockerd 20.10 checks the file on SIGHUP as at start, rejects all of it and
    keeps running on what it had (so a reload never takes, and --apply auto would fall back to a restart)."""
    _add_key_behind_its_back(box)
    with open(box.config_path, "rb+") as handle:  # also a runtime, to see the reload did not take anything
        handle.write(WITH_UNKNOWN.replace(b'"not-a-docker-key"', b'"runtimes": {"late": {"path": "/bin/true"}},\n  '
                                          b'"not-a-docker-key"'))
    pid = box.pid
    box.reload()
    import time

    deadline = time.monotonic() + 10
    while NO_SUCH_OPTION not in _read(box.log_path).decode("utf-8", "replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    log = _read(box.log_path).decode("utf-8", "replace")
    assert NO_SUCH_OPTION in log and "not-a-docker-key" in log
    assert box.pid == pid and box.ping() and "late" not in box.info()["Runtimes"]


@pytest.mark.dockerd
def test_hosts_in_the_file_while_dockerd_runs_with_dash_h_is_refused(tmp_path, box, runtime_binary):
    """dockerd runs with -H (the sandbox's socket); the file gained "hosts" behind its back."""
    with_hosts = GOOD.replace(b'"log-level"', b'"hosts": ["unix:///tmp/nvd-never.sock"],\n  "log-level"')
    with open(box.config_path, "wb") as handle:
        handle.write(with_hosts)
    pid = box.pid
    ctx = _context(tmp_path, box)
    with pytest.raises(WouldNotStart) as caught:
        operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary, enable_cdi=True),
                           config=box.config_path, apply_options=ApplyOptions(timeout=30))
    error = caught.value
    assert "'hosts' is also given as -H on its command line" in error.message
    assert error.hint.startswith("remove 'hosts' from {} or -H from the running dockerd (pid {})".format(
        box.config_path, pid))
    assert ctx.service.calls == [] and _read(box.config_path) == with_hosts
    assert box.pid == pid and box.ping()


@pytest.mark.dockerd
def test_a_new_key_that_conflicts_with_a_flag_is_refused_before_writing(tmp_path, runtime_binary):
    """--default-runtime on dockerd's command line, install --default-runtime: the new file would not load
    (before, the reload was rejected, the restart failed and a rollback brought dockerd back: exit 10)."""
    dockerd_or_skip()
    box = DockerdSandbox(str(tmp_path / "dockerd"), daemon_json=GOOD, extra_flags=["--default-runtime=runc"])
    box.start()
    try:
        pid = box.pid
        ctx = _context(tmp_path, box)
        with pytest.raises(WouldNotStart) as caught:
            operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary, set_default=True),
                               config=box.config_path, apply_options=ApplyOptions(timeout=30))
        assert "would not start with the new" in caught.value.message and "--default-runtime" in caught.value.message
        assert ctx.service.calls == [] and _read(box.config_path) == GOOD and box.pid == pid and box.ping()
    finally:
        box.close()


@pytest.mark.dockerd
def test_cli_exit_code_id_and_hint(tmp_path, box, runtime_binary):
    """The real CLI, --apply restart through --service-manager command: the restart command only leaves a mark
    (so a regression cannot leave a stray dockerd behind); it must never run."""
    _add_key_behind_its_back(box)
    pid = box.pid
    marker = tmp_path / "restarted"
    restart = "touch {}".format(shlex.quote(str(marker)))
    env = dict(os.environ, DOCKER_HOST=box.docker_host, NVDOCKER_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.getcwd())
    argv = [sys.executable, "-m", "nvdocker_setup", "install", "--config", box.config_path, "--runtime-path",
            runtime_binary, "--apply", "restart", "--service-manager", "command", "--restart-command", restart,
            "--yes", "--json"]
    completed = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert completed.returncode == 4, completed.stderr.decode()
    report = json.loads(completed.stdout)
    assert report["ok"] is False and report["error"]["id"] == "daemon-would-not-start"
    assert report["error"]["exit_code"] == 4
    assert report["error"]["hint"].startswith('remove "not-a-docker-key" from {}'.format(box.config_path))
    assert _read(box.config_path) == WITH_UNKNOWN and not marker.exists()
    assert box.pid == pid and box.ping()


def test_a_dockerd_path_another_user_could_replace_is_never_run(tmp_path):
    """The running dockerd's argv[0] is run (--version, --validate) only when nobody but root can
    replace that file: a path under a directory anybody can write is skipped, never executed."""
    import os

    from nvdocker_setup.context import Context
    from nvdocker_setup.engines.docker.startable import _binary_for

    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(str(open_dir), 0o777)
    marker = tmp_path / "ran"
    planted = open_dir / "dockerd"
    planted.write_text("#!/bin/sh\ntouch {}\necho 'Docker version 26.1.5, build x'\n".format(marker))
    planted.chmod(0o755)
    ctx = Context(env={"PATH": str(tmp_path / "empty")})
    assert _binary_for(ctx, [("the running dockerd", (str(planted), "-H", "fd://"))]) is None
    assert not marker.exists()
