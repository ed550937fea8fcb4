"""Which config.toml containerd reads (issue #10 item 3), and --engine auto, on a fake host."""

import shutil

import pytest

from nvdocker_setup import engines
from nvdocker_setup.adapters.locate import daemon_processes
from nvdocker_setup.engines.containerd.binary import parse_version
from nvdocker_setup.engines.containerd.locate import (
    DEFAULT_CONFIG,
    config_from_argv,
    locate_config,
    system_containerds,
)
from nvdocker_setup.errors import Conflict, UsageError
from tests.adapters.test_locate import FakeHost

EXECSTART = (
    "{{ path=/usr/bin/containerd ; argv[]=/usr/bin/containerd {args} ; ignore_errors=no ; start_time=[n/a] ; "
    "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }}"
)


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path)


def systemd(host, args: str) -> None:
    (host.root / "run" / "systemd" / "system").mkdir(parents=True)
    (host.root / "systemctl.out").write_text(EXECSTART.format(args=args))
    host.script(
        "systemctl",
        '[ "$*" = "show containerd.service -p ExecStart --value" ] || exit 99\n'
        '{} "{}"'.format(shutil.which("cat"), host.root / "systemctl.out"),
    )


@pytest.mark.parametrize("argv, expected", [
    (["containerd"], None),
    (["containerd", "--config", "/a.toml"], "/a.toml"),
    (["containerd", "--config=/a.toml"], "/a.toml"),
    (["containerd", "-c", "/a.toml"], "/a.toml"),
    (["containerd", "-c=/a.toml"], "/a.toml"),
    (["containerd", "-c", "/a.toml", "--config", "/b.toml"], "/b.toml"),  # the last one wins
    (["containerd", "--log-level", "debug", "--", "-c", "/x"], None),
    (["containerd", "--config"], None),
])
def test_config_flag_spellings(argv, expected):
    assert config_from_argv(argv) == expected


def test_option_beats_env_beats_the_running_daemon(host, tmp_path):
    host.process(300, ["/usr/bin/containerd", "--config", "/srv/ctd.toml"], comm="containerd")
    host.env["NVDOCKER_CONTAINERD_CONFIG"] = "/env/config.toml"
    assert locate_config(host.ctx(), str(tmp_path / "given.toml")).rule == "option"
    assert locate_config(host.ctx(), None).path == "/env/config.toml"
    del host.env["NVDOCKER_CONTAINERD_CONFIG"]
    found = locate_config(host.ctx(), None)
    assert (found.path, found.rule) == ("/srv/ctd.toml", "running-containerd")
    assert "pid 300" in found.reason


def test_unit_execstart_comes_before_the_running_process(host):
    systemd(host, "--config /etc/containerd/custom.toml")
    host.process(300, ["/usr/bin/containerd", "--config", "/srv/ctd.toml"], comm="containerd")
    found = locate_config(host.ctx(), None)
    assert (found.path, found.rule) == ("/etc/containerd/custom.toml", "systemd-execstart")


def test_default_when_nothing_says_otherwise(host):
    systemd(host, "")
    found = locate_config(host.ctx(), None)
    assert (found.path, found.rule) == (DEFAULT_CONFIG, "default")


def test_dockers_own_containerd_and_non_root_ones_are_not_the_engine(host):
    host.process(100, ["/usr/bin/dockerd"], comm="dockerd")
    host.process(101, ["containerd", "--config", "/var/run/docker/containerd/containerd.toml"], comm="containerd",
                 ppid=100)
    host.process(102, ["containerd", "-c", "/home/u/ctd.toml"], comm="containerd", uid=1000)
    assert system_containerds(host.ctx()) == []
    assert locate_config(host.ctx(), None).rule == "default"


def test_a_set_uid_program_a_user_started_as_containerd_is_not_roots(host):
    """A user execs a set-uid root program (su, passwd) through a symlink named containerd, with
    --config of their own and a full stderr pipe: comm containerd, effective uid 0, real uid theirs.
    It must neither choose the file nor the binary root runs."""
    host.process(300, ["containerd", "--config", "/tmp/u/config.toml"], comm="containerd")
    status = host.root / "proc" / "300" / "status"
    status.write_text(status.read_text().replace("Uid:\t0\t0\t0\t0", "Uid:\t65534\t0\t0\t0"))
    host.process(301, ["/usr/bin/dockerd", "--config-file", "/tmp/u/daemon.json"], comm="dockerd")
    status = host.root / "proc" / "301" / "status"
    status.write_text(status.read_text().replace("Uid:\t0\t0\t0\t0", "Uid:\t65534\t0\t0\t0"))
    assert system_containerds(host.ctx()) == []
    assert engines.get("containerd").running(host.ctx()) == []
    assert locate_config(host.ctx(), None).rule == "default"
    assert [proc.uid for proc in daemon_processes(host.ctx(), "dockerd")] == [65534]


