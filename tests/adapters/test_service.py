"""Service managers against fake systemctl/snap/journalctl scripts, real signals and real sockets.

The fakes live in ``tmp_path/fakebin`` and are found only through the Context's PATH. While these
tests run, the process PATH starts with "poison" systemctl/snap/journalctl that record any call
and fail: a command looked up on the wrong PATH can never reach this host's real systemd.

The last tests drive a real private dockerd through a fake ``systemctl`` whose ``restart`` runs
``python -m tests.support.sandbox restart DIR``.
"""

import datetime
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from nvdocker_setup import operations
from nvdocker_setup.adapters.docker_api import DockerAPI
from nvdocker_setup.adapters.service import (
    MANAGERS,
    ServiceError,
    SignalService,
    SnapService,
    SystemdService,
    detect,
    pid_lookup,
    send_hup,
)
from nvdocker_setup.apply import ApplyFailed, ApplyOptions
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.errors import NvdockerError
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

REPO = str(Path(__file__).resolve().parents[2])
ORIGINAL_PATH = os.environ.get("PATH", "/usr/bin:/bin")
JOB_FAILED = "Job for docker.service failed because the control process exited with error code."


# -- guard and helpers ----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def poisoned_process_path(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """Put failing systemctl/snap/journalctl first on the *process* PATH; fail if any ran."""
    poison = tmp_path / "poison"
    poison.mkdir()
    log = tmp_path / "poison.log"
    for name in ("systemctl", "snap", "journalctl"):
        script = poison / name
        script.write_text('#!/bin/sh\nprintf "%s %s\\n" "$0" "$*" >> {}\nexit 99\n'.format(shlex.quote(str(log))))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(poison) + os.pathsep + ORIGINAL_PATH)
    yield poison
    assert not log.exists(), "a command ran from the process PATH, not the context's: " + log.read_text()


def write_script(bindir: Path, name: str, body: str) -> Path:
    bindir.mkdir(exist_ok=True)
    script = bindir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


class FakeTools:
    """fakebin/{systemctl,snap,journalctl} recording their argv, one call per line."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "fake"
        self.dir.mkdir()
        self.bin = tmp_path / "fakebin"
        self.calls_file = self.dir / "calls"
        quoted = {name: shlex.quote(str(self.dir / name)) for name in ("calls", "fail", "mainpid", "active", "socket-active", "env")}
        write_script(self.bin, "systemctl", """
printf '%s\\n' "$*" >> {calls}
printf '%s\\n' "${{FAKE_TOKEN:-unset}}" > {env}
if [ -n "$FAKE_SYSTEMCTL_FAIL" ] || [ -e {fail} ]; then
    echo "{job}" >&2
    exit "${{FAKE_SYSTEMCTL_FAIL:-1}}"
fi
case "$*" in
    *"show -p MainPID --value"*)
        if [ -e {mainpid} ]; then read pid < {mainpid}; echo "$pid"; else echo 0; fi ;;
    *"is-active --quiet docker.socket")
        [ -e {socket_active} ] && exit 0; exit 3 ;;
    *"is-active --quiet"*)
        [ -e {active} ] && exit 0; exit 3 ;;
esac
exit 0
""".format(job=JOB_FAILED, socket_active=quoted["socket-active"], **quoted))

    def ctx(self, **env: str) -> Context:
        return Context(env=dict({"PATH": str(self.bin)}, **env), root=str(self.dir.parent / "root"))

    def calls(self) -> List[str]:
        try:
            return self.calls_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def flag(self, name: str, content: str = "") -> None:
        (self.dir / name).write_text(content)

    def add(self, name: str, body: str) -> Path:
        return write_script(self.bin, name, body)


@pytest.fixture
def fake(tmp_path: Path) -> FakeTools:
    return FakeTools(tmp_path)


HUP_CHILD = """
import signal, sys, time
def on_hup(signum, frame):
    with open(sys.argv[1], "a") as handle:
        handle.write("HUP\\n")
