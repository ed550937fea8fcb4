"""How dockerd is reloaded and restarted on this host, behind one small interface.

- ``systemd``: the system unit (``systemctl reload|restart|is-active|show|reset-failed``);
- ``systemd-user``: rootless Docker's user unit (``systemctl --user``);
- ``snap``: ``snap restart docker.dockerd``; reload is SIGHUP to the daemon (the snap has none);
- ``signal``: no service manager: SIGHUP to dockerd's pid; restart is impossible and says what to run;
- ``command``: SIGHUP to reload, the admin's own ``--restart-command`` to restart (OpenRC, runit, s6).

Tests add their own implementation that stops and starts a real private dockerd.
"""

import datetime
import os
import signal
import subprocess
from typing import List, Optional

from nvdocker_setup.adapters.hostfs import pid_alive
from nvdocker_setup.context import Context
from nvdocker_setup.errors import NvdockerError, UsageError

MANAGERS = ("auto", "systemd", "systemd-user", "snap", "signal", "command")


class ServiceError(NvdockerError):
    """A service manager command failed."""

    reference = "service-command-failed"


class ServiceManager:
    """Reload or restart one dockerd. Implementations raise :class:`ServiceError`."""

    name = "abstract"
    can_restart = True

    def reload(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def reset_failed(self) -> None:
        """Clear a start-rate limit before a retry (docker.service allows 3 starts per 60 s)."""

    def is_active(self) -> bool:
        raise NotImplementedError

    def main_pid(self) -> Optional[int]:
        return None

    def logs_hint(self) -> str:
        return "look at dockerd's log"

    def logs_where(self) -> str:
        """Where the daemon's own messages are, for a hint: a command in backticks when there is one."""
        hint = self.logs_hint()
        return "`{}`".format(hint) if self.logs_command else "its log (where the service manager keeps it)"

    #: Whether :meth:`logs_hint` is a command an admin can run.
    logs_command = False

    def recent_logs(self, since: datetime.datetime) -> List[str]:
        """dockerd's own messages since ``since``, for failure reports (best effort)."""
        return []

    def describe(self) -> str:
        return self.name



def _is_daemon(ctx: Context, pid: int, comm: str) -> bool:
    try:
        with open(ctx.host_path("/proc/{}/comm".format(pid))) as handle:
            return handle.read().strip() == comm
    except OSError:
        return False


def send_hup(ctx: Context, pid: Optional[int], what: str) -> None:
    """SIGHUP makes dockerd re-read daemon.json; running containers are untouched."""
    if pid is None:
        raise ServiceError("cannot find {}'s pid to send it SIGHUP".format(what), hint="is dockerd running?")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ServiceError("cannot signal dockerd (pid {}): {}".format(pid, exc.strerror)) from None


class SystemdService(ServiceManager):
    logs_command = True

    def __init__(self, ctx: Context, unit: str = "docker.service", user: bool = False) -> None:
        self.ctx = ctx
        self.unit = unit
        self.user = user
        self.name = "systemd-user" if user else "systemd"

    def _systemctl(self, *args: str, check: bool = True, timeout: float = 120.0):
        argv = ["systemctl"] + (["--user"] if self.user else []) + list(args)
        try:
            completed = self.ctx.run(argv, timeout=timeout, env=dict(self.ctx.env))
        except (OSError, subprocess.SubprocessError) as exc:  # missing systemctl, timeout
            raise ServiceError("{} failed: {}".format(" ".join(argv), exc)) from None
        if check and completed.returncode != 0:
            raise ServiceError(
                "{} failed (exit {}): {}".format(" ".join(argv), completed.returncode, (completed.stderr or "").strip()),
                hint="see: " + self.logs_hint(),
            )
        return completed

    def reload(self) -> None:
        self._systemctl("reload", self.unit)

    def restart(self) -> None:
        self._systemctl("restart", self.unit)

    def reset_failed(self) -> None:
        self._systemctl("reset-failed", self.unit, check=False)

    def is_active(self) -> bool:
        return self._systemctl("is-active", "--quiet", self.unit, check=False).returncode == 0

    def socket_activated_idle(self) -> bool:
        """docker.socket listens but dockerd is not running: it reads the file when first used."""
        if self.is_active():
            return False
        return self._systemctl("is-active", "--quiet", "docker.socket", check=False).returncode == 0

    def main_pid(self) -> Optional[int]:
        out = self._systemctl("show", "-p", "MainPID", "--value", self.unit, check=False).stdout or ""
        try:
            pid = int(out.strip())
        except ValueError:
            return None
        return pid or None

    def logs_hint(self) -> str:
        return "journalctl {}-u {} --since -5min".format("--user " if self.user else "", self.unit)

    def recent_logs(self, since: datetime.datetime) -> List[str]:
        if self.ctx.which("journalctl") is None:
            return []
        argv = ["journalctl"] + (["--user"] if self.user else []) + [
            "-u", self.unit, "--since", "@{}".format(int(since.timestamp())), "-n", "30", "--no-pager", "-o", "cat",
        ]
        try:
            completed = self.ctx.run(argv, timeout=10.0, env=dict(self.ctx.env))
        except Exception:  # journald unavailable: the hint still names the command
            return []
        return [line for line in (completed.stdout or "").splitlines() if line.strip()]

    def describe(self) -> str:
        return "systemctl {}{}".format("--user " if self.user else "", self.unit)


class SnapService(ServiceManager):
    name = "snap"
    logs_command = True
    service = "docker.dockerd"

    def __init__(self, ctx: Context, pid_lookup) -> None:
        self.ctx = ctx
        self._pid_lookup = pid_lookup

    def reload(self) -> None:
        send_hup(self.ctx, self.main_pid(), "the snap's dockerd")

    def restart(self) -> None:
        argv = ["snap", "restart", self.service]
        try:
            completed = self.ctx.run(argv, timeout=180.0, env=dict(self.ctx.env))
        except (OSError, subprocess.SubprocessError) as exc:  # missing snap, timeout
            raise ServiceError("{} failed: {}".format(" ".join(argv), exc)) from None
        if completed.returncode != 0:
            raise ServiceError("snap restart {} failed: {}".format(self.service, (completed.stderr or "").strip()))

    def is_active(self) -> bool:
        pid = self.main_pid()
        return pid is not None and pid_alive(pid)

    def main_pid(self) -> Optional[int]:
        return self._pid_lookup()

    def logs_hint(self) -> str:
        return "snap logs -n 50 docker.dockerd"


class SignalService(ServiceManager):
    """For hosts without a service manager: reload by SIGHUP; restarting is the admin's job."""

    name = "signal"
    can_restart = False

    def __init__(self, ctx: Context, pid_lookup) -> None:
        self.ctx = ctx
        self._pid_lookup = pid_lookup

    def reload(self) -> None:
        send_hup(self.ctx, self.main_pid(), "dockerd")

    def restart(self) -> None:
        raise ServiceError(
            "cannot restart dockerd: no service manager (systemd, snap) runs it here",
            reference="restart-impossible",
            hint="restart dockerd the way it was started on this host (e.g. `service docker restart`), "
            "then check with `nvdocker-setup show`",
        )

    def is_active(self) -> bool:
        pid = self.main_pid()
        return pid is not None and pid_alive(pid)

    def main_pid(self) -> Optional[int]:
        return self._pid_lookup()


class CommandService(SignalService):
    """Reload by SIGHUP, restart with a command the admin gives (``rc-service docker restart``)."""

    name = "command"
    can_restart = True

    def __init__(self, ctx: Context, pid_lookup, restart_command: str) -> None:
        super().__init__(ctx, pid_lookup)
        self.restart_command = restart_command

    def restart(self) -> None:
        try:
            completed = self.ctx.run(["/bin/sh", "-c", self.restart_command], timeout=180.0, env=dict(self.ctx.env))
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError("restart command failed: {}".format(exc)) from None
        if completed.returncode != 0:
            raise ServiceError(
                "restart command failed (exit {}): {}".format(completed.returncode, (completed.stderr or "").strip()[-500:])
            )

    def describe(self) -> str:
        return "SIGHUP to reload, `{}` to restart".format(self.restart_command)


def pid_lookup(ctx: Context, socket_path: str, pidfiles: List[str], comm: str = "dockerd"):
    """A callable giving the daemon's pid (a process called ``comm``): the socket's peer
    credentials, else a pidfile."""
    from nvdocker_setup.adapters.docker_api import DockerAPI

    def lookup() -> Optional[int]:
        pid = DockerAPI(socket_path, timeout=2.0).peer_pid()
        if pid is not None and _is_daemon(ctx, pid, comm):
            return pid
        for pidfile in pidfiles:
            try:
                with open(ctx.host_path(pidfile)) as handle:
                    candidate = int(handle.read().strip())
            except (OSError, ValueError):
                continue
            if pid_alive(candidate) and _is_daemon(ctx, candidate, comm):
                return candidate
        return None

    return lookup


def detect(
    ctx: Context, requested: str, config_rule: str, socket_path: str, restart_command: Optional[str] = None
) -> ServiceManager:
    """Pick the service manager: the one asked for, else from how the config file was found."""
    if requested not in MANAGERS:
        raise UsageError("unknown service manager {!r} (choose from {})".format(requested, ", ".join(MANAGERS)))
    if requested == "command" and not restart_command:
        raise UsageError("--service-manager command needs --restart-command")
    runtime_dir = ctx.env.get("XDG_RUNTIME_DIR") or "/run/user/{}".format(ctx.euid)
    if ctx.docker_socket or ctx.env.get("DOCKER_HOST"):
        pidfiles: List[str] = []  # a daemon named explicitly: never fall back to the system's pidfile
    elif config_rule == "rootless":
        pidfiles = [os.path.join(runtime_dir, "docker.pid")]
    else:
        pidfiles = ["/var/run/docker.pid"]
    lookup = pid_lookup(ctx, socket_path, pidfiles)
    has_systemd = os.path.isdir(ctx.host_path("/run/systemd/system")) and ctx.which("systemctl") is not None
    choice = requested
    if requested == "auto":
        if restart_command:
            choice = "command"
        elif config_rule == "snap":
            choice = "snap"
        elif has_systemd:
            choice = "systemd-user" if config_rule == "rootless" else "systemd"
        else:
            choice = "signal"
    if choice == "systemd":
        return SystemdService(ctx)
    if choice == "systemd-user":
        return SystemdService(ctx, user=True)
    if choice == "snap":
        return SnapService(ctx, lookup)
    if choice == "command":
        return CommandService(ctx, lookup, restart_command or "")
    return SignalService(ctx, lookup)
