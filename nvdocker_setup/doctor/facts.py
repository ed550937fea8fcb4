"""Facts about the host that several checks share, each computed once and only when asked.

Every fact goes through the injected :class:`~nvdocker_setup.context.Context` (``ctx.host_path``,
``ctx.run``, ``ctx.which``, ``ctx.env``) and through the same adapters install uses, so a check
sees exactly what install would see, and tests point all of it at a simulated host.

A fact that cannot be computed stores its exception; every later request re-raises it. The
``require_*`` accessors turn the usual failures into :class:`SkipCheck` with a pointer to the check
that reports the failure itself, so one root cause shows up as one failure.
"""

import os
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from nvdocker_setup.adapters.hostfs import process_environ, read_text
from nvdocker_setup.context import Context
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME, RUNTIME_BINARY, SYSTEMD_DEFAULT_PATH
from nvdocker_setup.doctor.checks import SkipCheck
from nvdocker_setup.doctor.parsers import (
    FlagSource,
    parse_env_file,
    parse_flags,
    parse_toml_subset,
    parse_unit_execstart,
    version_tuple,
)

#: Environment variable naming the driver root (below ``--driver-root``).
DRIVER_ROOT_ENV = "NVDOCKER_DRIVER_ROOT"
#: Our prestart hook's executable name.
HOOK_BINARY = "nvdocker-runtime-hook"
#: The container image of the opt-in smoke test (it must already be on the daemon: nothing is pulled).
DEFAULT_SMOKE_IMAGE = "busybox:latest"
#: NVIDIA's toolkit configuration (our hook drives nvidia-container-cli, which reads it too).
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
TOOLKIT_CONFIG_ENV = "NVIDIA_CTK_CONFIG_FILE_PATH"
#: systemd's default PATH for services, which is dockerd's unless the unit sets another.
SERVICE_PATH = SYSTEMD_DEFAULT_PATH

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/lib/systemd/system", "/usr/lib/systemd/system")
UNIT_NAME = "docker.service"
#: Files whose variables the old init scripts and RHEL's unit pass to dockerd.
ENV_FILES = ("/etc/sysconfig/docker", "/etc/default/docker")
#: Where the Docker packages (docker.io, docker-ce, moby-engine) and the snap put dockerd.
DOCKERD_PATHS = ("/usr/bin/dockerd", "/usr/sbin/dockerd", "/usr/local/bin/dockerd", "/snap/bin/docker")
#: Unit names a Docker install provides (the socket unit alone starts dockerd on demand).
DOCKER_UNITS = ("docker.service", "docker.socket", "snap.docker.dockerd.service")
#: How to install Docker Engine, for hints (Debian/Ubuntu, Fedora/RHEL, Docker's own packages).
INSTALL_DOCKER = ("install Docker Engine: `apt-get install docker.io` (Debian, Ubuntu), `dnf install moby-engine` "
                  "(Fedora), or Docker's own docker-ce packages (https://docs.docker.com/engine/install/)")
#: NVIDIA's runtime executables (nvidia-ctk writes runtimes.nvidia with a bare name).
NVIDIA_RUNTIMES = ("nvidia-container-runtime", "nvidia-container-runtime.cdi", "nvidia-container-runtime.legacy")
#: How to get NVIDIA's runtime back, for hints.
INSTALL_NVIDIA_TOOLKIT = ("install NVIDIA's package nvidia-container-toolkit, which provides it "
                          "(`apt-get install nvidia-container-toolkit` or `dnf install nvidia-container-toolkit`, "
                          "from NVIDIA's repository)")
#: The name install suggests for our runtime beside an entry that is not ours.
BESIDE_NAME = "nvdocker"

@dataclass
class DoctorOptions:
    config: Optional[str] = None
    runtime_name: str = DEFAULT_RUNTIME_NAME
    #: None: ``$NVDOCKER_DRIVER_ROOT``, else the context's root.
    driver_root: Optional[str] = None
    smoke: bool = False
    smoke_image: str = DEFAULT_SMOKE_IMAGE
    api_timeout: float = 5.0
    command_timeout: float = 10.0
    smoke_timeout: float = 60.0
    #: Whose config and daemon to check: "docker" or "containerd" (``doctor --engine``).
    engine: str = "docker"


