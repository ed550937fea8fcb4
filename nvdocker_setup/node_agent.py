"""The Kubernetes node agent: what the DaemonSet's container runs (``nvdocker-setup node-agent``).

It configures the *host's* engine from inside a pod, with the same transactions as the CLI
(:func:`nvdocker_setup.operations.install` / :func:`~nvdocker_setup.operations.uninstall`):

1. copy the runtime launcher and the container-side Python modules onto the host
   (``--install-dir``, default ``/usr/local/nvdocker``): atomically, root-owned, only the files
   whose bytes differ; what it added or replaced is recorded in the host's state dir;
2. install the runtime into the host engine's config (``--runtime-path`` = the host path of the
   copied launcher), apply it to the host's daemon (restart or reload only when something
   changed) and verify it through the daemon's API;
3. write the readiness file and wait;
4. on SIGTERM (or SIGINT): remove the readiness file, uninstall what the install recorded (the
   exact bytes come back), apply that, put back or remove the files it copied, exit 0.

Two views of every host path (:class:`HostPaths`): what the host's daemon sees (``/etc/containerd/
config.toml``, ``/usr/local/nvdocker/bin/nvdocker-runtime``), and where this process reaches it,
under ``--host-root`` (``/host/etc/containerd/config.toml``). Paths written *into* the config are
host paths; paths this process opens are mapped. The DaemonSet also mounts the install dir at its
own path, so that the runtime path names the same file in both views (the trust check of the
runtime binary runs in this process).

Restarting the host's daemon from the pod: :class:`HostSystemdService` runs the host's
``systemctl`` in the host's namespaces (``nsenter -t 1 -m -u -i -n -p``, which needs ``hostPID``)
or under ``chroot HOST_ROOT``; ``--service-manager command`` runs an admin's command instead.
"""

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from nvdocker_setup import engines
from nvdocker_setup.adapters.service import CommandService, ServiceError, ServiceManager, SignalService, SystemdService
from nvdocker_setup.context import DEFAULT_STATE_DIR, Context
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME, RUNTIME_BINARY
from nvdocker_setup.errors import NvdockerError, UsageError

DEFAULT_HOST_ROOT = "/host"
DEFAULT_INSTALL_DIR = "/usr/local/nvdocker"
DEFAULT_READY_FILE = "/run/nvdocker/ready"
#: Where the image keeps the launcher built for the node layout (``INSTALL_DIR/lib``).
DEFAULT_LAUNCHER = "/usr/lib/nvdocker-node/" + RUNTIME_BINARY
#: The container-side modules (debian/rules' TOOLKIT_MODULES, stdlib only), with the package's __init__.
TOOLKIT_MODULES = ("runtime", "hook", "driver", "cdi")
DEFAULT_CONFIGS = {"containerd": "/etc/containerd/config.toml", "docker": "/etc/docker/daemon.json"}
DEFAULT_SOCKETS = {"containerd": "/run/containerd/containerd.sock", "docker": "/var/run/docker.sock"}
DEFAULT_UNITS = {"containerd": "containerd.service", "docker": "docker.service"}
SERVICE_MANAGERS = ("systemd", "command", "signal", "none")
HOST_EXEC = ("nsenter", "chroot")
#: The agent's own records, in the host's state dir: the files it copied.
FILES_RECORD = "node-agent-files.json"
ORIGINALS_DIR = "node-agent-originals"


def runtime_script(install_dir: str) -> str:
    """The runtime's entry point on the host, as the launcher must have it compiled in."""
    return os.path.join(install_dir, "lib", "nvdocker_setup", "runtime", "__main__.py")


@dataclass(frozen=True)
class HostPaths:
    """The two views of a host path: ``host`` (what the host's daemon reads) and :meth:`pod`
    (where this process reaches the same file, below ``root``, the host's / as mounted here)."""

    root: str = DEFAULT_HOST_ROOT

    def pod(self, host_path: str) -> str:
        if not os.path.isabs(host_path):
            raise UsageError("{!r} is not an absolute host path".format(host_path))
        if self.root in ("", "/"):
            return os.path.normpath(host_path)
        return os.path.join(self.root, os.path.normpath(host_path).lstrip("/"))


