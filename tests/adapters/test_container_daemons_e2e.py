"""A process in a container named ``containerd`` or ``dockerd`` is not a daemon of this host (issue #19).

Real containers on a private dockerd: each runs, as root in the container, busybox copied under the
daemon's name (``comm`` containerd / dockerd) with a ``--config``/``--config-file`` argv of the
container's choosing. Seen from the host's ``/proc`` they look like root's daemons; the host has a
marker-writing program, owned by uid 65534, at the very path the container's ``exe`` link names.
Nothing may pick them: not the config file (show, locate), not the binary root runs, not
``--engine auto``, not the several-dockerds refusal. A host process of the same shape is the control.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from nvdocker_setup import engines
from nvdocker_setup.adapters.locate import dockerd_processes, locate_config
from nvdocker_setup.context import Context
from nvdocker_setup.engines.containerd import locate as ctd_locate
from nvdocker_setup.engines.containerd.binary import find_binary
from nvdocker_setup.errors import NvdockerError
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

pytestmark = pytest.mark.dockerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _posing(folder: str, name: str, flag: str, config: str) -> str:
    """Shell text: copy busybox to folder/name and run it there as `sh -c 'sleep; true' FLAG CONFIG`
    (comm `name`, argv naming `config`)."""
    return ("mkdir -p {d} && cp /bin/busybox {d}/{n} && exec -a sh {d}/{n} -c 'sleep 600; true' {f} {c}"
            .format(d=folder, n=name, f=flag, c=config))


def _wait_comm(pid: int, comm: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open("/proc/{}/comm".format(pid)) as handle:
                if handle.read().strip() == comm:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("pid {} never became {}".format(pid, comm))


class Posers:
    def __init__(self, sandbox, folder, marker, container_pids, host_pid) -> None:
        self.sandbox = sandbox
        self.folder = folder          # the same path inside the containers and on the host
        self.marker = marker
        self.pids = container_pids    # {"containerd": host pid, "dockerd": host pid}
        self.host_pid = host_pid      # a host process posing as containerd (the control)


@pytest.fixture(scope="module")
def posers(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root (a private dockerd)")
    dockerd_or_skip()
    work = str(tmp_path_factory.mktemp("posers"))
    os.chmod(work, 0o755)
    folder = "/tmp/nvd-posers-" + uuid.uuid4().hex[:12]
    marker = os.path.join(work, "planted-binary-ran")
    # The attack's plant: the container's exe path, on the host, a user's program that leaves a mark.
    os.makedirs(folder, mode=0o755)
    for name in ("containerd", "dockerd"):
        path = os.path.join(folder, name)
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\necho \"$0 $*\" >> {}\n".format(marker))
        os.chmod(path, 0o755)
        os.chown(path, 65534, 65534)
    os.chown(folder, 65534, 65534)
    sandbox = DockerdSandbox(os.path.join(work, "dockerd"))
    host = None
    try:
        sandbox.start()
        sandbox.import_tiny_image()
        pids = {}
        # --pid host: the host's pid namespace (one pid in NSpid), only its mount namespace differs
        for key, name, flag, extra in (("containerd", "containerd", "--config", ()),
                                       ("dockerd", "dockerd", "--config-file", ()),
                                       ("pid-host", "containerd", "--config", ("--pid", "host"))):
            config = "{}/{}.conf".format(folder, name)
            cid = sandbox.docker("run", "-d", "--network", "none", "--user", "0", *extra, "--name", "poser-" + key,
                                 "tiny", "sh", "-c", _posing(folder, name, flag, config)).stdout.decode().strip()
            pid = int(sandbox.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout.decode().strip())
            _wait_comm(pid, name)
            pids[key] = pid
        # The control: the same program in the host's namespaces, root's, in a root-only folder.
        hostdir = os.path.join(work, "hostbin")
        os.makedirs(hostdir, mode=0o755)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(hostdir, "containerd"))
        host = subprocess.Popen(["busybox", "sh", "-c", "exec -a sh {}/containerd -c 'sleep 600; true' --config {}/host.toml"
                                 .format(hostdir, hostdir)])
        _wait_comm(host.pid, "containerd")
        yield Posers(sandbox, folder, marker, pids, host.pid)
    finally:
        if host is not None:
            host.kill()
            host.wait()
        sandbox.close()
        shutil.rmtree(folder, ignore_errors=True)


def _ctx(tmp_path) -> Context:
    """The real host (real /proc), with a PATH that has no containerd of its own."""
    empty = tmp_path / "emptybin"
    empty.mkdir(exist_ok=True)
    return Context(env={"PATH": str(empty), "HOME": "/root"}, state_dir=str(tmp_path / "state"), euid=0)


def test_the_posers_look_like_roots_daemons_from_the_host(posers):
    """What the old rule (comm, uid 0, argv) saw: the test would fail without the namespace rule."""
    for key, pid in posers.pids.items():
        name = "dockerd" if key == "dockerd" else "containerd"
        with open("/proc/{}/status".format(pid)) as handle:
            assert "\nUid:\t0\t0\t0\t0\n" in handle.read()
        with open("/proc/{}/cmdline".format(pid), "rb") as handle:
            assert "{}/{}.conf".format(posers.folder, name).encode() in handle.read()
        assert os.readlink("/proc/{}/exe".format(pid)) == "{}/{}".format(posers.folder, name)
        assert os.readlink("/proc/{}/ns/mnt".format(pid)) != os.readlink("/proc/self/ns/mnt")


def test_a_container_process_never_chooses_the_config_or_the_binary(posers, tmp_path):
    ctx = _ctx(tmp_path)
    chosen = [proc.pid for proc in ctd_locate.system_containerds(ctx)]
    assert posers.pids["containerd"] not in chosen and posers.pids["pid-host"] not in chosen
    assert posers.host_pid in chosen  # the same shape on the host does count
    try:
        location = ctd_locate.locate_config(ctx, None)
        assert not location.path.startswith(posers.folder)
    except NvdockerError as error:
        assert posers.folder not in error.message + " ".join(error.details)
    binary = find_binary(ctx)
    assert binary is None or not binary.startswith(posers.folder)
    assert not os.path.exists(posers.marker)


def test_show_engine_containerd_picks_nothing_of_the_container(posers, tmp_path):
    env = {"PATH": str(_ctx(tmp_path).env["PATH"]) + ":/usr/bin:/bin", "NVDOCKER_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": REPO, "HOME": "/root"}
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup", "show", "--engine", "containerd", "--json"],
                          env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    assert posers.folder not in done.stdout + done.stderr
    words = [word.strip(",()") for word in (done.stdout + done.stderr).split()]
    assert str(posers.pids["containerd"]) not in words and str(posers.pids["pid-host"]) not in words
    assert not os.path.exists(posers.marker), open(posers.marker).read()
    assert not os.path.exists(os.path.join(posers.folder, "containerd.conf"))
    if done.returncode == 0:
        assert json.loads(done.stdout)


def test_a_container_dockerd_is_not_counted(posers, tmp_path):
    ctx = _ctx(tmp_path)
    pids = [proc.pid for proc in dockerd_processes(ctx)]
    assert posers.pids["dockerd"] not in pids
    assert posers.sandbox.pid in pids  # the private dockerd, a host process, does count
    for engine in ("docker", "containerd"):
        running = " ".join(engines.get(engine).running(ctx))
        assert "pid {}".format(posers.pids["dockerd"]) not in running
        assert "pid {}".format(posers.pids["containerd"]) not in running
        assert "pid {}".format(posers.pids["pid-host"]) not in running
    try:
        location = locate_config(ctx)
        assert not location.path.startswith(posers.folder)
    except NvdockerError as error:
        # another test run's dockerds may be running beside ours; the container's is never among them
        assert error.reference == "several-dockerds" and len(pids) >= 2
        assert all("pid {}:".format(posers.pids["dockerd"]) not in line for line in error.details)
    if len(pids) == 1:
        assert locate_config(ctx).path == posers.sandbox.config_path  # alone: ours, no several-dockerds
    assert not os.path.exists(posers.marker)