class Facts:
    """The host as the checks see it; every attribute is computed on first use and cached."""

    def __init__(self, ctx: Context, options: Optional[DoctorOptions] = None) -> None:
        self.ctx = ctx
        self.options = options or DoctorOptions()
        self._memo: Dict[str, Tuple[bool, Any]] = {}

    def memo(self, name: str, compute: Callable[[], Any]) -> Any:
        if name not in self._memo:
            try:
                self._memo[name] = (True, compute())
            except Exception as exc:  # kept and re-raised for every check that asks
                self._memo[name] = (False, exc)
        good, value = self._memo[name]
        if good:
            return value
        raise value

    @property
    def engine_name(self) -> str:
        """The engine whose config and daemon are checked (which checks run: ``Check.engines``)."""
        return self.options.engine

    def opted_in(self, check_id: str) -> bool:
        return self.options.smoke

    @property
    def runtime_name(self) -> str:
        return self.options.runtime_name

    # -- paths ---------------------------------------------------------------------------------

    @property
    def driver_root(self) -> str:
        """--driver-root, else $NVDOCKER_DRIVER_ROOT, else the runtime's driver-root, else the root."""
        return self.driver_root_source()[0]

    def driver_root_source(self) -> Tuple[str, str]:
        if self.options.driver_root:
            return os.path.abspath(self.options.driver_root), "--driver-root"
        if self.ctx.env.get(DRIVER_ROOT_ENV):
            return os.path.abspath(self.ctx.env[DRIVER_ROOT_ENV]), DRIVER_ROOT_ENV
        try:
            loaded = self.runtime_config()
        except Exception:
            loaded = None
        if loaded is not None:
            source, values = loaded
            configured = values.get("driver-root")
            if configured and configured.startswith("/"):
                return os.path.abspath(self.ctx.host_path(configured)), "driver-root in " + source
        return os.path.abspath(self.ctx.root or "/"), "the host root"

    def host_file(self, path: str) -> str:
        """A host path (``/etc/sysconfig/docker``) as this context opens it."""
        return self.ctx.host_path(path)

    def read_host_text(self, path: str) -> Optional[str]:
        return read_text(self.host_file(path))

    # -- daemon.json ---------------------------------------------------------------------------

    def location(self):
        """Where daemon.json is and why (locate_config: --config, env, unit, /proc, rootless, snap)."""
        from nvdocker_setup.adapters.locate import locate_config

        return self.memo("location", lambda: locate_config(self.ctx, self.options.config))

    def detected_location(self):
        """Where the daemon's file is by detection alone (ignoring --config and the env variable)."""
        from nvdocker_setup.adapters.locate import ENV_VAR, locate_config

        def compute():
            if self.options.config is None and not self.ctx.env.get(ENV_VAR, "").strip():
                return self.location()
            env = {key: value for key, value in self.ctx.env.items() if key != ENV_VAR}
            from dataclasses import replace

            return locate_config(replace(self.ctx, env=env), None)

        return self.memo("detected-location", compute)

    def open_path(self, location) -> str:
        """The path to open for a location: given paths as they are, discovered ones under the root."""
        if location.rule in ("option", "env"):
            return os.path.abspath(location.path)
        return self.ctx.host_path(location.path)

    @property
    def config_path(self) -> str:
        return self.open_path(self.location())

    def snapshot(self):
        from nvdocker_setup.adapters.files import read_snapshot

        return self.memo("snapshot", lambda: read_snapshot(self.config_path))

    def require_snapshot(self):
        """The file as read; :class:`SkipCheck` when it cannot be read (config-parse says why)."""
        from nvdocker_setup.errors import NvdockerError

        try:
            return self.snapshot()
        except NvdockerError:
            raise SkipCheck("daemon.json cannot be read (see config-parse)") from None

    def document(self):
        """The parsed file (strict reader), None when it does not exist."""
        from nvdocker_setup.core.jsondoc import JsonDocument

        def compute():
            snapshot = self.snapshot()
            if not snapshot.exists:
                return None
            return JsonDocument.parse(snapshot.data, snapshot.path)

        return self.memo("document", compute)

    def config(self) -> Dict[str, Any]:
        """daemon.json's value: ``{}`` when missing or empty; raises when unreadable or invalid."""
        document = self.document()
        return document.value if document is not None else {}

    def require_config(self) -> Dict[str, Any]:
        from nvdocker_setup.errors import NvdockerError

        try:
            return self.config()
        except NvdockerError:
            raise SkipCheck("daemon.json cannot be read or parsed (see config-parse)") from None

    def runtime_entry(self, name: Optional[str] = None) -> Optional[Any]:
        runtimes = self.require_config().get("runtimes")
        if not isinstance(runtimes, dict):
            return None
        return runtimes.get(name or self.runtime_name)

    def install_record(self, name: Optional[str] = None):
        """Our install record of runtime ``name`` in this daemon.json (None: we did not install it,
        or the state cannot be read, which config-install-record reports)."""

        def compute():
            from nvdocker_setup.adapters import statedir
            from nvdocker_setup.adapters.state import StateStore

            if not os.path.exists(self.ctx.state_path):
                return {}
            uids = statedir.trusted_uids(self.ctx.euid)
            statedir.check_state_dir(self.ctx.state_dir, uids, create=False)
            snapshot = self.ctd_snapshot() if self.engine_name == "containerd" else self.snapshot()
            return StateStore(self.ctx.state_path, trusted_uids=uids).load().records(snapshot.real_path)

        try:
            records = self.memo("install-records", compute)
        except Exception:
            return None
        return records.get(name or self.runtime_name)

    def entry_owner(self, name: Optional[str] = None) -> Optional[str]:
        """Who made ``runtimes.<name>``: ``ours`` (our install record, or our runtime binary),
        ``nvidia`` (NVIDIA's nvidia-container-runtime, as nvidia-ctk writes it), ``snap`` (the docker
        snap's own entry), ``other``; None when there is no such entry (or the file is unreadable)."""
        try:
            entry = self.runtime_entry(name)
        except SkipCheck:
            return None
        if entry is None:
            return None
        if self.install_record(name) is not None:
            return "ours"
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path:
            return "other"
        if os.path.basename(path) == RUNTIME_BINARY:
            return "ours"
        if path.startswith("/snap/"):
            return "snap"
        if os.path.basename(path) in NVIDIA_RUNTIMES:
            return "nvidia"
        return "other"

    def install_command(self, extra: str = "") -> str:
        """``nvdocker-setup install`` as this host needs it: beside an entry we did not make under
        another name (install refuses to replace it: exit 7, runtime-entry-foreign), with
        ``--config`` for a snap or rootless file or one given with --config."""
        command = "nvdocker-setup install"
        name = self.runtime_name
        owner = self.entry_owner()
        try:
            rule = self.location().rule
        except Exception:
            rule = "default"
        if owner in ("nvidia", "snap", "other") or (rule == "snap" and name == "nvidia"):
            name = BESIDE_NAME if name != BESIDE_NAME else name + "2"
        if name != DEFAULT_RUNTIME_NAME:
            command += " --runtime-name " + name
        if self.options.config:
            command += " --config " + self.options.config
        elif rule in ("snap", "rootless"):
            command += " --config " + self.location().path
        return command + extra

    def snap_advice(self) -> str:
        """The one piece of advice every check gives about the docker snap."""
        return (
            "leave runtimes.nvidia to the docker snap (its nvidia-support service rewrites that entry at every "
            "start) and put nvdocker-setup's runtime beside it: `{}`; if the snap's confined dockerd cannot run "
            "it, install Docker from packages (docker.io or docker-ce) instead of the snap".format(
                self.install_command()))

    def docker_installation(self) -> Tuple[Optional[bool], List[str]]:
        """(is Docker Engine installed here, the evidence): a dockerd binary, a docker unit, the snap,
        a dockerd process or its socket. None when DOCKER_HOST points at another machine."""

        def compute():
            host = self.ctx.env.get("DOCKER_HOST", "")
            if host and not host.startswith("unix://"):
                return None, ["DOCKER_HOST is {}".format(host)]
            evidence: List[str] = []
            found = self.ctx.which("dockerd")
            if found is not None:
                evidence.append("dockerd at " + found)
            for path in DOCKERD_PATHS:
                if not found and os.path.isfile(self.host_file(path)):
                    evidence.append("dockerd at " + path)
                    break
            for directory in UNIT_DIRS:
                units = [unit for unit in DOCKER_UNITS if os.path.isfile(self.host_file(os.path.join(directory, unit)))]
                if units:
                    evidence.append("{} in {}".format(units[0], directory))
                    break
            if os.path.isdir(self.host_file("/var/snap/docker")) or os.path.isdir(self.host_file("/snap/docker")):
                evidence.append("the docker snap")
            try:
                if self.dockerd_processes():
                    evidence.append("a dockerd process")
            except Exception:
                pass
            if os.path.exists(self.socket_path):
                evidence.append("the socket " + self.socket_path)
            return bool(evidence), evidence

        return self.memo("docker-installation", compute)

    # -- containerd (doctor --engine containerd) --------------------------------------------------
    #
    # Everything goes through the containerd engine's own objects (locate, binary, the document,
    # the CRI Status client), as install sees it; each is asked once.

    def containerd_engine(self):
        from nvdocker_setup import engines

        return engines.get("containerd")

    def ctd_location(self):
        """Where config.toml is and why (``--config`` > env > unit > running containerd > default),
        found without install's refusal of regenerated files: ``ctd_regenerated`` says so."""
        from nvdocker_setup.engines.containerd.locate import find_config

        return self.memo("ctd-location", lambda: find_config(self.ctx, self.options.config))

    def ctd_regenerated(self):
        """The Conflict install raises for this file (k3s/RKE2's rendered file, dockerd's own
        containerd.toml), None when the file is ours to edit."""
        from nvdocker_setup.engines.containerd.locate import refuse_regenerated
        from nvdocker_setup.errors import Conflict

        try:
            refuse_regenerated(self.ctd_location().path)
        except Conflict as conflict:
            return conflict
        return None

    @property
    def ctd_config_path(self) -> str:
        return self.open_path(self.ctd_location())

    def ctd_installed(self):
        """The containerd that reads the file (:class:`engines.containerd.binary.Installed`)."""
        return self.memo("ctd-installed", lambda: self.containerd_engine().installed(self.ctx))

    def ctd_snapshot(self):
        from nvdocker_setup.adapters.files import read_snapshot

        return self.memo("ctd-snapshot", lambda: read_snapshot(self.ctd_config_path))

    def ctd_document(self):
        """The parsed config.toml (containerd's defaults for a missing or empty file); raises
        ConfigReadError (line and column) for a file containerd would refuse."""

        def compute():
            from nvdocker_setup.engines.containerd.config import ContainerdDocument

            snapshot = self.ctd_snapshot()
            version = self.ctd_installed().schema_version  # what a missing or empty file means to it
            if not snapshot.exists:
                return ContainerdDocument.empty(snapshot.path, version)
            return ContainerdDocument.parse(snapshot.data, snapshot.path, empty_version=version)

        return self.memo("ctd-document", compute)

    def require_ctd_document(self):
        from nvdocker_setup.errors import NvdockerError

        try:
            return self.ctd_document()
        except NvdockerError:
            raise SkipCheck("config.toml cannot be read or parsed (see containerd-config-parse)") from None

    def ctd_entry(self, name: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """``runtimes.<name>`` of the CRI plugin in config.toml (None: there is none)."""
        return self.containerd_engine().entry(self.require_ctd_document().value, name or self.runtime_name)

    def ctd_entry_owner(self, name: Optional[str] = None) -> Optional[str]:
        """``ours`` (our install record, or our runtime binary), ``nvidia`` (NVIDIA's runtime),
        ``other``; None when there is no such handler."""
        entry = self.ctd_entry(name)
        if entry is None:
            return None
        if self.install_record(name) is not None:
            return "ours"
        binary = ctd_binary_name(entry)
        if binary and os.path.basename(binary) == RUNTIME_BINARY:
            return "ours"
        if binary and os.path.basename(binary) in NVIDIA_RUNTIMES:
            return "nvidia"
        return "other"

    @property
    def ctd_socket(self) -> str:
        """The gRPC socket config.toml makes containerd listen on (containerd's default when unset)."""
        from nvdocker_setup.engines.containerd.apply import socket_of
        from nvdocker_setup.errors import NvdockerError

        try:
            value = self.ctd_document().value
        except NvdockerError:
            value = {}
        return self.ctx.host_path(socket_of(value))

    def cri_status(self):
        """``RuntimeService/Status`` (verbose) on that socket: the live CRI config (asked once)."""
        from nvdocker_setup.engines.containerd import cri

        return self.memo("cri-status", lambda: cri.status(self.ctd_socket, self.options.api_timeout))

    def require_cri_status(self):
        from nvdocker_setup.errors import NvdockerError

        try:
            return self.cri_status()
        except NvdockerError:
            raise SkipCheck("containerd's CRI Status cannot be read (see containerd-reachable)") from None

    def ctd_install_command(self, extra: str = "") -> str:
        """``nvdocker-setup install --engine containerd`` as this host needs it (beside a handler we
        did not make, under another name)."""
        command = "nvdocker-setup install --engine containerd"
        name = self.runtime_name
        try:
            owner = self.ctd_entry_owner()
        except Exception:
            owner = None
        if owner in ("nvidia", "other"):
            name = BESIDE_NAME if name != BESIDE_NAME else name + "2"
        if name != DEFAULT_RUNTIME_NAME:
            command += " --runtime-name " + name
        if self.options.config:
            command += " --config " + self.options.config
        return command + extra

    def containerd_processes(self):
        from nvdocker_setup.engines.containerd.locate import system_containerds

        return self.memo("containerd-processes", lambda: system_containerds(self.ctx))

    def engine_path_env(self) -> Tuple[str, str]:
        """(PATH the engine's daemon searches, where that PATH comes from): dockerd's, or containerd's
        (whose shims run the runtime handlers with containerd's environment)."""
        if self.engine_name != "containerd":
            return self.dockerd_path_env()
        try:
            procs = self.containerd_processes()
        except Exception:
            procs = []
        if len(procs) == 1:
            environ = self.process_environ(procs[0].pid)
            if environ is not None:
                return environ.get("PATH", SERVICE_PATH), "the environment of containerd (pid {})".format(procs[0].pid)
        return SERVICE_PATH, "systemd's default service PATH (no running containerd to ask)"

    def ctd_restart_command(self, action: str = "restart") -> str:
        """How to restart (or start) this host's containerd, as hint text."""
        if os.path.isdir(self.ctx.host_path("/run/systemd/system")):
            return "`systemctl {} containerd`".format(action)
        return "{} containerd the way it is run on this host (e.g. `service containerd {}`)".format(action, action)

    # -- the running dockerd -------------------------------------------------------------------

    def dockerd_processes(self):
        from nvdocker_setup.adapters.locate import dockerd_processes

        return self.memo("dockerd-processes", lambda: dockerd_processes(self.ctx))

    @property
    def socket_path(self) -> str:
        if self.ctx.docker_socket:
            return self.ctx.docker_socket
        from nvdocker_setup.adapters.docker_api import default_socket

        try:
            rootless = self.location().rule == "rootless"
        except Exception:
            rootless = False
        return default_socket(self.ctx.env, rootless=rootless, euid=self.ctx.euid)

    def api(self):
        from nvdocker_setup.adapters.docker_api import DockerAPI

        # Each call is bounded in total by api_timeout; once one has timed out, the later ones
        # (/version, the peer pid) fail at once, so a hung dockerd costs one api_timeout per run.
        return self.memo(
            "api", lambda: DockerAPI(self.socket_path, timeout=self.options.api_timeout, remember_timeout=True)
        )

    def info(self) -> Dict[str, Any]:
        return self.memo("info", lambda: self.api().info())

    def version(self) -> Dict[str, Any]:
        return self.memo("version", lambda: self.api().version())

    def require_info(self) -> Dict[str, Any]:
        from nvdocker_setup.adapters.docker_api import DockerUnreachable

        try:
            return self.info()
        except DockerUnreachable:
            raise SkipCheck("dockerd is not reachable at {} (see daemon-reachable)".format(self.socket_path)) from None

    def server_version(self) -> Tuple[int, ...]:
        """dockerd's version as numbers, () when unknown."""
        from nvdocker_setup.adapters.docker_api import DockerUnreachable

        try:
            return version_tuple(str(self.version().get("Version", "")))
        except DockerUnreachable:
            return ()

    def dockerd(self):
        """The :class:`DockerdProcess` that serves our socket (None: not running, or not visible)."""

        def compute():
            procs = self.dockerd_processes()
            pid = None
            try:
                pid = self.api().peer_pid()
            except Exception:
                pid = None
            for proc in procs:
                if proc.pid == pid:
                    return proc
            try:
                rootless = self.location().rule == "rootless"
            except Exception:
                rootless = False
            if rootless:
                mine = [proc for proc in procs if proc.rootless and proc.uid == self.ctx.euid]
            else:
                mine = [proc for proc in procs if proc.uid == 0 and not proc.rootless]
            return mine[0] if len(mine) == 1 else None

        return self.memo("dockerd", compute)

    def process_environ(self, pid: int) -> Optional[Dict[str, str]]:
        return process_environ(self.ctx.host_path("/proc"), pid)

    def dockerd_path_env(self) -> Tuple[str, str]:
        """(PATH dockerd searches, where that PATH comes from)."""
        proc = self.dockerd()
        if proc is not None:
            environ = self.process_environ(proc.pid)
            if environ is not None:
                return environ.get("PATH", SERVICE_PATH), "the environment of dockerd (pid {})".format(proc.pid)
        return SERVICE_PATH, "systemd's default service PATH (no running dockerd to ask)"

    def which_in(self, name: str, search: str) -> Optional[str]:
        """``name`` on ``search`` (a PATH string) as host paths, looked up under the root."""
        for directory in search.split(":"):
            if not directory:
                continue
            candidate = os.path.join(directory, name)
            mapped = self.ctx.host_path(candidate)
            if os.path.isfile(mapped) and os.access(mapped, os.X_OK):
                return candidate
        return None

    # -- how dockerd is started ----------------------------------------------------------------

    def flag_sources(self) -> List[FlagSource]:
        """dockerd flags from the running process, the unit (systemctl, else unit files) and env files."""

        def compute():
            sources: List[FlagSource] = []
            proc = self.dockerd()
            if proc is not None:
                sources.append(FlagSource("the running dockerd (pid {})".format(proc.pid), "process", proc.argv))
            from_systemctl = self._systemctl_execstart()
            if from_systemctl:
                for argv in from_systemctl:
                    sources.append(FlagSource("`systemctl show {} -p ExecStart`".format(UNIT_NAME), "systemd", argv))
            else:
                unit = self._unit_file_execstart()
                if unit is not None:
                    sources.append(FlagSource(unit[0], "unit-file", unit[1]))
            for path in ENV_FILES:
                text = self.read_host_text(path)
                if text is None:
                    continue
                words: List[str] = []
                for value in parse_env_file(text).values():
                    words.extend(value.split())
                if words:
                    sources.append(FlagSource(path, "env-file", tuple(words)))
            return sources

        return self.memo("flag-sources", compute)

    def _systemctl_execstart(self) -> List[Tuple[str, ...]]:
        from nvdocker_setup.adapters.locate import parse_execstart

        systemctl = self.ctx.which("systemctl")
        if systemctl is None:
            return []
        try:
            result = self.ctx.run([systemctl, "show", UNIT_NAME, "-p", "ExecStart", "--value"],
                                  timeout=self.options.command_timeout, env=dict(self.ctx.env))
        except (OSError, subprocess.SubprocessError):
            return []
        if result.returncode != 0 or not result.stdout:
            return []
        return parse_execstart(result.stdout)

    def _unit_file_execstart(self) -> Optional[Tuple[str, Tuple[str, ...]]]:
        main = None
        for directory in UNIT_DIRS:
            candidate = os.path.join(directory, UNIT_NAME)
            text = self.read_host_text(candidate)
            if text is not None:
                main = (candidate, text)
                break
        if main is None:
            return None
        texts = [main[1]]
        names = [main[0]]
        dropins: Dict[str, str] = {}
        for directory in reversed(UNIT_DIRS):  # a drop-in in /etc overrides one of the same name in /lib
            dropin_dir = self.ctx.host_path(os.path.join(directory, UNIT_NAME + ".d"))
            try:
                entries = os.listdir(dropin_dir)
            except OSError:
                continue
            for entry in entries:
                if entry.endswith(".conf"):
                    dropins[entry] = os.path.join(directory, UNIT_NAME + ".d", entry)
        for entry in sorted(dropins):
            text = self.read_host_text(dropins[entry])
            if text is not None:
                texts.append(text)
                names.append(dropins[entry])
        argv = parse_unit_execstart(texts)
        if argv is None:
            return None
        return " + ".join(names), argv

    # -- our runtime's configuration ---------------------------------------------------------------

    def runtime_config(self) -> Optional[Tuple[str, Dict[str, str]]]:
        """(path, [runtime] values) of /etc/nvdocker/runtime.conf, None when there is none; a
        :class:`GpuSetupError` when the runtime itself would refuse it (its own parser)."""

        def compute():
            from nvdocker_setup.runtime.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, SECTION, parse_ini

            path = self.ctx.env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
            text = self.read_host_text(path)
            if text is None:
                return None
            return path, parse_ini(text, path).get(SECTION, {})

        return self.memo("runtime-config", compute)

    # -- the NVIDIA toolkit configuration ----------------------------------------------------------

    def toolkit_config(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """(path, values) of config.toml, None when there is none."""

        def compute():
            path = self.ctx.env.get(TOOLKIT_CONFIG_ENV) or TOOLKIT_CONFIG
            text = self.read_host_text(path)
            if text is None:
                return None
            return path, parse_toml_subset(text)

        return self.memo("toolkit-config", compute)

    # -- cgroups ---------------------------------------------------------------------------------

    def _ctd_cgroup_driver(self) -> Tuple[Optional[str], str]:
        """containerd's runc handlers choose it each: ``SystemdCgroup`` of our handler in config.toml."""
        try:
            entry = self.ctd_entry()
        except Exception:
            entry = None
        options = entry.get("options") if isinstance(entry, dict) else None
        if isinstance(options, dict) and "SystemdCgroup" in options:
            driver = "systemd" if options.get("SystemdCgroup") is True else "cgroupfs"
            return driver, "SystemdCgroup of runtimes.{} in config.toml".format(self.runtime_name)
        return "cgroupfs", "containerd's runc default (SystemdCgroup = false)"

    def cgroup_version(self) -> Tuple[str, str]:
        """("1" or "2", where it was learnt)."""
        if self.engine_name != "containerd":
            try:
                version = self.info().get("CgroupVersion")
                if version:
                    return str(version), "docker info"
            except Exception:
                pass
        if os.path.exists(self.ctx.host_path("/sys/fs/cgroup/cgroup.controllers")):
            return "2", "/sys/fs/cgroup/cgroup.controllers exists"
        return "1", "/sys/fs/cgroup is not a unified (v2) hierarchy"

    def cgroup_driver(self) -> Tuple[Optional[str], str]:
        """(``systemd``/``cgroupfs``/None, where it was learnt)."""
        if self.engine_name == "containerd":
            return self._ctd_cgroup_driver()
        try:
            driver = self.info().get("CgroupDriver")
            if driver:
                return str(driver), "docker info"
        except Exception:
            pass
        try:
            exec_opts = self.config().get("exec-opts")
        except Exception:
            exec_opts = None
        if isinstance(exec_opts, list):
            for option in exec_opts:
                if isinstance(option, str) and option.replace(" ", "").lower().startswith("native.cgroupdriver="):
                    return option.split("=", 1)[1].strip(), "exec-opts in daemon.json"
        for source in self.flag_sources():
            for flag in parse_flags(source.argv, ()):
                if flag.name == "exec-opt" and flag.value and flag.value.startswith("native.cgroupdriver="):
                    return flag.value.split("=", 1)[1], "--exec-opt in " + source.source
        version, _ = self.cgroup_version()
        if version == "2" and os.path.isdir(self.ctx.host_path("/run/systemd/system")):
            return "systemd", "dockerd's default on cgroup v2 with systemd"
        return "cgroupfs", "dockerd's default"

    # -- the driver ------------------------------------------------------------------------------

    def driver(self):
        """The driver under the driver root (``nvdocker_setup.driver.discovery.discover``)."""
        from nvdocker_setup.driver.discovery import discover

        return self.memo("driver", lambda: discover(self.driver_root, self.mps_pipe_dir()))

    def mps_pipe_dir(self) -> Optional[str]:
        """The MPS pipe directory the runtime uses: runtime.conf's ``mps-pipe-directory``, else the
        default (the engine's CUDA_MPS_PIPE_DIRECTORY is not visible from here)."""
        from nvdocker_setup.runtime.config import MPS_PIPE_DIR_KEY

        loaded = self.runtime_config()
        value = loaded[1].get(MPS_PIPE_DIR_KEY) if loaded else None
        return value or None

    def require_driver(self):
        from nvdocker_setup.driver.errors import GpuSetupError

        try:
            return self.driver()
        except GpuSetupError:
            raise SkipCheck("no NVIDIA driver is loaded (see driver-kernel-module)") from None

    # -- binaries --------------------------------------------------------------------------------

    def our_binary(self, name: str) -> Tuple[str, str]:
        """(path to show, path to open) of one of our executables: on the context's PATH (a path on
        this machine), else where the package installs it (a host path)."""
        found = self.ctx.which(name)
        if found is not None:
            return found, found
        return "/usr/bin/" + name, self.host_file("/usr/bin/" + name)

    @property
    def runtime_binary_name(self) -> str:
        return RUNTIME_BINARY

    # -- how to reload or restart this dockerd ---------------------------------------------------------

    def service_command(self, action: str) -> str:
        """How to start, reload or restart this host's dockerd, as hint text (commands in backticks).

        The service manager is the one install would use (``adapters.service.detect``).
        """

        def compute():
            from nvdocker_setup.adapters.service import detect

            if self.ctx.service is not None:
                return self.ctx.service
            try:
                rule = self.location().rule
            except Exception:
                rule = "default"
            return detect(self.ctx, "auto", rule, self.socket_path)

        try:
            manager = self.memo("service", compute)
        except Exception:
            manager = None
        name = getattr(manager, "name", "signal")
        if name == "systemd":
            return "`systemctl {} docker`".format(action)
        if name == "systemd-user":
            return "`systemctl --user {} docker`".format(action)
        if name == "snap":
            if action == "reload":
                return "`kill -HUP $(systemctl show -p MainPID --value snap.docker.dockerd)`"
            return "`snap {} docker.dockerd`".format(action)
        if name == "signal":
            if action == "reload":
                try:
                    proc = self.dockerd()
                except Exception:
                    proc = None
                return "`kill -HUP {}`".format(proc.pid if proc is not None else "<dockerd pid>")
            return "{} dockerd the way it is run on this host (e.g. `service docker {}`)".format(action, action)
        return "{} dockerd ({})".format(action, manager.describe() if manager is not None else "its service manager")


def ctd_binary_name(entry: Any) -> Optional[str]:
    """``options.BinaryName`` of a containerd runtime handler (None: unset or empty: plain runc)."""
    options = entry.get("options") if isinstance(entry, dict) else None
    binary = options.get("BinaryName") if isinstance(options, dict) else None
    return binary if isinstance(binary, str) and binary else None
