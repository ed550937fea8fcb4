"""Which daemon.json dockerd reads, against a fake host built under tmp_path."""

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

from nvdocker_setup.adapters.locate import (
    DEFAULT_CONFIG,
    SNAP_CONFIG,
    ConfigLocation,
    DockerdProcess,
    config_file_from_argv,
    dockerd_processes,
    locate_config,
    parse_execstart,
)
from nvdocker_setup.context import Context
from nvdocker_setup.errors import UsageError
from tests.support.fakeproc import HOST_MNT, HOST_PID, namespace_links

SYSTEMD_EXECSTART = (
    "{{ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -H fd:// {args} ; ignore_errors=no ; "
    "start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }}"
)


class FakeHost:
    """A temp root with a fake /proc, a fake PATH and an env, turned into a Context."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "fakebin"
        self.bin.mkdir()
        (root / "proc").mkdir()
        self.env: Dict[str, str] = {"PATH": str(self.bin), "HOME": "/root"}

    def ctx(self, euid: int = 0, **overrides) -> Context:
        return Context(env=dict(self.env), root=str(self.root), euid=euid, **overrides)

    def script(self, name: str, body: str) -> Path:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return path

    def systemctl(self, stdout: str, status: int = 0) -> None:
        """A systemctl that answers only the exact query locate should make."""
        (self.root / "systemctl.out").write_text(stdout)
        self.script(
            "systemctl",
            '[ "$*" = "show docker.service -p ExecStart --value" ] || exit 99\n'
            '{} "{}"\nexit {}'.format(shutil.which("cat"), self.root / "systemctl.out", status),
        )

    def process(
        self,
        pid: int,
        argv: Sequence[str],
        comm: str = "dockerd",
        uid: int = 0,
        ppid: int = 1,
        cwd: Optional[str] = None,
        environ: Sequence[str] = (),
        mnt: str = HOST_MNT,
        pid_ns: str = HOST_PID,
        root: str = "/",
        nspid: Sequence[int] = (),
    ) -> None:
        """A process; by default in the host's namespaces (those of the fake PID 1) with root ``/``."""
        entry = self.root / "proc" / str(pid)
        entry.mkdir(exist_ok=True)
        namespace_links(self.root / "proc", pid, mnt=mnt, pid_ns=pid_ns, root=root)
        (entry / "comm").write_text(comm + "\n")
        (entry / "cmdline").write_bytes(b"".join(arg.encode() + b"\0" for arg in argv))
        (entry / "status").write_text(
            "Name:\t{}\nPid:\t{}\nPPid:\t{}\n".format(comm, pid, ppid)
            + "Uid:\t{u}\t{u}\t{u}\t{u}\n".format(u=uid)
            + "NSpid:\t{}\n".format("\t".join(str(n) for n in (pid, *nspid)))
        )
        (entry / "environ").write_bytes(b"".join(item.encode() + b"\0" for item in environ))
        if cwd is not None:
            os.symlink(cwd, str(entry / "cwd"))

    def mkdir(self, host_path: str) -> Path:
        path = self.root / host_path.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def touch(self, host_path: str) -> Path:
        path = self.root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        return path


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def _rootless_ready(host: FakeHost, uid: int = 1000) -> None:
    host.env.update(HOME="/home/u", XDG_RUNTIME_DIR="/run/user/{}".format(uid))
    host.touch("/run/user/{}/docker.sock".format(uid))


# --- parsing helpers ------------------------------------------------------------------------


def test_parse_execstart_space_and_equals_forms() -> None:
    text = SYSTEMD_EXECSTART.format(args="--config-file /a.json --config-file=/b.json")
    (argv,) = parse_execstart(text)
    assert argv == ("/usr/bin/dockerd", "-H", "fd://", "--config-file", "/a.json",
                    "--config-file=/b.json")
    assert config_file_from_argv(argv) == "/b.json"  # pflag: the last one wins


def test_parse_execstart_several_entries_and_empty() -> None:
    text = "{ path=/bin/true ; argv[]=/bin/true ; }\n" + SYSTEMD_EXECSTART.format(args="")
    assert parse_execstart(text) == [("/bin/true",), ("/usr/bin/dockerd", "-H", "fd://")]
    assert parse_execstart("") == []


