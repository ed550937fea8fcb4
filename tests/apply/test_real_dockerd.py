"""Apply, verify and roll back against a real private dockerd (see tests/support/sandbox.py)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from nvdocker_setup import operations
from nvdocker_setup.apply import ApplyFailed, ApplyOptions, Reporter, RollbackFailed
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.errors import Conflict, WouldNotStart
from nvdocker_setup.exit_status import ExitStatus
from tests.support.sandbox import DockerdSandbox, SandboxService, dockerd_or_skip

pytestmark = pytest.mark.dockerd

ADMIN = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"]\n}\n'


@pytest.fixture
def sandbox(tmp_path):
    dockerd_or_skip()
    box = DockerdSandbox(str(tmp_path / "dockerd"), daemon_json=ADMIN)
    box.start()
    yield box
    box.close()


def context(tmp_path, box, service=None):
    return Context(
        state_dir=str(tmp_path / "state"),
        docker_socket=box.socket_path,
        service=service or SandboxService(box),
        env=dict(os.environ, DOCKER_HOST=box.docker_host),
    )


def request(runtime, **kwargs):
    return InstallRequest(runtime_name="nvidia", runtime_path=runtime, **kwargs)


def read(box):
    with open(box.config_path, "rb") as handle:
        return handle.read()


def test_install_reloads_and_a_running_container_keeps_its_pid(tmp_path, sandbox, runtime_binary):
    sandbox.import_tiny_image()
    container = sandbox.docker("run", "-d", "--network", "none", "tiny", "sleep", "300").stdout.decode().strip()
    pid_before = sandbox.docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    ctx = context(tmp_path, sandbox)
    result = operations.install(ctx, request(runtime_binary, set_default=True), config=sandbox.config_path, apply_options=ApplyOptions())
    assert result.apply.method == "reload" and result.apply.verified
    assert ctx.service.calls == ["reload"]
    info = sandbox.info()
    assert info["Runtimes"]["nvidia"]["path"] == runtime_binary and info["DefaultRuntime"] == "nvidia"
    state = sandbox.docker("inspect", "-f", "{{.State.Running}} {{.State.Pid}}", container).stdout.decode().split()
    assert state == ["true", pid_before.decode()]
    # the runtime really runs containers (the stand-in execs runc)
    assert sandbox.docker("run", "--rm", "--network", "none", "tiny", "echo", "via-nvidia").stdout == b"via-nvidia\n"
    sandbox.docker("rm", "-f", container)


def test_install_with_restart(tmp_path, sandbox, runtime_binary):
    ctx = context(tmp_path, sandbox)
    pid_before = sandbox.pid
    result = operations.install(ctx, request(runtime_binary, enable_cdi=True), config=sandbox.config_path, apply_options=ApplyOptions())
    assert result.apply.method == "restart" and "features.cdi" in result.apply.reason and result.apply.verified
    assert sandbox.pid != pid_before
    assert "nvidia" in sandbox.info()["Runtimes"]


def test_uninstall_restores_a_runnable_default(tmp_path, sandbox, runtime_binary):
    ctx = context(tmp_path, sandbox)
    operations.install(ctx, request(runtime_binary, set_default=True), config=sandbox.config_path, apply_options=ApplyOptions())
    assert sandbox.info()["DefaultRuntime"] == "nvidia"
    result = operations.uninstall(ctx, "nvidia", config=sandbox.config_path, apply_options=ApplyOptions())
    assert result.apply.method == "restart" and "does not forget" in result.apply.reason and result.apply.verified
    info = sandbox.info()
    assert info["DefaultRuntime"] == "runc" and "nvidia" not in info["Runtimes"]
    assert read(sandbox) == ADMIN


def test_config_dockerd_cannot_start_with_is_refused_before_anything_is_written(tmp_path, runtime_binary):
    """A --default-runtime entry while dockerd runs with the flag: dockerd would not start on the new
    file, so nothing is written and dockerd is not touched (issue #19: never take a running daemon
    down; this used to reload, restart, fail and roll back)."""
    dockerd_or_skip()
    box = DockerdSandbox(str(tmp_path / "dockerd"), daemon_json=ADMIN, extra_flags=["--default-runtime=runc"])
    box.start()
    try:
        pid = box.pid
        ctx = context(tmp_path, box)
        with pytest.raises(WouldNotStart) as caught:
            operations.install(ctx, request(runtime_binary, set_default=True), config=box.config_path,
                               apply_options=ApplyOptions(timeout=30, reload_window=3))
        error = caught.value
        assert error.exit_status == ExitStatus.VALIDATION_FAILED and "--default-runtime" in error.message
        assert ctx.service.calls == []
        assert read(box) == ADMIN
        assert box.pid == pid and box.ping() and box.info()["DefaultRuntime"] == "runc"
        assert operations.show(ctx, config=box.config_path).installed_by_us is False
    finally:
        box.close()


def test_reload_that_does_not_take_falls_back_to_restart(tmp_path, sandbox, runtime_binary):
    service = SandboxService(sandbox, broken_reload=True)
    ctx = context(tmp_path, sandbox, service)
    result = operations.install(ctx, request(runtime_binary), config=sandbox.config_path,
                                apply_options=ApplyOptions(reload_window=2))
    assert service.calls == ["reload", "restart"]
    assert result.apply.fallback == "restart" and result.apply.verified
    assert "nvidia" in sandbox.info()["Runtimes"]


def test_explicit_reload_never_restarts(tmp_path, sandbox, runtime_binary):
    service = SandboxService(sandbox, broken_reload=True)
    ctx = context(tmp_path, sandbox, service)
    with pytest.raises(ApplyFailed):
        operations.install(ctx, request(runtime_binary), config=sandbox.config_path,
                           apply_options=ApplyOptions(mode="reload", reload_window=1))
    assert service.calls == ["reload", "reset-failed", "restart"]  # the restart is the rollback's
    assert read(sandbox) == ADMIN


def test_a_forced_reload_that_cannot_forget_the_default_says_the_fix(tmp_path, sandbox, runtime_binary):
    """`uninstall --apply reload` after `--default-runtime`: a reload cannot make dockerd forget a
    removed default (issue #24); the failure's hint says so and names --apply auto, not "see its log"."""
    ctx = context(tmp_path, sandbox)
    operations.install(ctx, request(runtime_binary, set_default=True), config=sandbox.config_path,
                       apply_options=ApplyOptions())
    assert sandbox.info()["DefaultRuntime"] == "nvidia"
    with pytest.raises(ApplyFailed) as caught:
        operations.uninstall(ctx, "nvidia", config=sandbox.config_path,
                             apply_options=ApplyOptions(mode="reload", reload_window=2))
    hint = caught.value.hint or ""
    assert "a reload cannot take this change" in hint and "--apply auto" in hint, hint
    assert "default-runtime" in hint and "log" not in hint, hint
    assert sandbox.info()["DefaultRuntime"] == "nvidia"  # rolled back: the entry is still there and loaded


class InterruptingReporter(Reporter):
    """Sends this process a real SIGTERM while the apply waits for dockerd."""

    def __init__(self):
        self.sent = False

    def waiting(self, message):
        if not self.sent and "previous" not in message:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().waiting(message)


def test_sigterm_during_apply_rolls_back(tmp_path, sandbox, runtime_binary):
    ctx = context(tmp_path, sandbox)
    with pytest.raises(ApplyFailed) as caught:
        operations.install(ctx, request(runtime_binary, set_default=True), config=sandbox.config_path,
                           apply_options=ApplyOptions(), reporter=InterruptingReporter())
    assert caught.value.exit_status == ExitStatus.INTERRUPTED
    assert read(sandbox) == ADMIN
    info = sandbox.info()
    assert info["DefaultRuntime"] == "runc" and "nvidia" not in info["Runtimes"]


def test_failed_restart_and_failed_rollback_is_reported(tmp_path, sandbox, runtime_binary):
    service = SandboxService(sandbox, fail_restarts=2)
    ctx = context(tmp_path, sandbox, service)
    with pytest.raises(RollbackFailed) as caught:
        operations.install(ctx, request(runtime_binary, enable_cdi=True), config=sandbox.config_path,
                           apply_options=ApplyOptions(timeout=3))
    assert caught.value.exit_status == ExitStatus.ROLLBACK_FAILED
    assert "dockerd may be down" in caught.value.hint
    assert read(sandbox) == ADMIN  # the file is back even though dockerd is not
    sandbox.start()


def test_restart_refused_while_containers_run_without_yes(tmp_path, sandbox, runtime_binary):
    sandbox.import_tiny_image()
    container = sandbox.docker("run", "-d", "--network", "none", "tiny", "sleep", "300").stdout.decode().strip()
    ctx = context(tmp_path, sandbox)
    with pytest.raises(Conflict) as caught:
        operations.install(ctx, request(runtime_binary, enable_cdi=True), config=sandbox.config_path, apply_options=ApplyOptions())
    assert caught.value.reference == "restart-would-stop-containers" and "1 running container" in caught.value.message
    assert read(sandbox) == ADMIN and ctx.service.calls == []
    asked = []
    ctx2 = context(tmp_path, sandbox)
    operations.install(ctx2, request(runtime_binary, enable_cdi=True), config=sandbox.config_path,
                       apply_options=ApplyOptions(confirm=lambda q: asked.append(q) or True))
    assert "stop 1 running container" in asked[0] and ctx2.service.calls == ["restart"]
    sandbox.docker("rm", "-f", container)


def test_unchanged_file_that_dockerd_has_not_loaded_is_reloaded(tmp_path, sandbox, runtime_binary):
    ctx = context(tmp_path, sandbox)
    operations.install(ctx, request(runtime_binary), config=sandbox.config_path, apply_options=ApplyOptions(mode="none"))
    assert "nvidia" not in sandbox.info()["Runtimes"]
    result = operations.install(ctx, request(runtime_binary), config=sandbox.config_path, apply_options=ApplyOptions())
    assert not result.changed and result.apply.method == "reload" and result.apply.verified
    assert "nvidia" in sandbox.info()["Runtimes"]


def test_cli_signal_adapter_does_a_real_reload(tmp_path, sandbox, runtime_binary):
    env = dict(os.environ, DOCKER_HOST=sandbox.docker_host, NVDOCKER_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=os.getcwd())
    argv = [sys.executable, "-m", "nvdocker_setup", "install", "--config", sandbox.config_path,
            "--runtime-path", runtime_binary, "--service-manager", "signal", "--json"]
    completed = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert completed.returncode == 0, completed.stderr.decode()
    report = json.loads(completed.stdout)
    assert report["apply"]["method"] == "reload" and report["apply"]["verified"] is True
    assert report["apply"]["service"] == "signal"
    assert "nvidia" in sandbox.info()["Runtimes"]
    # removing the only runtime needs a restart, which the signal adapter cannot do: it says so
    completed = subprocess.run([sys.executable, "-m", "nvdocker_setup", "uninstall", "--config", sandbox.config_path,
                                "--service-manager", "signal", "--json"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=120)
    assert completed.returncode == 0, completed.stderr.decode()
    report = json.loads(completed.stdout)
    assert report["apply"]["method"] == "none" and "restart dockerd yourself" in report["apply"]["notes"][0]