signal.signal(signal.SIGHUP, on_hup)
print("ready", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    time.sleep(0.05)
"""

LISTEN_CHILD = """
import socket, sys, time
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
print("ready", flush=True)
time.sleep(30)
"""


class Child:
    """A python child we started (and stop by its pid)."""

    def __init__(self, code: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, universal_newlines=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def hup_child(tmp_path: Path) -> Iterator[tuple]:
    marker = tmp_path / "hups"
    child = Child(HUP_CHILD, str(marker))
    try:
        yield child, marker
    finally:
        child.stop()


def wait_for_hup(marker: Path, count: int = 1) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().count("HUP") >= count:
            return True
        time.sleep(0.02)
    return False


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def fake_proc(root: Path, pid: int, comm: str) -> None:
    entry = root / "proc" / str(pid)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "comm").write_text(comm + "\n")


def put(root: Path, host_path: str, text: str) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- SystemdService -----------------------------------------------------------------------------

def test_systemd_commands_and_their_exact_argv(fake):
    service = SystemdService(fake.ctx())
    service.reload()
    service.restart()
    service.reset_failed()
    assert fake.calls() == ["reload docker.service", "restart docker.service", "reset-failed docker.service"]


def test_systemd_user_unit_passes_user(fake):
    service = SystemdService(fake.ctx(), user=True)
    service.reload()
    service.restart()
    service.reset_failed()
    service.is_active()
    service.main_pid()
    assert fake.calls() == [
        "--user reload docker.service",
        "--user restart docker.service",
        "--user reset-failed docker.service",
        "--user is-active --quiet docker.service",
        "--user show -p MainPID --value docker.service",
    ]


def test_systemd_other_unit(fake):
    SystemdService(fake.ctx(), unit="dockerd-gpu.service").reload()
    assert fake.calls() == ["reload dockerd-gpu.service"]


def test_systemd_names_and_hints(fake):
    system, user = SystemdService(fake.ctx()), SystemdService(fake.ctx(), user=True)
    assert (system.name, user.name) == ("systemd", "systemd-user")
    assert system.can_restart and user.can_restart
    assert system.describe() == "systemctl docker.service"
    assert user.describe() == "systemctl --user docker.service"
    assert system.logs_hint() == "journalctl -u docker.service --since -5min"
    assert user.logs_hint() == "journalctl --user -u docker.service --since -5min"


def test_systemd_is_active(fake):
    service = SystemdService(fake.ctx())
    assert service.is_active() is False
    fake.flag("active")
    assert service.is_active() is True
    assert fake.calls() == ["is-active --quiet docker.service"] * 2


@pytest.mark.parametrize("printed, expected", [("4242", 4242), ("0", None), ("", None), ("n/a", None)])
def test_systemd_main_pid(fake, printed, expected):
    fake.flag("mainpid", printed)
    assert SystemdService(fake.ctx()).main_pid() == expected
    assert fake.calls() == ["show -p MainPID --value docker.service"]


def test_systemd_main_pid_none_when_systemctl_fails(fake):
    fake.flag("mainpid", "4242")
    assert SystemdService(fake.ctx(FAKE_SYSTEMCTL_FAIL="1")).main_pid() is None


def test_socket_activated_idle(fake):
    service = SystemdService(fake.ctx())
    assert service.socket_activated_idle() is False  # neither the service nor the socket
    fake.flag("socket-active")
    assert service.socket_activated_idle() is True
    fake.flag("active")
    seen = len(fake.calls())
    assert service.socket_activated_idle() is False  # dockerd runs: it is not idle
    assert fake.calls()[seen:] == ["is-active --quiet docker.service"]
    assert fake.calls()[:2] == ["is-active --quiet docker.service", "is-active --quiet docker.socket"]


def test_socket_activated_idle_for_the_user_unit(fake):
    fake.flag("socket-active")
    assert SystemdService(fake.ctx(), user=True).socket_activated_idle() is True
    assert fake.calls() == ["--user is-active --quiet docker.service", "--user is-active --quiet docker.socket"]


@pytest.mark.parametrize("method, verb", [("reload", "reload"), ("restart", "restart")])
def test_systemd_failure_names_command_exit_code_and_stderr(fake, method, verb):
    service = SystemdService(fake.ctx(FAKE_SYSTEMCTL_FAIL="5"))
    with pytest.raises(ServiceError) as caught:
        getattr(service, method)()
    error = caught.value
    assert error.message == "systemctl {} docker.service failed (exit 5): {}".format(verb, JOB_FAILED)
    assert error.reference == "service-command-failed"
    assert error.hint == "see: journalctl -u docker.service --since -5min"


def test_systemd_failure_from_a_marker_file_for_the_user_unit(fake):
    fake.flag("fail")
    with pytest.raises(ServiceError) as caught:
        SystemdService(fake.ctx(), user=True).restart()
    assert "systemctl --user restart docker.service failed (exit 1)" in caught.value.message
    assert JOB_FAILED in caught.value.message
    assert caught.value.hint == "see: journalctl --user -u docker.service --since -5min"


def test_systemd_reset_failed_and_is_active_do_not_raise_on_failure(fake):
    fake.flag("fail")
    service = SystemdService(fake.ctx())
    service.reset_failed()
    assert service.is_active() is False
    assert fake.calls() == ["reset-failed docker.service", "is-active --quiet docker.service"]


def test_systemd_runs_with_the_context_environment(fake):
    SystemdService(fake.ctx(FAKE_TOKEN="from-the-context")).reload()
    assert (fake.dir / "env").read_text().strip() == "from-the-context"


def test_systemd_missing_is_a_service_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    service = SystemdService(Context(env={"PATH": str(empty)}))
    with pytest.raises(ServiceError, match="^systemctl restart docker.service failed: "):
        service.restart()


def test_systemd_timeout_is_a_service_error():
    def hangs(argv, timeout=None, env=None):
        raise subprocess.TimeoutExpired(argv, timeout)

    with pytest.raises(ServiceError, match="systemctl restart docker.service failed: .*timed out"):
        SystemdService(Context(env={"PATH": "/nonexistent"}, run=hangs)).restart()


def test_recent_logs_from_journalctl(fake):
    journal_calls = fake.dir / "journal-calls"
    fake.add("journalctl", 'printf "%s\\n" "$*" >> {}\nprintf "first\\n\\n  \\nsecond line\\n"\n'.format(shlex.quote(str(journal_calls))))
    since = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    assert SystemdService(fake.ctx()).recent_logs(since) == ["first", "second line"]
    assert SystemdService(fake.ctx(), user=True).recent_logs(since) == ["first", "second line"]
    stamp = "@{}".format(int(since.timestamp()))
    assert journal_calls.read_text().splitlines() == [
        "-u docker.service --since {} -n 30 --no-pager -o cat".format(stamp),
        "--user -u docker.service --since {} -n 30 --no-pager -o cat".format(stamp),
    ]


def test_recent_logs_empty_without_journalctl(fake):
    since = datetime.datetime.now(datetime.timezone.utc)
    assert SystemdService(fake.ctx()).recent_logs(since) == []


def test_recent_logs_empty_when_journalctl_fails_quietly(fake):
    fake.add("journalctl", "echo 'No journal files were found.' >&2\nexit 1\n")
    assert SystemdService(fake.ctx()).recent_logs(datetime.datetime.now(datetime.timezone.utc)) == []


# -- SnapService --------------------------------------------------------------------------------

SNAP = 'printf "%s\\n" "$*" >> {calls}\nif [ -e {fail} ]; then echo "error: cannot restart docker.dockerd" >&2; exit 1; fi\n'


def test_snap_restart_argv(fake):
    fake.add("snap", SNAP.format(calls=shlex.quote(str(fake.calls_file)), fail=shlex.quote(str(fake.dir / "fail"))))
    service = SnapService(fake.ctx(), lambda: None)
    service.restart()
    assert fake.calls() == ["restart docker.dockerd"]
    assert (service.name, service.can_restart, service.describe()) == ("snap", True, "snap")
    assert service.logs_hint() == "snap logs -n 50 docker.dockerd"


def test_snap_restart_failure(fake):
    fake.add("snap", SNAP.format(calls=shlex.quote(str(fake.calls_file)), fail=shlex.quote(str(fake.dir / "fail"))))
    fake.flag("fail")
    with pytest.raises(ServiceError) as caught:
        SnapService(fake.ctx(), lambda: None).restart()
    assert "snap restart docker.dockerd failed" in caught.value.message
    assert "error: cannot restart docker.dockerd" in caught.value.message
    assert caught.value.reference == "service-command-failed"


def test_snap_missing_is_a_service_error(fake):
    with pytest.raises(ServiceError, match="snap restart docker.dockerd failed"):
        SnapService(fake.ctx(), lambda: None).restart()


def test_snap_reload_sends_sighup_to_the_looked_up_pid(fake, hup_child):
    child, marker = hup_child
    service = SnapService(fake.ctx(), lambda: child.pid)
    assert service.main_pid() == child.pid
    assert service.is_active() is True
    service.reload()
    assert wait_for_hup(marker)
    assert child.process.poll() is None  # SIGHUP did not kill it: the handler ran
    assert fake.calls() == []  # no snap command for a reload


def test_snap_reload_without_a_pid(fake):
    service = SnapService(fake.ctx(), lambda: None)
    assert service.is_active() is False
    with pytest.raises(ServiceError, match="cannot find the snap's dockerd's pid") as caught:
        service.reload()
    assert caught.value.hint == "is dockerd running?"


def test_snap_is_not_active_with_a_dead_pid(fake):
    pid = dead_pid()
    assert SnapService(fake.ctx(), lambda: pid).is_active() is False


# -- SignalService ------------------------------------------------------------------------------

def test_signal_reload_sends_sighup(fake, hup_child):
    child, marker = hup_child
    service = SignalService(fake.ctx(), lambda: child.pid)
    service.reload()
    assert wait_for_hup(marker)
    service.reload()
    assert wait_for_hup(marker, 2)
    assert service.is_active() is True and service.main_pid() == child.pid


def test_signal_cannot_restart(fake):
    service = SignalService(fake.ctx(), lambda: 1)
    assert service.can_restart is False
    with pytest.raises(ServiceError) as caught:
        service.restart()
    assert caught.value.reference == "restart-impossible"
    assert "no service manager" in caught.value.message
    assert "restart dockerd" in caught.value.hint and "nvdocker-setup show" in caught.value.hint
    assert fake.calls() == []


def test_signal_reload_of_a_dead_pid(fake):
    pid = dead_pid()
    service = SignalService(fake.ctx(), lambda: pid)
    assert service.is_active() is False
    with pytest.raises(ServiceError, match=r"cannot signal dockerd \(pid {}\)".format(pid)):
        service.reload()


def test_signal_reload_without_a_pid(fake):
    with pytest.raises(ServiceError, match="cannot find dockerd's pid"):
        SignalService(fake.ctx(), lambda: None).reload()


def test_send_hup_direct(hup_child):
    child, marker = hup_child
    send_hup(Context(env={}), child.pid, "dockerd")
    assert wait_for_hup(marker)


# -- pid_lookup ---------------------------------------------------------------------------------

@pytest.fixture
def listener(tmp_path: Path) -> Iterator[str]:
    """A unix socket this process listens on (its SO_PEERCRED pid is ours)."""
    path = str(tmp_path / "d.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        yield path


def test_pid_lookup_from_peer_credentials(tmp_path, listener):
    root = tmp_path / "root"
    fake_proc(root, os.getpid(), "dockerd")
    assert pid_lookup(Context(env={}, root=str(root)), listener, [])() == os.getpid()


def test_pid_lookup_of_a_child_listener(tmp_path):
    root = tmp_path / "root"
    path = str(tmp_path / "c.sock")
    child = Child(LISTEN_CHILD, path)
    try:
        fake_proc(root, child.pid, "dockerd")
        assert pid_lookup(Context(env={}, root=str(root)), path, [])() == child.pid
    finally:
        child.stop()


def test_pid_lookup_ignores_a_peer_that_is_not_dockerd(tmp_path, listener):
    root = tmp_path / "root"
    fake_proc(root, os.getpid(), "python3")
    assert pid_lookup(Context(env={}, root=str(root)), listener, [])() is None


def test_pid_lookup_falls_back_to_the_pidfile(tmp_path, listener, hup_child):
    child, _ = hup_child
    root = tmp_path / "root"
    fake_proc(root, os.getpid(), "python3")  # the socket's peer is not dockerd (e.g. systemd)
    fake_proc(root, child.pid, "dockerd")
    put(root, "/var/run/docker.pid", "{}\n".format(child.pid))
    ctx = Context(env={}, root=str(root))
    assert pid_lookup(ctx, listener, ["/var/run/docker.pid"])() == child.pid
    assert pid_lookup(ctx, str(tmp_path / "missing.sock"), ["/var/run/docker.pid"])() == child.pid


def test_pid_lookup_tries_pidfiles_in_order(tmp_path, hup_child):
    child, _ = hup_child
    root = tmp_path / "root"
    fake_proc(root, child.pid, "dockerd")
    put(root, "/run/a.pid", "garbage")
    put(root, "/run/b.pid", "{}".format(dead_pid()))
    put(root, "/run/c.pid", "{}".format(child.pid))
    ctx = Context(env={}, root=str(root))
    pidfiles = ["/run/missing.pid", "/run/a.pid", "/run/b.pid", "/run/c.pid"]
    assert pid_lookup(ctx, str(tmp_path / "missing.sock"), pidfiles)() == child.pid


def test_pid_lookup_rejects_a_pidfile_naming_another_program(tmp_path, hup_child):
    child, _ = hup_child
    root = tmp_path / "root"
    fake_proc(root, child.pid, "sleep")  # a recycled pid
    put(root, "/var/run/docker.pid", str(child.pid))
    ctx = Context(env={}, root=str(root))
    assert pid_lookup(ctx, str(tmp_path / "missing.sock"), ["/var/run/docker.pid"])() is None


def test_pid_lookup_nothing_found(tmp_path):
    ctx = Context(env={}, root=str(tmp_path / "root"))
    assert pid_lookup(ctx, str(tmp_path / "missing.sock"), ["/var/run/docker.pid"])() is None


# -- detect -------------------------------------------------------------------------------------

def _detect_ctx(tmp_path: Path, fake: FakeTools, systemd_dir: bool, systemctl: bool, **env: str) -> Context:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if systemd_dir:
        (root / "run" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    path = str(fake.bin) if systemctl else str(tmp_path / "nothing")
    return Context(env=dict({"PATH": path}, **env), root=str(root), euid=0)


@pytest.mark.parametrize("requested, kind, user", [
    ("systemd", SystemdService, False),
    ("systemd-user", SystemdService, True),
    ("snap", SnapService, None),
    ("signal", SignalService, None),
])
@pytest.mark.parametrize("rule", ["default", "snap", "rootless"])
def test_detect_explicit_choice_wins(tmp_path, fake, requested, kind, user, rule):
    service = detect(_detect_ctx(tmp_path, fake, False, False), requested, rule, "/nonexistent.sock")
    assert type(service) is kind
    if user is not None:
        assert service.user is user


def test_detect_auto_snap_rule_picks_snap_even_with_systemd(tmp_path, fake):
    service = detect(_detect_ctx(tmp_path, fake, True, True), "auto", "snap", "/nonexistent.sock")
    assert isinstance(service, SnapService)


@pytest.mark.parametrize("rule", ["default", "option", "env", "systemd-execstart", "running-dockerd"])
def test_detect_auto_systemd(tmp_path, fake, rule):
    service = detect(_detect_ctx(tmp_path, fake, True, True), "auto", rule, "/nonexistent.sock")
    assert isinstance(service, SystemdService) and service.user is False and service.name == "systemd"


def test_detect_auto_rootless_is_the_user_unit(tmp_path, fake):
    service = detect(_detect_ctx(tmp_path, fake, True, True), "auto", "rootless", "/nonexistent.sock")
    assert isinstance(service, SystemdService) and service.user is True


@pytest.mark.parametrize("systemd_dir, systemctl", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("rule", ["default", "rootless"])
def test_detect_auto_without_systemd_is_signal(tmp_path, fake, systemd_dir, systemctl, rule):
    service = detect(_detect_ctx(tmp_path, fake, systemd_dir, systemctl), "auto", rule, "/nonexistent.sock")
    assert isinstance(service, SignalService)
    assert fake.calls() == []  # detection itself runs nothing


@pytest.mark.parametrize("requested", ["systemv", "", "Auto", "openrc"])
def test_detect_unknown_manager(tmp_path, fake, requested):
    with pytest.raises(NvdockerError) as caught:
        detect(_detect_ctx(tmp_path, fake, True, True), requested, "default", "/nonexistent.sock")
    assert "unknown service manager" in caught.value.message
    assert all(name in caught.value.message for name in MANAGERS)


def test_detect_signal_reads_the_system_pidfile(tmp_path, fake, hup_child):
    child, _ = hup_child
    ctx = _detect_ctx(tmp_path, fake, False, False)
    fake_proc(Path(ctx.root), child.pid, "dockerd")
    put(Path(ctx.root), "/var/run/docker.pid", str(child.pid))
    assert detect(ctx, "auto", "default", "/nonexistent.sock").main_pid() == child.pid
    assert detect(ctx, "auto", "rootless", "/nonexistent.sock").main_pid() is None


@pytest.mark.parametrize("env, pidfile", [
    ({"XDG_RUNTIME_DIR": "/run/user/1000"}, "/run/user/1000/docker.pid"),
    ({}, "/run/user/0/docker.pid"),
])
def test_detect_rootless_reads_the_user_pidfile(tmp_path, fake, hup_child, env, pidfile):
    child, _ = hup_child
    ctx = _detect_ctx(tmp_path, fake, False, False, **env)
    fake_proc(Path(ctx.root), child.pid, "dockerd")
    put(Path(ctx.root), pidfile, str(child.pid))
    assert detect(ctx, "signal", "rootless", "/nonexistent.sock").main_pid() == child.pid
    assert detect(ctx, "signal", "default", "/nonexistent.sock").main_pid() is None


def test_detect_snap_finds_dockerd_by_its_socket(tmp_path, fake, listener):
    ctx = _detect_ctx(tmp_path, fake, False, False)
    fake_proc(Path(ctx.root), os.getpid(), "dockerd")
    service = detect(ctx, "auto", "snap", listener)
    assert isinstance(service, SnapService)
    assert service.main_pid() == os.getpid() and service.is_active()


# -- a real private dockerd behind a fake systemctl -------------------------------------------------

ADMIN = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"]\n}\n'
MUTATING = ("reload", "restart", "reset-failed")


def sandbox_cli(action: str, workdir: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.support.sandbox", action, workdir], cwd=REPO,
        env=dict(os.environ, PATH=ORIGINAL_PATH), check=True, timeout=120,
    )


def read_pid(workdir: str) -> Optional[int]:
    try:
        with open(os.path.join(workdir, "docker.pid")) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


@pytest.fixture
def detached_dockerd() -> Iterator[str]:
    """A private dockerd started by the detached sandbox CLI in a short /tmp dir (sockets live there)."""
    dockerd_or_skip()
    workdir = tempfile.mkdtemp(prefix="nvs.", dir="/tmp")
    try:
        DockerdSandbox(workdir, daemon_json=ADMIN)  # writes daemon.json; the CLI runs dockerd
        sandbox_cli("start", workdir)
        yield workdir
    finally:
        sandbox_cli("stop", workdir)
        data = os.path.join(workdir, "data")
        if os.path.ismount(data):  # dockerd bind-mounts its data root onto itself
            subprocess.run(["umount", data], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


class SystemdHost:
    """A fake root with /run/systemd/system and a fakebin whose systemctl drives the sandbox."""

    def __init__(self, tmp_path: Path, workdir: str) -> None:
        self.workdir = workdir
        self.socket = os.path.join(workdir, "docker.sock")
        self.root = tmp_path / "root"
        (self.root / "run" / "systemd" / "system").mkdir(parents=True)
        self.bin = tmp_path / "fakebin"
        self.calls_file = tmp_path / "systemctl.calls"
        self.fail_marker = tmp_path / "fail-next-restart"
        q = shlex.quote
        pidfile = q(os.path.join(workdir, "docker.pid"))
        write_script(self.bin, "systemctl", """
printf '%s\\n' "$*" >> {calls}
pid=0
if [ -e {pidfile} ]; then read pid < {pidfile}; fi
case "$*" in
    "restart docker.service")
        if [ -e {fail} ]; then
            rm -f {fail}
            cd {repo} && {python} -m tests.support.sandbox stop {workdir}
            echo "{job}" >&2
            exit 1
        fi
        cd {repo} && exec {python} -m tests.support.sandbox restart {workdir} ;;
    "reload docker.service")
        kill -HUP "$pid" ;;
    "reset-failed docker.service")
        exit 0 ;;
    "is-active --quiet docker.service")
        kill -0 "$pid" 2>/dev/null && exit 0; exit 3 ;;
    "is-active --quiet docker.socket")
        exit 3 ;;
    "show -p MainPID --value docker.service")
        if kill -0 "$pid" 2>/dev/null; then echo "$pid"; else echo 0; fi ;;
    *)
        echo "fake systemctl: unexpected $*" >&2; exit 64 ;;
