"""Find the daemon.json that dockerd actually reads.

Editing ``/etc/docker/daemon.json`` is useless when the daemon was started with ``--config-file``
elsewhere, runs rootless, or comes from the snap. The rules below are tried in order and the first
that applies wins; :class:`ConfigLocation` records which rule it was so the CLI can explain itself.

Every host access goes through the :class:`~nvdocker_setup.context.Context`: ``/proc``,
``/run`` and ``/var/snap`` are read under ``ctx.host_path()`` and ``systemctl`` runs via
``ctx.run``, so tests use a fake root. Returned paths are host paths (not prefixed by the root).
"""

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from nvdocker_setup.adapters.hostfs import process_environ, read_bytes, read_text
from nvdocker_setup.adapters.hostproc import (
    config_path_problems,
    host_reference,
    in_host_namespaces,
    trusted_uids,
)
from nvdocker_setup.context import Context
from nvdocker_setup.errors import TrustCheckFailed, UsageError

#: Environment variable that names the daemon.json to edit (below --config, above detection).
ENV_VAR = "NVDOCKER_DOCKER_CONFIG"
#: dockerd's built-in default for a rootful daemon.
DEFAULT_CONFIG = "/etc/docker/daemon.json"
#: Directory the docker snap keeps its daemon.json in (``$SNAP_DATA/config``).
SNAP_CONFIG_DIR = "/var/snap/docker/current/config"
SNAP_CONFIG = SNAP_CONFIG_DIR + "/daemon.json"
#: The systemd unit of a rootful, packaged dockerd.
SYSTEMD_UNIT = "docker.service"
#: How long ``systemctl show`` may take before we give up on it and move on.
SYSTEMCTL_TIMEOUT = 10.0
#: How many ancestors to walk when looking for rootlesskit above a dockerd.
_ANCESTOR_LIMIT = 8



@dataclass(frozen=True)
class ConfigLocation:
    """Where daemon.json is, and which rule said so. ``rule`` is a stable id: option, env,
    docker-host, systemd-execstart, running-dockerd, rootless, snap or default."""

    path: str
    rule: str
    reason: str


@dataclass(frozen=True)
class DockerdProcess:
    """A running dockerd as seen in ``/proc`` (doctor reuses this to compare flags)."""

    pid: int
    argv: Tuple[str, ...]
    uid: int
    #: Parent pid, 0 when unknown.
    ppid: int = 0
    #: Host path of the working directory, None when ``/proc/<pid>/cwd`` is unreadable.
    cwd: Optional[str] = None
    #: True when it runs under RootlessKit (``--rootless``, a rootlesskit ancestor or its env).
    rootless: bool = False

    @property
    def config_file(self) -> Optional[str]:
        """The ``--config-file`` argument as given, if any."""
        return config_file_from_argv(self.argv)


def config_file_from_argv(argv: Sequence[str]) -> Optional[str]:
    """Return the last ``--config-file`` value (pflag keeps the last one), or None."""
    found: Optional[str] = None
    args = list(argv)
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg == "--config-file":
            if i + 1 < len(args):
                found = args[i + 1]
            i += 2
            continue
        if arg.startswith("--config-file="):
            found = arg[len("--config-file="):]
        i += 1
    return found or None


def parse_execstart(text: str) -> List[Tuple[str, ...]]:
    """Split ``systemctl show -p ExecStart`` output into one argv per ``argv[]=`` entry.

    systemd prints ``{ path=... ; argv[]=/usr/bin/dockerd -H fd:// ; ignore_errors=no ; ... }``
    and does not quote spaces, so whitespace splitting is the best available.
    """
    argvs: List[Tuple[str, ...]] = []
    for match in re.finditer(r"argv\[\]=(.*?)(?: ;|$)", text, flags=re.MULTILINE):
        words = tuple(match.group(1).split())
        if words and words[-1] == "}":
            words = words[:-1]
        if words:
            argvs.append(words)
    return argvs




