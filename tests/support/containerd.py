"""Private containerd daemons (1.6, 1.7, 2.1) for the containerd engine tests (recipe:
../shared/TESTING.md, "A private containerd").

The binaries are the unpacked Debian packages the Docker tests already use (never installed):
containerd 1.6.20 with Debian 12's docker.io (:data:`~tests.support.newer_docker.DOCKER20`), 1.7.24
with Docker 26 (:data:`~tests.support.newer_docker.DOCKER26`) and 2.1.9 with forky's Docker 28.5
(:data:`~tests.support.debian_engines.DOCKER28`). runc is always Debian 12's (forky's needs glibc
2.38): the docker20 folder comes right after the version's own on PATH.

Every daemon lives in a short ``/tmp/ctdXXXX`` dir (unix socket paths must stay < 108 bytes): root,
state, the gRPC and ttrpc sockets, the opt plugin's dir, the CNI dirs (no CNI is installed: the CRI
plugin reports NetworkReady false, which is normal), its log and pidfile. Plugins that need what is
missing here (devmapper, btrfs, zfs, aufs, tracing) are disabled, and so is NRI (2.x would make
/var/run/nri/nri.sock). The daemon is stopped by the pid we started (or the one the stand-in
``systemctl`` restarted), never by name.

A command line drives a daemon from another process, like the stand-in ``systemctl`` does:
``python -m tests.support.containerd start|stop|restart|pid DIR``. The argv and PATH of the daemon
are kept in ``DIR/containerd.state.json`` and its pid in ``DIR/containerd.pid``, so a restart from
any process runs the same command line and every process sees the new pid.
"""

import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = "containerd.service"
NAMESPACE = "default"
TINY_IMAGE = "docker.io/library/tiny:latest"
TINY_COMMANDS = ("sh", "ls", "cat", "env", "echo", "true", "sleep", "readlink", "stat", "head", "grep")
BOOTED = b"containerd successfully booted"
#: Plugins that need a kernel feature, a tool or a host path this test machine does not have.
DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
    "io.containerd.nri.v1.nri",
)


class ContainerdError(RuntimeError):
    pass


def _docker20() -> str:
    from tests.support.newer_docker import ensure_docker20

    return ensure_docker20()


def _docker26() -> str:
    from tests.support.newer_docker import ensure_docker26

    return ensure_docker26()


def _docker28() -> str:
    from tests.support.debian_engines import DOCKER28, ensure_engine

    return ensure_engine(DOCKER28)


class ContainerdRelease(NamedTuple):
    """One containerd version: where its binaries come from and how its config is spelled."""

    name: str
    #: What ``containerd --version`` must show.
    version_prefix: str
    #: The folder (usr/bin, usr/sbin) with this containerd, fetched and unpacked when missing.
    fetch: Callable[[], str]
    #: config.toml ``version``.
    schema: int
    #: The plugin table holding ``containerd.runtimes``, ``enable_cdi``, ``cni``...
    cri_runtime_plugin: str
    #: ``TYPE ID`` of every CRI plugin ``ctr plugins ls`` must show as ok.
    cri_plugin_ids: Tuple[str, ...]

    @property
    def cri_plugin(self) -> str:
        """The TOML key path of the runtime config, ``plugins."<id>"``."""
        return 'plugins."{}"'.format(self.cri_runtime_plugin)


CONTAINERD16 = ContainerdRelease("1.6", "1.6.", _docker20, 2, "io.containerd.grpc.v1.cri", ("io.containerd.grpc.v1 cri",))
CONTAINERD17 = ContainerdRelease("1.7", "1.7.", _docker26, 2, "io.containerd.grpc.v1.cri", ("io.containerd.grpc.v1 cri",))
CONTAINERD21 = ContainerdRelease(
    "2.1", "2.1.", _docker28, 3, "io.containerd.cri.v1.runtime",
    ("io.containerd.cri.v1 images", "io.containerd.cri.v1 runtime", "io.containerd.grpc.v1 cri"),
)
RELEASES = (CONTAINERD16, CONTAINERD17, CONTAINERD21)
BY_NAME = {release.name: release for release in RELEASES}

_outcome: Dict[str, Tuple[Optional[str], str]] = {}


def release_folder(release: ContainerdRelease) -> str:
    """The release's folder, fetched when missing; raises when it cannot be had."""
    from tests.support.debian_engines import EngineUnavailable
    from tests.support.newer_docker import Docker26Unavailable

    try:
        return release.fetch()
    except (Docker26Unavailable, EngineUnavailable, OSError) as error:
        raise ContainerdError("containerd {} is not available: {}".format(release.name, error)) from None