@dataclass
class AgentOptions:
    engine: str = "containerd"
    host_root: str = DEFAULT_HOST_ROOT
    install_dir: str = DEFAULT_INSTALL_DIR
    #: Host paths (None: the engine's default).
    config: Optional[str] = None
    socket: Optional[str] = None
    state_dir: str = DEFAULT_STATE_DIR
    runtime_name: str = DEFAULT_RUNTIME_NAME
    set_default: bool = False
    cdi: bool = False
    #: Pod paths.
    ready_file: str = DEFAULT_READY_FILE
    launcher: str = DEFAULT_LAUNCHER
    #: The nvdocker_setup package to copy the toolkit modules from (None: this one).
    package_dir: Optional[str] = None
    service_manager: str = "systemd"
    restart_command: Optional[str] = None
    host_exec: str = "nsenter"
    host_pid: int = 1
    systemctl: str = "systemctl"
    unit: Optional[str] = None
    timeout: float = 60.0
    lock_timeout: float = 60.0

    def check(self) -> None:
        if self.engine not in DEFAULT_CONFIGS:
            raise UsageError("--engine must be containerd or docker, not {!r}".format(self.engine))
        if self.service_manager not in SERVICE_MANAGERS:
            raise UsageError("--service-manager must be one of {}".format(", ".join(SERVICE_MANAGERS)))
        if self.host_exec not in HOST_EXEC:
            raise UsageError("--host-exec must be nsenter or chroot")
        if self.service_manager == "command" and not self.restart_command:
            raise UsageError("--service-manager command needs --restart-command")
        for name, value in (("--install-dir", self.install_dir), ("--state-dir", self.state_dir),
                            ("--config", self.config), ("--socket", self.socket)):
            if value is not None and not os.path.isabs(value):
                raise UsageError("{} takes an absolute host path, not {!r}".format(name, value))

    @property
    def config_path(self) -> str:
        return self.config or DEFAULT_CONFIGS[self.engine]

    @property
    def socket_path(self) -> str:
        return self.socket or DEFAULT_SOCKETS[self.engine]

    @property
    def runtime_path(self) -> str:
        """The runtime as the host's daemon runs it (written into its config)."""
        return os.path.join(self.install_dir, "bin", RUNTIME_BINARY)


class HostSystemdService(SystemdService):
    """The host's systemd, from a pod: ``systemctl`` run in the host's namespaces (``nsenter -t
    PID -m -u -i -n -p --``) or below its root (``chroot HOST_ROOT``)."""

    def __init__(self, ctx: Context, unit: str, enter: Sequence[str], systemctl: str = "systemctl") -> None:
        super().__init__(ctx, unit=unit)
        self.enter = list(enter)
        self.systemctl = systemctl

    def _systemctl(self, *args: str, check: bool = True, timeout: float = 120.0):
        argv = self.enter + [self.systemctl] + list(args)
        try:
            completed = self.ctx.run(argv, timeout=timeout, env=dict(self.ctx.env))
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError("{} failed: {}".format(" ".join(argv), exc)) from None
        if check and completed.returncode != 0:
            raise ServiceError(
                "{} failed (exit {}): {}".format(" ".join(argv), completed.returncode, (completed.stderr or "").strip()),
                hint="see: " + self.logs_hint(),
            )
        return completed

    def recent_logs(self, since: datetime.datetime) -> List[str]:
        argv = self.enter + ["journalctl", "-u", self.unit, "--since", "@{}".format(int(since.timestamp())), "-n", "30",
                             "--no-pager", "-o", "cat"]
        try:
            completed = self.ctx.run(argv, timeout=10.0, env=dict(self.ctx.env))
        except Exception:  # no journal on the host: the hint still names the command
            return []
        return [line for line in (completed.stdout or "").splitlines() if line.strip()] if completed.returncode == 0 else []

    def describe(self) -> str:
        return "{} {} on the host ({})".format(self.systemctl, self.unit, " ".join(self.enter[:3]))


def host_enter(options: AgentOptions) -> List[str]:
    """The argv prefix that runs a command as the host would."""
    if options.host_exec == "chroot":
        return ["chroot", options.host_root]
    return ["nsenter", "-t", str(options.host_pid), "-m", "-u", "-i", "-n", "-p", "--"]