def _status_fields(text: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _split_cmdline(raw: bytes) -> Tuple[str, ...]:
    parts = raw.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return tuple(part.decode("utf-8", "surrogateescape") for part in parts)


class _ProcReader:
    """Reads one (possibly fake) /proc; caches comm and parents while walking ancestors."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.proc = ctx.host_path("/proc")

    def entry(self, pid: int, name: str) -> str:
        return os.path.join(self.proc, str(pid), name)

    def pids(self) -> List[int]:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def comm(self, pid: int) -> Optional[str]:
        text = read_text(self.entry(pid, "comm"))
        return None if text is None else text.rstrip("\n")

    def argv(self, pid: int) -> Tuple[str, ...]:
        raw = read_bytes(self.entry(pid, "cmdline"))
        return _split_cmdline(raw) if raw else ()

    def status(self, pid: int) -> Dict[str, str]:
        text = read_text(self.entry(pid, "status"))
        return _status_fields(text) if text is not None else {}

    def uid(self, pid: int, status: Dict[str, str]) -> Optional[int]:
        """The uid from ``status``: real, effective and saved agree for a daemon; where they differ (a
        set-uid program a user started under the name ``containerd`` or ``dockerd``, effective uid 0),
        the real uid, the user's, so it never passes for root's daemon. Falls back to the owner of
        ``/proc/<pid>``."""
        values = status.get("Uid", "").split()
        if len(values) >= 2 and all(value.isdigit() for value in values):
            return int(values[1]) if len(set(values[:3])) == 1 else int(values[0])
        try:
            return os.stat(os.path.join(self.proc, str(pid))).st_uid
        except OSError:
            return None

    def ppid(self, status: Dict[str, str]) -> int:
        value = status.get("PPid", "")
        return int(value) if value.isdigit() else 0

    def cwd(self, pid: int) -> Optional[str]:
        try:
            target = os.readlink(self.entry(pid, "cwd"))
        except OSError:
            return None
        if not os.path.isabs(target) or target.endswith(" (deleted)"):
            return None
        return target

    def has_rootlesskit_env(self, pid: int) -> bool:
        return "ROOTLESSKIT_STATE_DIR" in (process_environ(self.proc, pid) or {})

    def under_rootlesskit(self, ppid: int) -> bool:
        """True when an ancestor is rootlesskit (its re-exec'd child shows up as ``exe``)."""
        seen = set()
        pid = ppid
        for _ in range(_ANCESTOR_LIMIT):
            if pid <= 1 or pid in seen:
                return False
            seen.add(pid)
            argv = self.argv(pid)
            if self.comm(pid) == "rootlesskit" or (
                argv and os.path.basename(argv[0]) == "rootlesskit"
            ):
                return True
            pid = self.ppid(self.status(pid))
        return False


def _is_rootless_flag(argv: Sequence[str]) -> bool:
    return any(arg == "--rootless" or arg == "--rootless=true" for arg in argv[1:])


def dockerd_processes(ctx: Context) -> List[DockerdProcess]:
    """Every process whose ``/proc/<pid>/comm`` is ``dockerd`` (by pid); skips vanished ones."""
    return daemon_processes(ctx, "dockerd")


def daemon_processes(ctx: Context, comm: str) -> List[DockerdProcess]:
    """Every process of this host whose ``/proc/<pid>/comm`` is ``comm`` (by pid): the one home of
    this probe for every engine's daemon (dockerd, containerd).

    Only the host's own processes count: a system daemon must share PID 1's mount and pid namespaces
    (where PID 1's links are unreadable, this process's own) and have ``/`` as its root (a process
    in a container, a chroot or a namespace of its own names paths of another file system in its
    argv and ``exe``); a rootless one (RootlessKit
    gives it a mount namespace of its own) PID 1's pid namespace and ``/``. A process in a nested
    pid namespace (``NSpid`` lists more than one pid) never counts. Where the links cannot be read
    (a caller that is not root looking at root's daemon) the process counts for that caller only,
    which acts with its own rights; for root an unverified process never counts."""
    reader = _ProcReader(ctx)
    found: List[DockerdProcess] = []
    reference: Optional[Tuple[str, str]] = None
    for pid in reader.pids():
        if reader.comm(pid) != comm:
            continue
        argv = reader.argv(pid)
        if not argv:
            continue  # exited between listdir and read, or a kernel thread
        status = reader.status(pid)
        if len(status.get("NSpid", "").split()) > 1:
            continue  # in a container's pid namespace
        uid = reader.uid(pid, status)
        if uid is None:
            continue
        ppid = reader.ppid(status)
        rootless = (
            _is_rootless_flag(argv)
            or reader.has_rootlesskit_env(pid)
            or reader.under_rootlesskit(ppid)
        )
        reference = reference or host_reference(reader.proc)
        host = in_host_namespaces(reader.proc, pid, reference, mount=not (rootless and uid != 0))
        if host is False or (host is None and ctx.euid == 0):
            continue
        found.append(
            DockerdProcess(
                pid=pid, argv=argv, uid=uid, ppid=ppid, cwd=reader.cwd(pid), rootless=rootless
            )
        )
    return found


def _from_explicit(ctx: Context, explicit: Optional[str]) -> Optional[ConfigLocation]:
    if explicit is None:
        return None
    if not explicit.strip():
        raise UsageError("--config was given an empty path", hint="Pass the daemon.json to edit.")
    path = os.path.abspath(explicit)
    return ConfigLocation(path, "option", "given with --config")


def _from_env(ctx: Context) -> Optional[ConfigLocation]:
    value = ctx.env.get(ENV_VAR, "").strip()
    if not value:
        return None
    return ConfigLocation(os.path.abspath(value), "env", "{} is set".format(ENV_VAR))


def _from_systemd(ctx: Context) -> Optional[ConfigLocation]:
    """``--config-file`` in docker.service's ExecStart; any failure means "no answer"."""
    systemctl = ctx.which("systemctl")
    if systemctl is None:
        return None
    argv = [systemctl, "show", SYSTEMD_UNIT, "-p", "ExecStart", "--value"]
    try:
        result = ctx.run(argv, timeout=SYSTEMCTL_TIMEOUT, env=dict(ctx.env))
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 or not result.stdout:
        return None
    for words in parse_execstart(result.stdout):
        value = config_file_from_argv(words)
        if value is None:
            continue
        if os.path.isabs(value):
            return ConfigLocation(
                os.path.normpath(value),
                "systemd-execstart",
                "--config-file in {}'s ExecStart".format(SYSTEMD_UNIT),
            )
        # systemd starts system services in / unless WorkingDirectory= says otherwise.
        return ConfigLocation(
            os.path.normpath(os.path.join("/", value)),
            "systemd-execstart",
            "relative --config-file {!r} in {}'s ExecStart, resolved against / "
            "(systemd's default WorkingDirectory)".format(value, SYSTEMD_UNIT),
        )
    return None


def _location_of_process(proc: DockerdProcess, rule: str, what: str) -> Optional[ConfigLocation]:
    value = proc.config_file
    if value is None:
        return None
    if os.path.isabs(value):
        return ConfigLocation(
            os.path.normpath(value),
            rule,
            "--config-file of the running {} (pid {})".format(what, proc.pid),
        )
    if proc.cwd is not None:
        return ConfigLocation(
            os.path.normpath(os.path.join(proc.cwd, value)),
            rule,
            "relative --config-file of the running {} (pid {}), resolved against its "
            "working directory {}".format(what, proc.pid, proc.cwd),
        )
    return ConfigLocation(
        value,
        rule,
        "relative --config-file of the running {} (pid {}); its working directory is "
        "unreadable, so the path is left as given".format(what, proc.pid),
    )


def _system_dockerds(procs: Sequence[DockerdProcess]) -> List[DockerdProcess]:
    return [proc for proc in procs if proc.uid == 0 and not proc.rootless]


def refuse_untrusted_config(ctx: Context, location: ConfigLocation, what: str,
                            flag: str = "--config-file") -> ConfigLocation:
    """A config path taken from a root daemon's argv: root edits it only when no other user can
    replace it, a directory on its way or a symlink followed to it (``config-path-untrusted``)."""
    problems = config_path_problems(ctx.host_path(location.path), trusted_uids(ctx.euid))
    if not problems:
        return location
    raise TrustCheckFailed(
        "the {} of {} is {}, which another user could replace; not editing it".format(flag, what, location.path),
        details=problems,
        hint="make the file and every directory on its way root's and writable by root only (chown root, "
        "chmod go-w), or name the file to edit yourself with --config",
        reference="config-path-untrusted",
    )


def _from_running(ctx: Context, procs: Sequence[DockerdProcess]) -> Optional[ConfigLocation]:
    for proc in _system_dockerds(procs):
        location = _location_of_process(proc, "running-dockerd", "dockerd")
        if location is not None:
            return refuse_untrusted_config(ctx, location, "the running dockerd (pid {})".format(proc.pid))
    return None


def _home(ctx: Context) -> Optional[str]:
    """``$HOME``, else the passwd entry of ``ctx.euid`` (read under the root prefix)."""
    home = ctx.env.get("HOME", "")
    if os.path.isabs(home):
        return home
    text = read_text(ctx.host_path("/etc/passwd"))
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(ctx.euid) and os.path.isabs(fields[5]):
            return fields[5]
    return None


def _rootless_config_path(ctx: Context) -> Optional[Tuple[str, str]]:
    """Return (path, how it was derived) per the XDG base-dir rules dockerd uses."""
    xdg_config = ctx.env.get("XDG_CONFIG_HOME", "")
    if os.path.isabs(xdg_config):
        return os.path.join(xdg_config, "docker", "daemon.json"), "$XDG_CONFIG_HOME"
    home = _home(ctx)
    if home is None:
        return None
    return os.path.join(home, ".config", "docker", "daemon.json"), "$HOME/.config"


def _from_rootless(ctx: Context, procs: Sequence[DockerdProcess]) -> Optional[ConfigLocation]:
    """A rootless daemon of ``ctx.euid``: its own --config-file, else the XDG path."""
    if ctx.euid == 0:
        return None
    mine = [proc for proc in procs if proc.uid == ctx.euid and proc.rootless]
    for proc in mine:
        location = _location_of_process(proc, "rootless", "rootless dockerd")
        if location is not None:
            return location
    runtime_dir = ctx.env.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime_dir):
        runtime_dir = "/run/user/{}".format(ctx.euid)
    socket_path = os.path.join(runtime_dir, "docker.sock")
    if mine:
        evidence = "a rootless dockerd (pid {}) runs as uid {}".format(mine[0].pid, ctx.euid)
    elif os.path.exists(ctx.host_path(socket_path)):
        evidence = "{} exists".format(socket_path)
    else:
        return None
    derived = _rootless_config_path(ctx)
    if derived is None:
        return None
    path, source = derived
    return ConfigLocation(
        path,
        "rootless",
        "rootless dockerd detected ({}); it reads daemon.json under {}".format(evidence, source),
    )


def _from_snap(ctx: Context) -> Optional[ConfigLocation]:
    if not os.path.isdir(ctx.host_path(SNAP_CONFIG_DIR)):
        return None
    return ConfigLocation(
        SNAP_CONFIG,
        "snap",
        "the docker snap is installed ({} exists); its wrapper passes this "
        "--config-file".format(SNAP_CONFIG_DIR),
    )


def config_of_process(ctx: Context, proc: DockerdProcess, rule: str, what: str) -> Optional[ConfigLocation]:
    """The daemon.json ``proc`` reads: its ``--config-file``, else dockerd's default for its kind
    (None for another user's rootless daemon, whose home we do not guess)."""
    found = _location_of_process(proc, rule, what)
    if found is not None:
        return found
    if proc.rootless:
        derived = _rootless_config_path(ctx) if proc.uid == ctx.euid else None
        if derived is None:
            return None
        return ConfigLocation(derived[0], rule, "the {} (pid {}, rootless) has no --config-file; it reads "
                              "daemon.json under {}".format(what, proc.pid, derived[1]))
    return ConfigLocation(DEFAULT_CONFIG, rule, "the {} (pid {}) has no --config-file, so it reads dockerd's "
                          "default".format(what, proc.pid))


def verification_socket(ctx: Context) -> Optional[str]:
    """The Engine API socket the user chose (the context's, or a unix DOCKER_HOST); None: not chosen."""
    from nvdocker_setup.adapters.docker_api import socket_from_docker_host

    return ctx.docker_socket or socket_from_docker_host(ctx.env.get("DOCKER_HOST"))


def serving_dockerd(socket_path: str, procs: Sequence[DockerdProcess]) -> Optional[DockerdProcess]:
    """The dockerd answering on ``socket_path`` (its peer credentials), when it is one of ``procs``."""
    from nvdocker_setup.adapters.docker_api import DockerAPI

    pid = DockerAPI(socket_path, timeout=2.0).peer_pid()
    for proc in procs:
        if proc.pid == pid:
            return proc
    return None


def _from_docker_host(ctx: Context, procs: Sequence[DockerdProcess]) -> Optional[ConfigLocation]:
    """Pair the file with the daemon we verify through: the dockerd answering on the chosen socket."""
    socket_path = verification_socket(ctx)
    if not socket_path or not procs:
        return None
    proc = serving_dockerd(socket_path, procs)
    if proc is None:
        return None
    found = config_of_process(ctx, proc, "docker-host", "dockerd answering on {}".format(socket_path))
    if found is not None and proc.config_file is not None and proc.uid == 0 and not proc.rootless:
        return refuse_untrusted_config(ctx, found, "the dockerd answering on {} (pid {})".format(socket_path, proc.pid))
    return found


def _refuse_several(procs: Sequence[DockerdProcess]) -> None:
    """Several system dockerds and nothing that says which: guessing would edit the file of one and
    verify against the socket of another."""
    system = _system_dockerds(procs)
    if len(system) < 2:
        return
    lines = []
    for proc in system:
        hosts = [arg.split("=", 1)[1] if "=" in arg else "" for arg in proc.argv if arg.startswith(("-H=", "--host="))]
        args = list(proc.argv)
        for index, arg in enumerate(args[:-1]):
            if arg in ("-H", "--host"):
                hosts.append(args[index + 1])
        lines.append("pid {}: {} (config: {}; socket: {})".format(
            proc.pid, " ".join(proc.argv)[:200], proc.config_file or DEFAULT_CONFIG, ", ".join(hosts) or "default"))
    raise UsageError(
        "{} dockerd daemons are running; not guessing which one's daemon.json to edit".format(len(system)),
        details=lines,
        hint="name the daemon: DOCKER_HOST=unix:///path/to/its.sock (its file is found from it), or --config FILE",
        reference="several-dockerds",
    )


def locate_config(ctx: Context, explicit: Optional[str] = None) -> ConfigLocation:
    """Decide which daemon.json to edit: option > env > the dockerd on DOCKER_HOST > systemd >
    /proc > rootless > snap > default.

    With several system dockerds running and none of the first three rules answering, refuse
    (naming them) rather than pair one daemon's file with another's socket. A running system
    dockerd without ``--config-file`` reads the default file, so in that case the snap rule (which
    only looks at leftover directories) is skipped in favour of the default.
    """
    for found in (_from_explicit(ctx, explicit), _from_env(ctx)):
        if found is not None:
            return found
    procs = dockerd_processes(ctx)
    found = _from_docker_host(ctx, procs)
    if found is not None:
        return found
    _refuse_several(procs)
    found = _from_systemd(ctx)
    if found is not None:
        return found
    found = _from_running(ctx, procs) or _from_rootless(ctx, procs)
    if found is not None:
        return found
    system = _system_dockerds(procs)
    if system:
        return ConfigLocation(
            DEFAULT_CONFIG,
            "default",
            "the running dockerd (pid {}) has no --config-file, so it reads dockerd's "
            "default".format(system[0].pid),
        )
    found = _from_snap(ctx)
    if found is not None:
        return found
    return ConfigLocation(DEFAULT_CONFIG, "default", "dockerd's default for a rootful daemon")