def containerd_or_skip(release: ContainerdRelease) -> str:
    """The release's folder; a skip when it cannot be had (or without root), a failure under CI=true.
    The outcome is remembered for the session."""
    import pytest

    if release.name not in _outcome:
        if os.geteuid() != 0:
            _outcome[release.name] = (None, "a private containerd needs root")
        else:
            try:
                _outcome[release.name] = (release_folder(release), "")
            except ContainerdError as error:
                _outcome[release.name] = (None, str(error))
    folder, why = _outcome[release.name]
    if folder is not None:
        return folder
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why + " (the containerd tests must run in CI)")
    pytest.skip(why)
    raise AssertionError("unreachable")


def bin_dirs(folder: str) -> List[str]:
    """The version's own binaries first, then Debian 12's runc (and containerd 1.6's shims as a
    fallback only: every folder has its own containerd-shim-runc-v2)."""
    dirs = [os.path.join(folder, "usr", "bin"), os.path.join(folder, "usr", "sbin")]
    from tests.support.newer_docker import Docker26Unavailable

    try:
        docker20 = _docker20()
    except (Docker26Unavailable, OSError):  # then whatever runc the folder or the host PATH has
        docker20 = folder
    for extra in (os.path.join(docker20, "usr", "sbin"), os.path.join(docker20, "usr", "bin")):
        if extra not in dirs:
            dirs.append(extra)
    return [d for d in dirs if os.path.isdir(d)]


# -- processes --------------------------------------------------------------------------------------------


def alive(pid: Optional[int]) -> bool:
    """Running and not a zombie (this machine's pid 1 does not reap orphans)."""
    if not pid:
        return False
    try:
        with open("/proc/{}/stat".format(pid)) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> bytes:
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait_gone(pid, 10.0)


def unmount_below(directory: str) -> None:
    from tests.support.sandbox import unmount_below as _unmount_below

    _unmount_below(directory)


# -- the daemon ---------------------------------------------------------------------------------------------