@pytest.mark.parametrize("path", [
    "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
    "/var/run/docker/containerd/containerd.toml",
])
def test_regenerated_configs_are_refused(host, path):
    with pytest.raises(Conflict) as caught:
        locate_config(host.ctx(), path)
    assert caught.value.reference == "containerd-config-regenerated"
    assert caught.value.hint


def test_empty_option_is_a_usage_error(host):
    with pytest.raises(UsageError):
        locate_config(host.ctx(), " ")


@pytest.mark.parametrize("text, version", [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", (1, 6, 20)),
    ("containerd github.com/containerd/containerd/v2 2.1.9+unknown ", (2, 1, 9)),
    ("containerd containerd.io v1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da", (1, 7, 27)),
    ("garbage", None),
    ("", None),
])
def test_containerd_version_lines(text, version):
    assert parse_version(text) == version


def test_engine_auto_picks_the_one_that_runs_and_refuses_several_or_none(host):
    with pytest.raises(UsageError) as none:
        engines.resolve(host.ctx(), "auto")
    assert none.value.reference == "engine-not-found"
    host.process(100, ["/usr/bin/dockerd"], comm="dockerd")
    host.process(101, ["containerd", "--config", "/var/run/docker/containerd/containerd.toml"], comm="containerd",
                 ppid=100)
    assert engines.resolve(host.ctx(), "auto").name == "docker"  # dockerd's own containerd does not count
    host.process(200, ["/usr/bin/containerd"], comm="containerd")
    with pytest.raises(UsageError) as several:
        engines.resolve(host.ctx(), "auto")
    assert several.value.reference == "engine-ambiguous"
    assert "dockerd pid 100" in several.value.message and "containerd pid 200" in several.value.message
    assert engines.resolve(host.ctx(), "containerd").name == "containerd"