def test_config_file_from_argv_edge_cases() -> None:
    assert config_file_from_argv(["dockerd"]) is None
    assert config_file_from_argv(["dockerd", "--config-file"]) is None
    assert config_file_from_argv(["dockerd", "--config-file="]) is None
    assert config_file_from_argv(["--config-file=/argv0-is-skipped"]) is None
    assert config_file_from_argv(["dockerd", "--", "--config-file=/x"]) is None


# --- option and env -------------------------------------------------------------------------


def test_explicit_option_wins_over_everything(host: FakeHost) -> None:
    host.env["NVDOCKER_DOCKER_CONFIG"] = "/env/daemon.json"
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file /unit.json"))
    host.process(100, ["/usr/bin/dockerd", "--config-file=/proc.json"])
    host.mkdir("/var/snap/docker/current/config")
    found = locate_config(host.ctx(), explicit="/opt/mine.json")
    assert found == ConfigLocation("/opt/mine.json", "option", "given with --config")


def test_explicit_relative_is_made_absolute(host: FakeHost) -> None:
    found = locate_config(host.ctx(), explicit="rel/daemon.json")
    assert found.path == os.path.join(os.getcwd(), "rel/daemon.json")
    assert found.rule == "option"


def test_explicit_empty_is_a_usage_error(host: FakeHost) -> None:
    with pytest.raises(UsageError):
        locate_config(host.ctx(), explicit="  ")


def test_env_beats_systemd(host: FakeHost) -> None:
    host.env["NVDOCKER_DOCKER_CONFIG"] = "/env/daemon.json"
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file /unit.json"))
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == ("/env/daemon.json", "env")
    assert "NVDOCKER_DOCKER_CONFIG" in found.reason


def test_empty_env_is_ignored(host: FakeHost) -> None:
    host.env["NVDOCKER_DOCKER_CONFIG"] = ""
    assert locate_config(host.ctx()).rule == "default"


# --- systemd --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", ["--config-file /srv/docker/daemon.json", "--config-file=/srv/docker/daemon.json"]
)
def test_systemd_execstart_forms(host: FakeHost, args: str) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args=args))
    found = locate_config(host.ctx())
    assert found == ConfigLocation(
        "/srv/docker/daemon.json",
        "systemd-execstart",
        "--config-file in docker.service's ExecStart",
    )


def test_systemd_beats_running_dockerd(host: FakeHost) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file=/unit.json"))
    host.process(100, ["/usr/bin/dockerd", "--config-file=/proc.json"])
    assert locate_config(host.ctx()).path == "/unit.json"


def test_systemd_relative_config_file_resolves_against_slash(host: FakeHost) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file etc/d.json"))
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == ("/etc/d.json", "systemd-execstart")
    assert "relative" in found.reason


def test_systemd_without_config_file_falls_through(host: FakeHost) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args="--containerd=/run/containerd/containerd.sock"))
    host.process(100, ["/usr/bin/dockerd", "--config-file=/proc.json"])
    assert locate_config(host.ctx()).rule == "running-dockerd"


@pytest.mark.parametrize("status", [1, 4])
def test_systemctl_failing_falls_through(host: FakeHost, status: int) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file /unit.json"), status=status)
    host.process(100, ["/usr/bin/dockerd", "--config-file=/proc.json"])
    assert locate_config(host.ctx()).path == "/proc.json"


def test_systemctl_missing_falls_through(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "--config-file=/proc.json"])
    assert host.ctx().which("systemctl") is None
    assert locate_config(host.ctx()).rule == "running-dockerd"


def test_systemctl_timeout_or_oserror_falls_through(host: FakeHost) -> None:
    host.systemctl(SYSTEMD_EXECSTART.format(args="--config-file /unit.json"))

    def hangs(argv, timeout=None, env=None):
        raise subprocess.TimeoutExpired(argv, timeout)

    def broken(argv, timeout=None, env=None):
        raise PermissionError(13, "Permission denied")

    assert locate_config(host.ctx(run=hangs)).rule == "default"
    assert locate_config(host.ctx(run=broken)).rule == "default"


