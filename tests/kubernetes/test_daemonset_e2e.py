"""The node-agent image run as the DaemonSet declares it (mounts, privileged, hostPID, command, the
readinessProbe's command: all read from the rendered manifests), on a private dockerd, against a
"node" made of a private containerd (the base) or a private dockerd (the Docker overlay).

The node's paths are directories of this machine: each hostPath of the pod spec gets one. The
node's "host systemd" is a stand-in systemctl that the agent reaches exactly as in production,
``nsenter -t PID -m -u -i -n -p -- SYSTEMCTL ...`` into the namespaces of a helper process of this
test (pid 1 of this machine is not ours to enter); a wrapper first moves itself into the helper's
cgroups, as systemd's own units would not live in the agent container's cgroup either. The
stand-in records every call: that is how restarts are counted.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import pytest

from tests.support import kubernetes as k8s

pytestmark = [pytest.mark.kubernetes, pytest.mark.dockerd]

READY_TIMEOUT = 120.0


def _need_root():
    k8s.need(os.geteuid() == 0, "the DaemonSet tests need root (private daemons, privileged containers)")


@pytest.fixture(scope="module")
def runner():
    """The private dockerd that runs the agent container, with the image loaded (built once)."""
    _need_root()
    from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

    dockerd_or_skip()
    box = DockerdSandbox(tempfile.mkdtemp(prefix="k8srun", dir="/tmp"))
    box.start()
    try:
        box.image = k8s.ensure_image(box)  # type: ignore[attr-defined]
        yield box
    finally:
        box.close()
        shutil.rmtree(box.workdir, ignore_errors=True)


@pytest.fixture
def helper():
    """A process of this test whose namespaces and cgroups stand for the host's (nsenter -t PID)."""
    process = subprocess.Popen(["sleep", "3600"])
    yield process
    process.kill()
    process.wait(10)


def _cgroup_wrapper(path: Path, helper_pid: int, target: str) -> str:
    path.write_text("""#!/bin/sh
while IFS=: read -r _ controllers cgroup; do
  [ -n "$controllers" ] || continue
  dir=/sys/fs/cgroup/${{controllers#name=}}$cgroup
  [ -f "$dir/cgroup.procs" ] && echo $$ > "$dir/cgroup.procs" 2>/dev/null
done < /proc/{pid}/cgroup
exec {target} "$@"
""".format(pid=helper_pid, target=shlex.quote(target)))
    path.chmod(0o755)
    return str(path)


def _daemonset(directory: Path):
    return k8s.find(k8s.load_yaml(k8s.render(directory)), "DaemonSet")


def _probe(daemonset) -> List[str]:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return list(container["readinessProbe"]["exec"]["command"])


def _start(runner, daemonset, host_dirs: Dict[str, str], name: str, overrides: List[str]) -> None:
    command = k8s.command_of(daemonset)
    runner.docker("run", "-d", "--name", name, *k8s.docker_run_args(daemonset, host_dirs),
                  "--entrypoint", command[0], runner.image, *command[1:], *overrides)
    probe = _probe(daemonset)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if runner.docker("exec", name, *probe, check=False).returncode == 0:
            return
        state = json.loads(runner.docker("inspect", name).stdout)[0]["State"]
        if not state["Running"]:
            break
        time.sleep(0.5)
    logs = runner.docker("logs", name, check=False)
    raise AssertionError("{} never got ready:\n{}{}".format(name, logs.stdout.decode(), logs.stderr.decode()))


def _events(runner, name: str) -> List[dict]:
    out = runner.docker("logs", name).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _stop(runner, name: str) -> List[dict]:
    runner.docker("stop", "-t", "170", name, timeout=200)
    state = json.loads(runner.docker("inspect", name).stdout)[0]["State"]
    events = _events(runner, name)
    assert state["ExitCode"] == 0, events
    runner.docker("rm", name)
    return events


def _files(directory: str) -> List[str]:
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*") if not p.is_dir())