esac
""".format(calls=q(str(self.calls_file)), pidfile=pidfile, fail=q(str(self.fail_marker)), repo=q(REPO),
           python=q(sys.executable), workdir=q(workdir), job=JOB_FAILED))
        self.journal_calls = tmp_path / "journalctl.calls"
        write_script(self.bin, "journalctl", """
printf '%s\\n' "$*" >> {calls}
echo 'level=error msg="docker.service: Start request repeated too quickly (fake)"'
""".format(calls=q(str(self.journal_calls))))

    def ctx(self, tmp_path: Path) -> Context:
        env: Dict[str, str] = {
            "PATH": str(self.bin) + os.pathsep + ORIGINAL_PATH,
            "DOCKER_HOST": "unix://" + self.socket,
        }
        return Context(root=str(self.root), env=env, docker_socket=self.socket, state_dir=str(tmp_path / "state"))

    def calls(self) -> List[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []

    def mutating_calls(self) -> List[str]:
        return [call for call in self.calls() if call.split()[0] in MUTATING]

    def config(self) -> bytes:
        with open(os.path.join(self.workdir, "daemon.json"), "rb") as handle:
            return handle.read()


def _install(ctx: Context, host: SystemdHost, runtime: str, **request):
    return operations.install(
        ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime, **request),
        config=os.path.join(host.workdir, "daemon.json"),
        apply_options=ApplyOptions(service_manager="systemd", timeout=60),
    )


@pytest.mark.dockerd
def test_systemd_restart_failure_resets_the_start_limit_then_rolls_back(tmp_path, detached_dockerd, runtime_binary):
    dockerd_or_skip()
    host = SystemdHost(tmp_path, detached_dockerd)
    ctx = host.ctx(tmp_path)
    pid_before = read_pid(detached_dockerd)
    host.fail_marker.write_text("")
    with pytest.raises(ApplyFailed) as caught:
        _install(ctx, host, runtime_binary, enable_cdi=True)
    error = caught.value
    assert host.mutating_calls() == ["restart docker.service", "reset-failed docker.service", "restart docker.service"]
    assert "show -p MainPID --value docker.service" in host.calls()  # decide asked for dockerd's pid
    assert "cause: systemctl restart docker.service failed (exit 1): " + JOB_FAILED in error.details
    assert any(line.startswith("dockerd: level=error") for line in error.details)  # the fake journalctl
    assert error.hint == "see `journalctl -u docker.service --since -5min` for dockerd's own messages"
    assert not host.fail_marker.exists()
    assert host.config() == ADMIN
    api = DockerAPI(host.socket)
    assert api.ping()
    info = api.info()
    assert "nvidia" not in info["Runtimes"] and info["DefaultRuntime"] == "runc"
    assert read_pid(detached_dockerd) not in (None, pid_before)
    assert operations.show(ctx, config=os.path.join(host.workdir, "daemon.json")).installed_by_us is False


@pytest.mark.dockerd
def test_systemd_restart_applies_a_startup_change(tmp_path, detached_dockerd, runtime_binary):
    dockerd_or_skip()
    host = SystemdHost(tmp_path, detached_dockerd)
    ctx = host.ctx(tmp_path)
    pid_before = read_pid(detached_dockerd)
    result = _install(ctx, host, runtime_binary, enable_cdi=True)
    report = result.apply
    assert (report.method, report.verified, report.service) == ("restart", True, "systemctl docker.service")
    assert "features.cdi" in report.reason
    assert host.mutating_calls() == ["restart docker.service"]
    assert not host.journal_calls.exists()  # logs are read only on failure
    info = DockerAPI(host.socket).info()
    assert info["Runtimes"]["nvidia"]["path"] == runtime_binary
    assert read_pid(detached_dockerd) not in (None, pid_before)
    assert b'"cdi": true' in host.config()


@pytest.mark.dockerd
def test_systemd_reload_applies_a_runtime_without_restarting(tmp_path, detached_dockerd, runtime_binary):
    dockerd_or_skip()
    host = SystemdHost(tmp_path, detached_dockerd)
    ctx = host.ctx(tmp_path)
    pid_before = read_pid(detached_dockerd)
    result = _install(ctx, host, runtime_binary, set_default=True)
    assert (result.apply.method, result.apply.verified) == ("reload", True)
    assert host.mutating_calls() == ["reload docker.service"]
    info = DockerAPI(host.socket).info()
    assert info["Runtimes"]["nvidia"]["path"] == runtime_binary and info["DefaultRuntime"] == "nvidia"
    assert read_pid(detached_dockerd) == pid_before


def test_logs_where_is_a_command_only_where_there_is_one(tmp_path):
    """A failure hint names a command in backticks (journalctl, snap logs), never a phrase in backticks."""
    from nvdocker_setup.adapters.service import CommandService, SignalService, SystemdService

    ctx = Context(env={"PATH": ""}, root=str(tmp_path), state_dir=str(tmp_path / "state"))
    assert SystemdService(ctx, unit="containerd.service").logs_where() == \
        "`journalctl -u containerd.service --since -5min`"
    for manager in (CommandService(ctx, lambda: None, "rc-service docker restart"), SignalService(ctx, lambda: None)):
        assert "`" not in manager.logs_where() and "log" in manager.logs_where()