def test_real_timeout_of_a_hanging_systemctl(host: FakeHost, monkeypatch) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    host.script("systemctl", "exec {} 30".format(sleep))
    monkeypatch.setattr("nvdocker_setup.adapters.locate.SYSTEMCTL_TIMEOUT", 0.3)
    assert locate_config(host.ctx()).rule == "default"


def test_systemctl_unit_absent_prints_nothing(host: FakeHost) -> None:
    host.systemctl("")  # `systemctl show` on an unknown unit: empty value, exit 0
    assert locate_config(host.ctx()).rule == "default"


# --- /proc ----------------------------------------------------------------------------------


def test_dockerd_processes_filters_on_comm(host: FakeHost) -> None:
    host.process(10, ["/usr/bin/containerd"], comm="containerd")
    host.process(11, ["/usr/bin/dockerd", "-H", "fd://"], cwd="/")
    host.process(12, ["/usr/bin/vim", "dockerd"], comm="vim")
    host.process(13, ["/usr/bin/dockerd", "--rootless"], uid=1000, ppid=11)
    (host.root / "proc" / "self").mkdir()  # non-numeric entries are ignored
    (host.root / "proc" / "cpuinfo").write_text("")
    procs = dockerd_processes(host.ctx())
    assert procs == [
        DockerdProcess(11, ("/usr/bin/dockerd", "-H", "fd://"), 0, ppid=1, cwd="/"),
        DockerdProcess(13, ("/usr/bin/dockerd", "--rootless"), 1000, ppid=11, rootless=True),
    ]
    assert procs[0].config_file is None


def test_dockerd_processes_without_proc(tmp_path: Path) -> None:
    assert dockerd_processes(Context(env={"PATH": ""}, root=str(tmp_path), euid=0)) == []


def test_dockerd_process_skipped_when_cmdline_empty(host: FakeHost) -> None:
    host.process(20, [], comm="dockerd")
    assert dockerd_processes(host.ctx()) == []


def test_uid_falls_back_to_owner_of_proc_entry(host: FakeHost) -> None:
    host.process(21, ["/usr/bin/dockerd"])
    (host.root / "proc" / "21" / "status").unlink()
    (proc,) = dockerd_processes(host.ctx())
    assert proc.uid == os.stat(str(host.root / "proc" / "21")).st_uid


def test_running_dockerd_absolute(host: FakeHost) -> None:
    host.process(10, ["/usr/bin/containerd", "--config-file=/not-this.json"], comm="containerd")
    host.process(100, ["/usr/bin/dockerd", "--config-file", "/srv/daemon.json"])
    found = locate_config(host.ctx())
    assert found == ConfigLocation(
        "/srv/daemon.json", "running-dockerd", "--config-file of the running dockerd (pid 100)"
    )


def test_running_dockerd_relative_resolved_against_cwd(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "--config-file=conf/../daemon.json"], cwd="/srv/docker")
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == ("/srv/docker/daemon.json", "running-dockerd")
    assert "/srv/docker" in found.reason


def test_running_dockerd_relative_without_cwd_left_as_given(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "--config-file", "conf/daemon.json"])
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == ("conf/daemon.json", "running-dockerd")
    assert "left as given" in found.reason


def test_deleted_cwd_counts_as_unreadable(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "--config-file", "d.json"], cwd="/gone (deleted)")
    assert locate_config(host.ctx()).path == "d.json"


def test_running_dockerd_beats_rootless(host: FakeHost) -> None:
    _rootless_ready(host)
    host.process(100, ["/usr/bin/dockerd", "--config-file=/srv/daemon.json"])
    assert locate_config(host.ctx(euid=1000)).rule == "running-dockerd"


def test_rootless_process_is_not_the_system_dockerd(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "--rootless", "--config-file=/home/u/x.json"], uid=1000)
    found = locate_config(host.ctx(euid=0))
    assert found.rule == "default"


def test_running_dockerd_without_config_file_beats_snap_leftovers(host: FakeHost) -> None:
    host.mkdir("/var/snap/docker/current/config")
    host.process(100, ["/usr/bin/dockerd", "-H", "fd://"])
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == (DEFAULT_CONFIG, "default")
    assert "pid 100" in found.reason


def test_running_snap_dockerd_found_via_proc(host: FakeHost) -> None:
    host.process(
        100,
        ["dockerd", "--group", "docker", "--config-file=" + SNAP_CONFIG],
    )
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == (SNAP_CONFIG, "running-dockerd")