@pytest.mark.parametrize("version", ["1.6", "1.7", "2.1"], ids=lambda v: "containerd" + v)
def test_containerd_node(runner, helper, tmp_path, version):
    from nvdocker_setup.engines.containerd import cri
    from tests.support.containerd import BY_NAME, PrivateContainerd, containerd_or_skip

    release = BY_NAME[version]
    folder = containerd_or_skip(release)
    node = PrivateContainerd(release, folder)
    try:
        config_dir = tmp_path / "node" / "etc-containerd"
        config_dir.mkdir(parents=True)
        config = config_dir / "config.toml"
        config.write_text("# the node's own config, kept byte for byte\n" + node.base_config())
        node.start(config_path=str(config))
        original = config.read_bytes()
        standin = node.install_systemctl()
        systemctl = _cgroup_wrapper(tmp_path / "systemctl", helper.pid, os.path.join(standin, "systemctl"))
        install_dir = str(tmp_path / "node" / "usr-local-nvdocker")
        host_dirs = {
            "/etc/containerd": str(config_dir),
            "/run/containerd": node.workdir,  # holds the node's socket, c.sock
            "/usr/local/nvdocker": install_dir,
            "/var/lib/nvdocker-setup": str(tmp_path / "node" / "state"),
        }
        daemonset = _daemonset(k8s.DEPLOY / "base")
        overrides = ["--socket=/run/containerd/c.sock", "--host-pid={}".format(helper.pid), "--systemctl=" + systemctl,
                     "--timeout=40"]

        def restarts() -> int:
            return node.systemctl_calls().count("restart containerd.service")

        _start(runner, daemonset, host_dirs, "agent1", overrides)
        live = cri.status(node.socket, 10).runtimes()
        assert live["nvidia"]["binary_name"] == "/usr/local/nvdocker/bin/nvdocker-runtime", live
        assert restarts() == 1
        assert "bin/nvdocker-runtime" in _files(install_dir)
        assert "lib/nvdocker_setup/runtime/__main__.py" in _files(install_dir)
        runtime = Path(install_dir, "bin", "nvdocker-runtime").stat()
        assert (runtime.st_uid, runtime.st_mode & 0o7777) == (0, 0o755)
        configured = config.read_bytes()

        # the pod dies without its undo (a node reboot, an OOM kill): the next one changes nothing
        runner.docker("kill", "-s", "KILL", "agent1")
        runner.docker("rm", "agent1")
        _start(runner, daemonset, host_dirs, "agent2", overrides)
        assert restarts() == 1, node.systemctl_calls()
        assert config.read_bytes() == configured
        first = _events(runner, "agent2")
        assert first[0]["event"] == "files" and first[0]["copied"] == []
        assert first[1]["result"]["changed"] is False and first[1]["result"]["apply"]["method"] == "none"

        events = _stop(runner, "agent2")
        assert config.read_bytes() == original
        assert restarts() == 2
        assert "nvidia" not in cri.status(node.socket, 10).runtimes()
        assert _files(install_dir) == []
        assert [e["event"] for e in events][-4:] == ["stop", "uninstall", "files", "exit"]
    finally:
        node.close()


def _docker_standin(path: Path, box, calls: Path) -> str:
    """systemctl for the node's private dockerd: reload is SIGHUP, restart the sandbox's CLI."""
    cli = "cd {} && PYTHONPATH={} {} -m tests.support.sandbox".format(
        shlex.quote(str(k8s.REPO)), shlex.quote(str(k8s.REPO)), shlex.quote(sys.executable))
    path.write_text("""#!/bin/sh
printf '%s\\n' "$*" >> {calls}
case "$*" in
  "reload docker.service") kill -HUP "$(cat {pidfile})" ;;
  "restart docker.service") exec sh -c {restart} ;;
  "reset-failed docker.service") exit 0 ;;
  "show -p MainPID --value docker.service") cat {pidfile} ;;
  "is-active --quiet docker.service") kill -0 "$(cat {pidfile})" ;;
  *) echo "stand-in systemctl: unexpected $*" >&2; exit 64 ;;
esac
""".format(calls=shlex.quote(str(calls)), pidfile=shlex.quote(box.pidfile),
           restart=shlex.quote(cli + " restart " + shlex.quote(box.workdir))))
    path.chmod(0o755)
    return str(path)


def test_docker_node(runner, helper, tmp_path):
    from tests.support.sandbox import DockerdSandbox

    original = b'{\n  "log-level": "warn",\n  "runtimes": {}\n}\n'
    node = DockerdSandbox(tempfile.mkdtemp(prefix="k8snode", dir="/tmp"), daemon_json=original)
    node.start()
    try:
        calls = tmp_path / "systemctl.calls"
        standin = _docker_standin(tmp_path / "standin", node, calls)
        systemctl = _cgroup_wrapper(tmp_path / "systemctl", helper.pid, standin)
        install_dir = str(tmp_path / "node" / "usr-local-nvdocker")
        host_dirs = {
            "/etc/docker": node.workdir,  # holds daemon.json
            "/var/run": node.run_dir,  # holds docker.sock
            "/usr/local/nvdocker": install_dir,
            "/var/lib/nvdocker-setup": str(tmp_path / "node" / "state"),
        }
        daemonset = _daemonset(k8s.DEPLOY / "overlays" / "docker")
        overrides = ["--host-pid={}".format(helper.pid), "--systemctl=" + systemctl, "--timeout=40"]

        def applied() -> List[str]:
            lines = calls.read_text().splitlines() if calls.exists() else []
            return [line for line in lines if line.split()[0] in ("reload", "restart")]

        _start(runner, daemonset, host_dirs, "dagent1", overrides)
        assert node.info()["Runtimes"]["nvidia"]["path"] == "/usr/local/nvdocker/bin/nvdocker-runtime"
        assert applied() == ["reload docker.service"]
        configured = Path(node.config_path).read_bytes()
        runner.docker("kill", "-s", "KILL", "dagent1")
        runner.docker("rm", "dagent1")
        _start(runner, daemonset, host_dirs, "dagent2", overrides)
        assert applied() == ["reload docker.service"]
        assert Path(node.config_path).read_bytes() == configured
        _stop(runner, "dagent2")
        assert Path(node.config_path).read_bytes() == original
        assert "nvidia" not in node.info()["Runtimes"]
        assert applied() == ["reload docker.service"] * 2
        assert _files(install_dir) == []
    finally:
        node.close()
        shutil.rmtree(node.workdir, ignore_errors=True)