class PrivateContainerd:
    """One private containerd in ``workdir`` (a new short /tmp dir by default).

    ``start()`` writes :meth:`base_config` to ``config_path`` unless given another file; ``restart()``
    and the stand-in ``systemctl`` run the same argv again.
    """

    def __init__(self, release: ContainerdRelease, folder: str, workdir: Optional[str] = None) -> None:
        self.release = release
        self.folder = folder
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="ctd", dir="/tmp"))
        os.makedirs(self.workdir, exist_ok=True)
        self.socket = os.path.join(self.workdir, "c.sock")
        if len(self.socket) + len(".ttrpc") > 100:
            raise ContainerdError("{} is too long for a unix socket path".format(self.socket))
        self.ttrpc_socket = self.socket + ".ttrpc"
        self.config_path = os.path.join(self.workdir, "config.toml")
        self.log_path = os.path.join(self.workdir, "containerd.log")
        self.pidfile = os.path.join(self.workdir, "containerd.pid")
        self.state_file = os.path.join(self.workdir, "containerd.state.json")
        self.bin_dir = os.path.join(self.workdir, "bin")
        self.env = dict(os.environ, PATH=os.pathsep.join(
            bin_dirs(folder) + [os.environ.get("PATH", "/usr/bin:/bin"), "/usr/sbin", "/sbin"]))
        self._process: Optional[subprocess.Popen] = None

    # -- paths and config --

    @property
    def containerd(self) -> str:
        return os.path.join(self.folder, "usr", "bin", "containerd")

    @property
    def ctr_binary(self) -> str:
        return os.path.join(self.folder, "usr", "bin", "ctr")

    @property
    def runc(self) -> str:
        found = shutil.which("runc", path=self.env["PATH"])
        if found is None:
            raise ContainerdError("no runc on " + self.env["PATH"])
        return found

    def base_config(self) -> str:
        """A config that boots here with no network, no systemd and nothing outside ``workdir``."""
        w = self.workdir
        cri = self.release.cri_plugin
        lines = [
            "version = {}".format(self.release.schema),
            'root = "{}/root"'.format(w),
            'state = "{}/state"'.format(w),
            "disabled_plugins = [{}]".format(", ".join('"{}"'.format(p) for p in DISABLED_PLUGINS)),
            "",
            "[grpc]",
            '  address = "{}"'.format(self.socket),
            "",
            "[ttrpc]",
            '  address = "{}"'.format(self.ttrpc_socket),
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            '  path = "{}/opt"'.format(w),
            "",
            "[{}.cni]".format(cri),
            # 2.1 deprecates bin_dir (a ContainerdHasNoDeprecationWarnings=false condition) for bin_dirs
            ('  bin_dirs = ["{}/cni/bin"]' if self.release.schema >= 3 else '  bin_dir = "{}/cni/bin"').format(w),
            '  conf_dir = "{}/cni/net.d"'.format(w),
        ]
        if self.release.schema >= 3:
            lines += ["", '[plugins."io.containerd.image-verifier.v1.bindir"]', '  bin_dir = "{}/verifiers"'.format(w)]
        return "\n".join(lines) + "\n"

    def runtime_table(self, handler: str) -> str:
        """The TOML table name of a CRI runtime handler in this version's schema."""
        return "{}.containerd.runtimes.{}".format(self.release.cri_plugin, handler)

    def write_config(self, text: str, path: Optional[str] = None) -> str:
        path = path or self.config_path
        with open(path, "w") as handle:
            handle.write(text)
        return path

    # -- the daemon --

    def _state(self) -> Dict:
        with open(self.state_file) as handle:
            return json.load(handle)

    @property
    def argv(self) -> List[str]:
        return list(self._state()["argv"])

    @property
    def pid(self) -> Optional[int]:
        """The running daemon's pid (whichever process started it), else None."""
        try:
            with open(self.pidfile) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        try:
            argv = self.argv
        except (OSError, ValueError, KeyError):
            return None
        if not alive(pid) or _cmdline(pid) != b"".join(arg.encode() + b"\0" for arg in argv):
            return None  # gone, or a recycled pid
        return pid

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, config_path: Optional[str] = None, timeout: float = 30.0) -> int:
        """Start containerd on ``config_path`` (the base config by default) and wait until it booted and
        its socket exists; on failure stop it and raise with the log's tail."""
        if self.is_running():
            raise ContainerdError("already running (pid {})".format(self.pid))
        if config_path is None:
            config_path = self.config_path
            if not os.path.exists(config_path):
                self.write_config(self.base_config())
        argv = [self.containerd, "--config", os.path.abspath(config_path)]
        with open(self.state_file, "w") as handle:
            json.dump({"argv": argv, "env_path": self.env["PATH"], "release": self.release.name,
                       "folder": self.folder}, handle)
        return self._launch(argv, self.env, timeout)

    def _launch(self, argv: Sequence[str], env: Dict[str, str], timeout: float) -> int:
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        if os.path.exists(self.socket):  # a killed daemon's; containerd would remove it anyway
            os.unlink(self.socket)
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True, cwd=self.workdir,
            )
        self._process = process
        with open(self.pidfile, "w") as handle:
            handle.write("{}\n".format(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ContainerdError("containerd exited with {}:\n{}".format(process.returncode, self.log_tail()))
            if os.path.exists(self.socket) and BOOTED in self._log_since(offset):
                return process.pid
            time.sleep(0.05)
        self.stop()
        raise ContainerdError("containerd did not boot within {:g} s:\n{}".format(timeout, self.log_tail()))

    def _log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read()
        except OSError:
            return b""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the running daemon by pid, wait; SIGKILL after ``timeout``."""
        pid = self.pid
        if pid is not None:
            _terminate(pid, timeout)
        if self._process is not None:
            if self._process.poll() is None and not alive(self._process.pid):
                self._process.wait(5)  # reap our own child
            self._process = None

    def restart(self, timeout: float = 30.0) -> int:
        state = self._state()
        self.stop()
        return self._launch(state["argv"], dict(os.environ, PATH=state["env_path"]), timeout)

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return b"".join(handle.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    # -- tools --

    def config_dump(self, config_path: Optional[str] = None) -> str:
        """``containerd --config F config dump``: containerd's own view of the merged file."""
        completed = subprocess.run(
            [self.containerd, "--config", config_path or self.config_path, "config", "dump"], env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=False,
        )
        if completed.returncode != 0:
            raise ContainerdError("config dump failed ({}): {}".format(
                completed.returncode, completed.stderr.decode(errors="replace").strip()[-2000:]))
        return completed.stdout.decode()

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0,
            input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            [self.ctr_binary, "--address", self.socket, "--namespace", NAMESPACE, *args], input=input,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, env=self.env, check=False,
        )
        if check and completed.returncode != 0:
            raise ContainerdError("ctr {} failed ({}): {}".format(
                " ".join(args), completed.returncode, completed.stderr.decode(errors="replace").strip()))
        return completed

    def plugins(self) -> Dict[str, str]:
        """{"TYPE ID": STATUS} from ``ctr plugins ls``."""
        result = {}
        for line in self.ctr("plugins", "ls").stdout.decode().splitlines()[1:]:
            words = line.split()
            if len(words) >= 4:
                result["{} {}".format(words[0], words[1])] = words[-1]
        return result

    def import_tiny_image(self) -> str:
        """Import :data:`TINY_IMAGE` (static busybox, an OCI archive built here: nothing can be pulled)."""
        archive = os.path.join(self.workdir, "tiny.oci.tar")
        if not os.path.exists(archive):
            with open(archive, "wb") as handle:
                handle.write(tiny_oci_archive())
        self.ctr("images", "import", archive, timeout=120)
        return TINY_IMAGE

    def run_container(self, container_id: str, argv: Sequence[str], runc_binary: Optional[str] = None,
                      detach: bool = False, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
        """``ctr run [--rm|-d] [--runc-binary B] tiny ID ARGV`` (no network: a private netns with lo)."""
        flags = ["-d"] if detach else ["--rm"]
        if runc_binary:
            flags += ["--runc-binary", runc_binary]
        return self.ctr("run", *flags, TINY_IMAGE, container_id, *argv, timeout=timeout, check=check)

    def tasks(self) -> Dict[str, Tuple[int, str]]:
        """{container id: (pid, status)} from ``ctr tasks ls``."""
        result = {}
        for line in self.ctr("tasks", "ls").stdout.decode().splitlines()[1:]:
            words = line.split()
            if len(words) >= 3:
                result[words[0]] = (int(words[1]), words[2])
        return result

    def remove_containers(self) -> None:
        """Kill and delete every task and container (while the daemon runs)."""
        if not self.is_running():
            return
        for task in self.tasks():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(status == "STOPPED" for _pid, status in self.tasks().values()):
                break
            time.sleep(0.1)
        for task in self.tasks():
            self.ctr("tasks", "delete", task, check=False, timeout=20)
        listing = self.ctr("containers", "ls", "-q", check=False).stdout.decode().split()
        for container in listing:
            self.ctr("containers", "delete", container, check=False, timeout=20)

    def leftover_processes(self) -> List[int]:
        """Processes whose argv names our socket or workdir (shims of our containers)."""
        mine = []
        marker = self.workdir.encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid() and marker in _cmdline(int(entry)) and alive(int(entry)):
                mine.append(int(entry))
        return mine

    # -- the stand-in service manager --

    def systemctl_calls(self) -> List[str]:
        path = os.path.join(self.workdir, "systemctl.calls")
        try:
            with open(path) as handle:
                return handle.read().splitlines()
        except OSError:
            return []

    def install_systemctl(self, python: str = sys.executable) -> str:
        """Write ``workdir/bin/systemctl`` (and ``journalctl``): put ``bin_dir`` first on the PATH given to
        the code under test. ``restart containerd.service`` runs the CLI below in another process.
        Returns the bin dir."""
        os.makedirs(self.bin_dir, exist_ok=True)
        q = shlex.quote
        cli = "cd {} && PYTHONPATH={} {} -m tests.support.containerd".format(q(REPO), q(REPO), q(python))
        _write_script(os.path.join(self.bin_dir, "systemctl"), """
printf '%s\\n' "$*" >> {calls}
case "$*" in
    "restart {unit}"|"try-restart {unit}")
        exec sh -c '{cli} restart {workdir}' ;;
    "start {unit}")
        pid=$(sh -c '{cli} pid {workdir}'); [ "$pid" != 0 ] && exit 0
        exec sh -c '{cli} start {workdir}' ;;
    "stop {unit}")
        exec sh -c '{cli} stop {workdir}' ;;
    "reload {unit}")
        echo "Failed to reload {unit}: Job type reload is not applicable for unit {unit}." >&2; exit 1 ;;
    "reset-failed {unit}")
        exit 0 ;;
    "is-active --quiet {unit}")
        pid=$(sh -c '{cli} pid {workdir}'); [ "$pid" != 0 ] && exit 0; exit 3 ;;
    "is-active {unit}")
        pid=$(sh -c '{cli} pid {workdir}'); [ "$pid" != 0 ] && {{ echo active; exit 0; }}; echo inactive; exit 3 ;;
    "show -p MainPID --value {unit}"|"show --property=MainPID --value {unit}")
        exec sh -c '{cli} pid {workdir}' ;;
    *)
        echo "stand-in systemctl: unexpected $*" >&2; exit 64 ;;
esac
""".format(calls=q(os.path.join(self.workdir, "systemctl.calls")), unit=UNIT, cli=cli.replace("'", "'\\''"),
           workdir=q(self.workdir)))
        _write_script(os.path.join(self.bin_dir, "journalctl"), """
printf '%s\\n' "$*" >> {calls}
tail -n 40 {log}
""".format(calls=q(os.path.join(self.workdir, "journalctl.calls")), log=q(self.log_path)))
        return self.bin_dir

    # -- the end --

    def close(self) -> None:
        """Remove containers, stop the daemon, end our shims, unmount and remove ``workdir``."""
        try:
            self.remove_containers()
        except (ContainerdError, subprocess.SubprocessError, OSError):
            pass
        self.stop()
        for pid in self.leftover_processes():
            _terminate(pid, 5.0)
        unmount_below(self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PrivateContainerd":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_script(path: str, body: str) -> None:
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)


# -- the tiny image ------------------------------------------------------------------------------------------


def _busybox() -> str:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ContainerdError("busybox is not installed (apt-get install busybox-static)")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tiny_oci_archive() -> bytes:
    """An OCI image archive (oci-layout, index.json, blobs) of static busybox with a few applets linked,
    named :data:`TINY_IMAGE` for ``ctr images import``."""
    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755, 0
            layer.addfile(info)
        with open(_busybox(), "rb") as handle:
            binary = handle.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(binary), 0o755, 0
        layer.addfile(info, io.BytesIO(binary))
        for command in TINY_COMMANDS:
            link = tarfile.TarInfo("bin/" + command)
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            layer.addfile(link)
    layer_bytes = layer_io.getvalue()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer_bytes)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer_bytes),
                    "size": len(layer_bytes)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": TINY_IMAGE, "org.opencontainers.image.ref.name": "latest"},
        }],
    }, sort_keys=True).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(archive, "index.json", index)
        for blob in (layer_bytes, config, manifest):
            _add(archive, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
    return out.getvalue()


# -- command line (the stand-in systemctl's service manager) --------------------------------------------------


def _detached(workdir: str) -> PrivateContainerd:
    with open(os.path.join(workdir, "containerd.state.json")) as handle:
        state = json.load(handle)
    daemon = PrivateContainerd(BY_NAME[state["release"]], state["folder"], workdir)
    daemon.env["PATH"] = state["env_path"]
    return daemon


def _demo_create(workdir: str, release_name: str, admin_lines: str) -> int:
    """``create DIR RELEASE``: a private containerd in DIR (config.toml = the base config plus the
    admin's lines from stdin), started, with the tiny image and the stand-in systemctl; prints shell
    assignments (BIN, CONTAINERD, SOCKET) for scripts/demo.sh."""
    release = BY_NAME[release_name]
    daemon = PrivateContainerd(release, release_folder(release), workdir)
    daemon.write_config(daemon.base_config() + admin_lines)
    daemon.start()
    daemon.import_tiny_image()
    bindir = daemon.install_systemctl()
    daemon._process = None  # leave it running; `close DIR` stops it
    print("BIN={}\nCONTAINERD={}\nSOCKET={}\nCTR={}".format(
        shlex.quote(bindir), shlex.quote(daemon.containerd), shlex.quote(daemon.socket),
        shlex.quote(daemon.ctr_binary)))
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "close":  # the demo's cleanup: containers, daemon, shims, mounts, DIR
        try:
            _detached(os.path.abspath(argv[1])).close()
        except (ContainerdError, OSError, ValueError, KeyError) as error:
            print("containerd: {}".format(error), file=sys.stderr)
            return 1
        return 0
    if len(argv) == 3 and argv[0] == "create":
        try:
            return _demo_create(os.path.abspath(argv[1]), argv[2], sys.stdin.read())
        except (ContainerdError, OSError, ValueError, KeyError) as error:
            print("containerd: {}".format(error), file=sys.stderr)
            return 1
    if len(argv) != 2 or argv[0] not in ("start", "stop", "restart", "pid"):
        print("usage: python -m tests.support.containerd start|stop|restart|pid|close DIR | create DIR RELEASE",
              file=sys.stderr)
        return 2
    action, workdir = argv
    try:
        daemon = _detached(os.path.abspath(workdir))
        if action == "pid":
            print(daemon.pid or 0)
            return 0
        if action == "stop":
            daemon.stop()
        elif action == "restart":
            daemon.restart()
        else:
            if daemon.is_running():
                raise ContainerdError("already running (pid {})".format(daemon.pid))
            daemon._launch(daemon.argv, daemon.env, 30.0)
        daemon._process = None  # leave it running; it is found through the pidfile from now on
    except (ContainerdError, OSError, ValueError, KeyError) as error:
        print("containerd: {}".format(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