# --- rootless -------------------------------------------------------------------------------


def test_rootless_with_xdg_vars(host: FakeHost) -> None:
    _rootless_ready(host)
    host.env["XDG_CONFIG_HOME"] = "/home/u/.cfg"
    found = locate_config(host.ctx(euid=1000))
    assert (found.path, found.rule) == ("/home/u/.cfg/docker/daemon.json", "rootless")
    assert "/run/user/1000/docker.sock exists" in found.reason


def test_rootless_home_fallback(host: FakeHost) -> None:
    _rootless_ready(host)
    found = locate_config(host.ctx(euid=1000))
    assert (found.path, found.rule) == ("/home/u/.config/docker/daemon.json", "rootless")


def test_rootless_ignores_relative_xdg_config_home(host: FakeHost) -> None:
    _rootless_ready(host)
    host.env["XDG_CONFIG_HOME"] = "relative/cfg"
    assert locate_config(host.ctx(euid=1000)).path == "/home/u/.config/docker/daemon.json"


def test_rootless_home_from_passwd_when_unset(host: FakeHost) -> None:
    _rootless_ready(host)
    del host.env["HOME"]
    passwd = "root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/srv/u:/bin/sh\n"
    host.touch("/etc/passwd").write_text(passwd)
    assert locate_config(host.ctx(euid=1000)).path == "/srv/u/.config/docker/daemon.json"


def test_rootless_runtime_dir_defaults_to_run_user(host: FakeHost) -> None:
    host.env["HOME"] = "/home/u"
    host.touch("/run/user/1000/docker.sock")
    assert locate_config(host.ctx(euid=1000)).rule == "rootless"


def test_rootless_detected_from_process_flag(host: FakeHost) -> None:
    host.env.update(HOME="/home/u", XDG_RUNTIME_DIR="/run/user/1000")
    host.process(200, ["dockerd", "--rootless"], uid=1000)
    found = locate_config(host.ctx(euid=1000))
    assert (found.path, found.rule) == ("/home/u/.config/docker/daemon.json", "rootless")
    assert "pid 200" in found.reason


def test_rootless_detected_from_rootlesskit_parent(host: FakeHost) -> None:
    host.env["HOME"] = "/home/u"
    host.process(300, ["rootlesskit", "--net=slirp4netns", "dockerd-rootless.sh"],
                 comm="rootlesskit", uid=1000)
    host.process(301, ["/proc/self/exe", "--net=slirp4netns"], comm="exe", uid=1000, ppid=300)
    host.process(302, ["dockerd"], uid=1000, ppid=301)
    assert locate_config(host.ctx(euid=1000)).rule == "rootless"


def test_rootless_detected_from_environ(host: FakeHost) -> None:
    host.env["HOME"] = "/home/u"
    host.process(400, ["dockerd"], uid=1000, environ=["ROOTLESSKIT_STATE_DIR=/run/user/1000/x"])
    assert locate_config(host.ctx(euid=1000)).rule == "rootless"


def test_rootless_process_of_another_user_is_ignored(host: FakeHost) -> None:
    host.env["HOME"] = "/home/u"
    host.process(200, ["dockerd", "--rootless"], uid=2000)
    assert locate_config(host.ctx(euid=1000)).rule == "default"


def test_rootless_config_file_of_own_process(host: FakeHost) -> None:
    host.env["HOME"] = "/home/u"
    host.process(200, ["dockerd", "--rootless", "--config-file", "d.json"], uid=1000, cwd="/home/u")
    found = locate_config(host.ctx(euid=1000))
    assert (found.path, found.rule) == ("/home/u/d.json", "rootless")


def test_rootless_not_considered_for_root(host: FakeHost) -> None:
    _rootless_ready(host, uid=0)
    host.touch("/run/user/1000/docker.sock")
    assert locate_config(host.ctx(euid=0)).rule == "default"


def test_non_root_without_rootless_daemon_falls_through(host: FakeHost) -> None:
    host.env.update(HOME="/home/u", XDG_RUNTIME_DIR="/run/user/1000")
    assert locate_config(host.ctx(euid=1000)).rule == "default"