def test_nvidia_ctk_runtime_configure_containerd_is_install_engine_containerd(tmp_path):
    """`runtime configure --runtime=containerd` (nvidia-ctk's spelling) goes through install's engine."""
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = tmp_path / "config.toml"
    config.write_bytes(b'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                       b'  default_runtime_name = "runc"\n')
    env = dict(os.environ, PYTHONPATH=repo, NVDOCKER_STATE_DIR=str(tmp_path / "state"), PATH="/usr/bin:/bin")
    done = subprocess.run(
        [sys.executable, "-m", "nvdocker_setup", "runtime", "configure", "--runtime=containerd", "--config", str(config),
         "--nvidia-runtime-path", "/usr/bin/nvdocker-runtime", "--dry-run", "--json"],
        env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["engine"] == "containerd" and data["would_change"] is True and data["changed"] is False
    assert 'BinaryName = "/usr/bin/nvdocker-runtime"' in data["diff"]


def test_processes_outside_the_hosts_namespaces_are_not_daemons_here(host):
    """Issue #19: a root process in a container (own mount or pid namespace), in a chroot, or in a
    nested pid namespace, named containerd or dockerd, never chooses a file, a binary or an engine."""
    from tests.support.fakeproc import CONTAINER_MNT, CONTAINER_PID

    host.process(300, ["containerd", "--config", "/srv/a.toml"], comm="containerd", mnt=CONTAINER_MNT)
    host.process(301, ["containerd", "--config", "/srv/b.toml"], comm="containerd", pid_ns=CONTAINER_PID)
    host.process(302, ["containerd", "--config", "/srv/c.toml"], comm="containerd", root="/var/lib/jail")
    host.process(303, ["containerd", "--config", "/srv/d.toml"], comm="containerd", nspid=(1,))
    host.process(400, ["dockerd", "--config-file", "/srv/a.json"], comm="dockerd", mnt=CONTAINER_MNT)
    host.process(401, ["dockerd", "--config-file", "/srv/b.json"], comm="dockerd", nspid=(7,))
    assert system_containerds(host.ctx()) == []
    assert daemon_processes(host.ctx(), "dockerd") == []
    assert locate_config(host.ctx(), None).rule == "default"
    with pytest.raises(UsageError) as none:
        engines.resolve(host.ctx(), "auto")
    assert none.value.reference == "engine-not-found"
    host.process(500, ["/usr/bin/containerd", "--config", "/srv/host.toml"], comm="containerd")
    assert [proc.pid for proc in system_containerds(host.ctx())] == [500]
    assert locate_config(host.ctx(), None).path == "/srv/host.toml"


def test_a_process_whose_namespaces_are_not_pid_1s_is_not_the_hosts(host):
    """The reference is PID 1's namespaces: links that differ from them make a process not the host's."""
    host.process(300, ["containerd", "--config", "/srv/a.toml"], comm="containerd")
    for link in ("ns/mnt", "ns/pid", "root"):
        (host.root / "proc" / "1" / link).unlink()
        (host.root / "proc" / "1" / link).symlink_to("/nonexistent-loop-" + link)
    # PID 1's links now name nothing the process has: not the host's
    assert system_containerds(host.ctx()) == []


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="chown needs root")
def test_a_config_path_another_user_controls_is_refused(host):
    import os

    from nvdocker_setup.adapters.locate import locate_config as docker_locate
    from nvdocker_setup.errors import TrustCheckFailed

    planted = host.mkdir("/srv/u")
    os.chown(str(planted), 65534, 65534)
    host.process(300, ["/usr/bin/containerd", "--config", "/srv/u/config.toml"], comm="containerd")
    with pytest.raises(TrustCheckFailed) as caught:
        locate_config(host.ctx(), None)
    assert caught.value.reference == "config-path-untrusted" and caught.value.hint
    assert any("/srv/u" in line and "65534" in line for line in caught.value.details)
    assert not (planted / "config.toml").exists()

    open_dir = host.mkdir("/srv/open")
    os.chmod(str(open_dir), 0o777)
    host.process(400, ["/usr/bin/dockerd", "--config-file", "/srv/open/daemon.json"], comm="dockerd")
    with pytest.raises(TrustCheckFailed) as docker:
        docker_locate(host.ctx())
    assert docker.value.reference == "config-path-untrusted"
    os.chmod(str(open_dir), 0o1777)  # sticky, root's: nobody else can replace root's entry, but can create it
    with pytest.raises(TrustCheckFailed):
        docker_locate(host.ctx())
    (open_dir / "daemon.json").write_text("{}")
    assert docker_locate(host.ctx()).path == "/srv/open/daemon.json"
    link = host.root / "srv" / "open" / "link.json"
    link.symlink_to(str(open_dir / "daemon.json"))
    os.lchown(str(link), 65534, 65534)
    host.process(401, ["/usr/bin/dockerd", "--config-file", "/srv/open/link.json"], comm="dockerd")
    (host.root / "proc" / "400").rename(host.root / "proc" / "402-gone")
    with pytest.raises(TrustCheckFailed) as linked:
        docker_locate(host.ctx())
    assert any("symlink" in line for line in linked.value.details)


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="chown needs root")
def test_the_containerd_binary_root_runs_must_be_the_daemons_own_trusted_file(host, tmp_path):
    """The exe link's text is looked up on the host only when that host path is the very file the
    daemon runs and passes the runtime trust check; else containerd on PATH."""
    import os

    from nvdocker_setup.engines.containerd.binary import find_binary

    real = tmp_path / "real"
    real.mkdir()
    binary = real / "containerd"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    # the link's text is a real path; the context maps it under its root: make both the same inode
    mapped = host.root / str(binary).lstrip("/")
    mapped.parent.mkdir(parents=True)
    os.link(str(binary), str(mapped))
    host.process(300, ["/usr/bin/containerd"], comm="containerd")
    (host.root / "proc" / "300" / "exe").symlink_to(str(binary))
    on_path = host.script("containerd", "exit 0")
    assert find_binary(host.ctx()) == str(mapped)
    os.chown(str(binary), 65534, 65534)  # a user's file: root must not run it
    assert find_binary(host.ctx()) == str(on_path)
    os.chown(str(binary), 0, 0)
    os.chmod(str(mapped.parent), 0o777)  # a directory others can write: the file can be swapped
    assert find_binary(host.ctx()) == str(on_path)
    os.chmod(str(mapped.parent), 0o755)
    assert find_binary(host.ctx()) == str(mapped)
    (host.root / "proc" / "300" / "exe").unlink()
    (host.root / "proc" / "300" / "exe").symlink_to("/nonexistent/containerd")  # not the mapped file
    mapped2 = host.root / "nonexistent" / "containerd"
    mapped2.parent.mkdir()
    mapped2.write_text("#!/bin/sh\n")
    mapped2.chmod(0o755)
    assert find_binary(host.ctx()) == str(on_path)