def _host_pid_lookup(options: AgentOptions, daemon: str) -> Callable[[], Optional[int]]:
    """The daemon's pid from the host's pid namespace (the pod runs with hostPID): the socket's
    peer, checked by its comm in this /proc."""
    from nvdocker_setup.adapters.docker_api import DockerAPI

    socket = HostPaths(options.host_root).pod(options.socket_path)

    def lookup() -> Optional[int]:
        pid = DockerAPI(socket, timeout=2.0).peer_pid()
        try:
            with open("/proc/{}/comm".format(pid)) as handle:
                return pid if pid and handle.read().strip() == daemon else None
        except OSError:
            return None

    return lookup


def make_service(ctx: Context, options: AgentOptions) -> Optional[ServiceManager]:
    daemon = "containerd" if options.engine == "containerd" else "dockerd"
    if options.service_manager == "systemd":
        unit = options.unit or DEFAULT_UNITS[options.engine]
        return HostSystemdService(ctx, unit, host_enter(options), options.systemctl)
    if options.service_manager == "command":
        return CommandService(ctx, _host_pid_lookup(options, daemon), options.restart_command or "")
    if options.service_manager == "signal":
        return SignalService(ctx, _host_pid_lookup(options, daemon))
    return None


def make_context(options: AgentOptions, env: Optional[Dict[str, str]] = None) -> Context:
    """The host as seen from the pod: ``root`` is the host root, the state dir and the daemon's
    socket are the host's, mapped."""
    paths = HostPaths(options.host_root)
    ctx = Context(
        env=dict(os.environ if env is None else env),
        root=options.host_root,
        state_dir=paths.pod(options.state_dir),
        lock_timeout=options.lock_timeout,
    )
    if options.engine == "docker":
        ctx.docker_socket = paths.pod(options.socket_path)
    else:
        ctx.containerd_socket = paths.pod(options.socket_path)
    ctx.service = make_service(ctx, options)
    return ctx


def apply_options(options: AgentOptions):
    from nvdocker_setup.apply import ApplyOptions

    mode = "none" if options.service_manager == "none" else "auto"
    return ApplyOptions(mode=mode, service_manager="auto", timeout=options.timeout, assume_yes=False, confirm=None)


# -- the files it copies -----------------------------------------------------------------------------------


@dataclass
class CopyReport:
    copied: List[str] = field(default_factory=list)  # host paths whose bytes were written
    unchanged: List[str] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    restored: List[str] = field(default_factory=list)


def source_files(options: AgentOptions) -> Dict[str, str]:
    """{host path: pod path of the source} of everything the host needs: the launcher and the
    toolkit modules (``__init__.py`` and the runtime, hook, driver and cdi packages)."""
    package = options.package_dir or os.path.dirname(os.path.abspath(__file__))
    lib = os.path.join(options.install_dir, "lib", "nvdocker_setup")
    files = {options.runtime_path: options.launcher, os.path.join(lib, "__init__.py"): os.path.join(package, "__init__.py")}
    for module in TOOLKIT_MODULES:
        top = os.path.join(package, module)
        for directory, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    source = os.path.join(directory, name)
                    files[os.path.join(lib, os.path.relpath(source, package))] = source
    return files