def test_rootless_beats_snap(host: FakeHost) -> None:
    _rootless_ready(host)
    host.mkdir("/var/snap/docker/current/config")
    assert locate_config(host.ctx(euid=1000)).rule == "rootless"


# --- snap and default -----------------------------------------------------------------------


def test_snap(host: FakeHost) -> None:
    host.mkdir("/var/snap/docker/current/config")
    found = locate_config(host.ctx())
    assert (found.path, found.rule) == (SNAP_CONFIG, "snap")


def test_snap_needs_the_config_dir(host: FakeHost) -> None:
    host.mkdir("/var/snap/docker/common")
    assert locate_config(host.ctx()).rule == "default"


def test_snap_beats_default_for_non_root_too(host: FakeHost) -> None:
    host.mkdir("/var/snap/docker/current/config")
    assert locate_config(host.ctx(euid=1000)).rule == "snap"


def test_default(host: FakeHost) -> None:
    found = locate_config(host.ctx())
    reason = "dockerd's default for a rootful daemon"
    assert found == ConfigLocation(DEFAULT_CONFIG, "default", reason)


def test_fake_systemctl_rejects_unexpected_arguments(host: FakeHost) -> None:
    """Guards the fake itself: a different query would exit 99 and silently fall through."""
    host.systemctl("x")
    ctx = host.ctx()
    systemctl = ctx.which("systemctl")
    assert systemctl is not None
    assert stat.S_IMODE(os.stat(systemctl).st_mode) == 0o755
    assert ctx.run([systemctl, "show", "docker"], timeout=5).returncode == 99


# -- several dockerds: the file must be the one of the daemon we verify through (issue #14) ---------


def test_several_system_dockerds_are_refused_and_named(host: FakeHost) -> None:
    host.process(100, ["/usr/bin/dockerd", "-H", "fd://", "--config-file", "/etc/docker/daemon.json"])
    host.process(200, ["/usr/bin/dockerd", "--host=unix:///run/ci.sock", "--config-file=/srv/ci.json"])
    with pytest.raises(UsageError) as caught:
        locate_config(host.ctx())
    error = caught.value
    assert error.reference == "several-dockerds"
    assert any("pid 100" in line and "/etc/docker/daemon.json" in line for line in error.details)
    assert any("pid 200" in line and "/srv/ci.json" in line and "unix:///run/ci.sock" in line for line in error.details)
    assert "DOCKER_HOST" in error.hint and "--config" in error.hint
    # --config or the env variable still decide alone
    assert locate_config(host.ctx(), "/srv/ci.json").rule == "option"


def test_docker_host_pairs_the_file_with_the_daemon_answering_there(host: FakeHost, tmp_path: Path) -> None:
    import socket

    # The daemon "answering" on the socket is this test process (SO_PEERCRED gives our pid),
    # listed in the fake /proc as a dockerd with its own --config-file.
    path = str(tmp_path / "d.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    try:
        host.process(100, ["/usr/bin/dockerd", "--config-file", "/etc/docker/daemon.json"])
        host.process(os.getpid(), ["/usr/bin/dockerd", "-H", "unix://" + path, "--config-file", "/srv/second.json"])
        host.env["DOCKER_HOST"] = "unix://" + path
        found = locate_config(host.ctx())
        assert (found.path, found.rule) == ("/srv/second.json", "docker-host")
        assert str(os.getpid()) in found.reason and path in found.reason
        # the same through the context's socket, and a daemon without --config-file reads the default
        del host.env["DOCKER_HOST"]
        (host.root / "proc" / str(os.getpid()) / "cmdline").write_bytes(b"/usr/bin/dockerd\0-H\0unix://" + path.encode() + b"\0")
        found = locate_config(host.ctx(docker_socket=path))
        assert (found.path, found.rule) == (DEFAULT_CONFIG, "docker-host")
    finally:
        listener.close()


def test_docker_host_of_no_known_dockerd_falls_through(host: FakeHost, tmp_path: Path) -> None:
    host.process(100, ["/usr/bin/dockerd", "--config-file", "/srv/daemon.json"])
    host.env["DOCKER_HOST"] = "unix://" + str(tmp_path / "nobody.sock")
    assert locate_config(host.ctx()).rule == "running-dockerd"