def check_launcher(options: AgentOptions) -> None:
    """The launcher execs the Python runtime at a path compiled into it: it must be this install dir's."""
    try:
        with open(options.launcher, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError("cannot read the launcher {}: {}".format(options.launcher, exc.strerror or exc),
                         hint="pass --launcher, built by scripts/build-launcher.sh") from None
    expected = runtime_script(options.install_dir).encode()
    if expected + b"\0" not in data:
        raise UsageError(
            "the launcher {} was not built for --install-dir {} (it does not run {})".format(
                options.launcher, options.install_dir, expected.decode()),
            hint="build it with RUNTIME_SCRIPT={} scripts/build-launcher.sh, or use the install dir it was built "
            "for".format(expected.decode()),
            reference="node-agent-launcher",
        )


class HostFiles:
    """The copied files and the record of what was there before (``FILES_RECORD`` in the host's
    state dir): {host path: {"existed": bool, "original": name of the saved bytes or null}} and
    the directories it created. The first copy of a path records it; later ones keep the record."""

    def __init__(self, ctx: Context, paths: HostPaths) -> None:
        self.paths = paths
        self.record_path = os.path.join(ctx.state_dir, FILES_RECORD)
        self.originals = os.path.join(ctx.state_dir, ORIGINALS_DIR)
        self.state_dir = ctx.state_dir

    def load(self) -> Dict[str, Any]:
        try:
            with open(self.record_path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {"files": {}, "dirs": []}
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or not isinstance(data.get("dirs"), list):
            raise NvdockerError("{} is not a node-agent record".format(self.record_path), reference="node-agent-record")
        return data

    def _save(self, record: Dict[str, Any]) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        _write_file(self.record_path, json.dumps(record, indent=2, sort_keys=True).encode() + b"\n", 0o600)

    def copy(self, files: Dict[str, str]) -> CopyReport:
        report = CopyReport()
        record = self.load()
        for host_path, source in sorted(files.items()):
            with open(source, "rb") as handle:
                data = handle.read()
            target = self.paths.pod(host_path)
            mode = 0o755 if host_path.endswith("/" + RUNTIME_BINARY) else 0o644
            current = _read_or_none(target)
            if current == data and _owned_by_root_with(target, mode):
                report.unchanged.append(host_path)
                continue
            if host_path not in record["files"]:
                entry: Dict[str, Any] = {"existed": current is not None, "original": None}
                if current is not None:
                    os.makedirs(self.originals, mode=0o700, exist_ok=True)
                    name = hashlib.sha256(current).hexdigest()
                    _write_file(os.path.join(self.originals, name), current, 0o600)
                    entry["original"] = name
                record["files"][host_path] = entry
            for directory in _missing_dirs(os.path.dirname(host_path), self.paths):
                os.mkdir(self.paths.pod(directory), 0o755)
                if os.geteuid() == 0:
                    os.chown(self.paths.pod(directory), 0, 0)
                record["dirs"].append(directory)
            self._save(record)  # durable before the write: an undo can always find it
            _write_file(target, data, mode)
            report.copied.append(host_path)
        return report

    def undo(self) -> CopyReport:
        report = CopyReport()
        record = self.load()
        for host_path, entry in sorted(record["files"].items()):
            target = self.paths.pod(host_path)
            if entry.get("existed") and entry.get("original"):
                with open(os.path.join(self.originals, entry["original"]), "rb") as handle:
                    _write_file(target, handle.read(), 0o755 if host_path.endswith("/" + RUNTIME_BINARY) else 0o644)
                report.restored.append(host_path)
            else:
                try:
                    os.unlink(target)
                    report.removed.append(host_path)
                except FileNotFoundError:
                    pass
        for directory in sorted(record["dirs"], key=len, reverse=True):
            try:
                os.rmdir(self.paths.pod(directory))
            except OSError:  # not empty (someone else's files) or already gone: leave it
                pass
        for entry in record["files"].values():
            if entry.get("original"):
                try:
                    os.unlink(os.path.join(self.originals, entry["original"]))
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(self.originals)
        except OSError:
            pass
        try:
            os.unlink(self.record_path)
        except FileNotFoundError:
            pass
        return report


def _read_or_none(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _owned_by_root_with(path: str, mode: int) -> bool:
    st = os.lstat(path)
    owner = 0 if os.geteuid() == 0 else os.geteuid()
    return st.st_uid == owner and (st.st_mode & 0o7777) == mode


def _missing_dirs(host_dir: str, paths: HostPaths) -> List[str]:
    """The directories above and including ``host_dir`` that do not exist yet, outermost first."""
    missing: List[str] = []
    current = host_dir
    while current != "/" and not os.path.isdir(paths.pod(current)):
        missing.append(current)
        current = os.path.dirname(current)
    return list(reversed(missing))


def _write_file(path: str, data: bytes, mode: int) -> None:
    """Atomically: a temp file beside it, root-owned (when we are root), ``mode``, fsync'd, renamed over it."""
    temp = "{}.nvdocker-tmp.{}".format(path, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if os.geteuid() == 0:
                os.fchown(handle.fileno(), 0, 0)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


# -- the agent ----------------------------------------------------------------------------------------------


class Log:
    """One line per event: a JSON object with ``--json``, else ``node-agent: event: text``."""

    def __init__(self, as_json: bool, stream: Optional[TextIO] = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def __call__(self, event: str, message: str, **data: Any) -> None:
        if self.as_json:
            # compact, one object per line, like the error object (cli/output.py json_lines)
            line = json.dumps(dict({"event": event, "message": message}, **data), sort_keys=True, default=str,
                              separators=(",", ":"), ensure_ascii=False)
        else:
            line = "node-agent: {}: {}".format(event, message)
        self.stream.write(line + "\n")
        self.stream.flush()


class Stop:
    """Set by SIGTERM/SIGINT (installed by :meth:`install`); :meth:`wait` blocks until then."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None

    def install(self) -> None:
        def handler(signum, _frame):
            self.signal = signum
            self.event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait(self) -> None:
        while not self.event.wait(3600):
            pass


class NodeAgent:
    def __init__(self, options: AgentOptions, log: Log, ctx: Optional[Context] = None) -> None:
        options.check()
        self.options = options
        self.log = log
        self.paths = HostPaths(options.host_root)
        self.ctx = ctx or make_context(options)
        self.engine = engines.get(options.engine)
        self.files = HostFiles(self.ctx, self.paths)

    @property
    def config(self) -> str:
        """The config as this process opens it."""
        return self.paths.pod(self.options.config_path)

    def setup(self) -> Any:
        """Copy, install, apply, verify, write the readiness file. Returns the install Result."""
        from nvdocker_setup import operations
        from nvdocker_setup.core.plan import InstallRequest

        options = self.options
        check_launcher(options)
        os.makedirs(self.ctx.state_dir, mode=0o700, exist_ok=True)
        copied = self.files.copy(source_files(options))
        self.log("files", "{} file(s) copied to {}, {} unchanged".format(
            len(copied.copied), options.install_dir, len(copied.unchanged)),
            copied=copied.copied, unchanged=len(copied.unchanged))
        request = InstallRequest(runtime_name=options.runtime_name, runtime_path=options.runtime_path,
                                 set_default=options.set_default, enable_cdi=options.cdi)
        result = operations.install(self.ctx, request, config=self.config, apply_options=apply_options(options),
                                    engine=self.engine)
        self.log("install", "{} {}; apply: {}".format(
            result.config, "changed" if result.changed else "unchanged",
            result.apply.method if result.apply is not None else "none"), result=result.to_dict())
        ready = options.ready_file
        os.makedirs(os.path.dirname(ready) or ".", exist_ok=True)
        with open(ready, "w") as handle:
            handle.write(json.dumps({"config": options.config_path, "runtime": options.runtime_name,
                                     "runtime_path": options.runtime_path}) + "\n")
        self.log("ready", "wrote " + ready)
        return result

    def teardown(self) -> Optional[Any]:
        """Undo: readiness file, our install (only when the records say it is ours), the files."""
        from nvdocker_setup import operations

        options = self.options
        try:
            os.unlink(options.ready_file)
        except FileNotFoundError:
            pass
        result = None
        shown = operations.show(self.ctx, options.runtime_name, config=self.config, engine=self.engine)
        if shown.installed_by_us:
            result = operations.uninstall(self.ctx, options.runtime_name, config=self.config,
                                          apply_options=apply_options(options), engine=self.engine)
            self.log("uninstall", "{} {}; apply: {}".format(
                result.config, "restored" if result.changed else "unchanged",
                result.apply.method if result.apply is not None else "none"), result=result.to_dict())
        else:
            self.log("uninstall", "no install record of runtimes.{} in {}: nothing to undo".format(
                options.runtime_name, self.config))
        undone = self.files.undo()
        self.log("files", "{} file(s) removed, {} restored".format(len(undone.removed), len(undone.restored)),
                 removed=undone.removed, restored=undone.restored)
        return result

    def run(self, stop: Stop) -> int:
        """setup, wait for the stop signal, teardown. Errors propagate (the CLI renders them)."""
        try:
            self.setup()
        except BaseException:
            if stop.event.is_set():  # stopped while setting up: leave the node as it was
                self.teardown()
            raise
        if not stop.event.is_set():
            stop.wait()
        self.log("stop", "signal {}: undoing".format(stop.signal))
        self.teardown()
        self.log("exit", "done")
        return 0
