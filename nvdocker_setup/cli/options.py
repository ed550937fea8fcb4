"""The options the verbs share, the closed sets as Enums (validated before anything runs,
completed, readable in --help), and value completion."""

import enum
import os
import sys
from typing import Any, List, Optional

import typer

from nvdocker_setup.context import Context


class Choice(str, enum.Enum):
    """A closed set of option values: click.Choice-backed (checked before anything runs, completed
    by the shell); printed as its value, so help says ``[default: auto]`` on every typer version."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> List[str]:
        return [str(member.value) for member in cls]


class ApplyMode(Choice):
    """--apply (nvdocker_setup.engines.docker.apply_plan.APPLY_MODES)."""

    auto = "auto"
    reload = "reload"
    restart = "restart"
    none = "none"


class ServiceManagerName(Choice):
    """--service-manager (nvdocker_setup.adapters.service.MANAGERS)."""

    auto = "auto"
    systemd = "systemd"
    systemd_user = "systemd-user"
    snap = "snap"
    signal = "signal"
    command = "command"


class EngineName(Choice):
    """--engine (nvdocker_setup.engines.REGISTRY, plus auto)."""

    docker = "docker"
    containerd = "containerd"
    auto = "auto"


def option(default: Any, *names: str, **kwargs: Any) -> Any:
    """typer.Option without a ``[default: None]`` (typer 0.7 prints one for every optional option)."""
    if default is None or default is False:
        kwargs.setdefault("show_default", False)
    return typer.Option(default, *names, **kwargs)


def config_option(action: str = "edit"):
    return option(
        None,
        "--config",
        metavar="PATH",
        help="the engine's config file to {} (docker: env NVDOCKER_DOCKER_CONFIG, then the file the running "
        "dockerd reads, then rootless, snap, /etc/docker/daemon.json; containerd: env NVDOCKER_CONTAINERD_CONFIG, "
        "then the running containerd's --config, then /etc/containerd/config.toml)".format(action),
    )


def engine_option():
    return option(
        EngineName.docker, "--engine", metavar="ENGINE",
        help="whose config: docker (daemon.json), containerd (config.toml), or auto (the engine whose daemon "
        "runs here)",
    )


def state_dir_option():
    return option(
        None,
        "--state-dir",
        metavar="DIR",
        help="where install records and backups live (default: env NVDOCKER_STATE_DIR or /var/lib/nvdocker-setup)",
    )


def json_option():
    return option(False, "--json", help="print a JSON object for scripts instead of text (docs/json.md)")


def lock_timeout_option():
    return typer.Option(10.0, "--lock-timeout", metavar="SECONDS", help="wait this long for another run to finish")


def in_place_option():
    return option(
        False,
        "--in-place",
        help="rewrite the file in place when it cannot be replaced atomically (a bind-mounted daemon.json)",
    )


def apply_option():
    return option(
        ApplyMode.auto, "--apply", metavar="MODE",
        help="how dockerd takes the change: auto (reload when every changed key is reloadable, else restart), "
        "reload, restart or none (only write the file)",
    )


def no_restart_option():
    return option(False, "--no-restart", help="same as --apply none: only write the file")


def service_manager_option():
    return option(
        ServiceManagerName.auto, "--service-manager", metavar="MANAGER",
        help="how dockerd runs here: auto, systemd, systemd-user, snap, signal (SIGHUP to its pid) or command "
        "(--restart-command)",
    )


def restart_command_option():
    return option(
        None, "--restart-command", metavar="CMD",
        help="how to restart dockerd where no systemd or snap runs it (e.g. 'rc-service docker restart'); "
        "env NVDOCKER_RESTART_COMMAND",
    )


def timeout_option():
    return typer.Option(60.0, "--timeout", metavar="SECONDS", help="how long to wait for dockerd to verify the change")


def yes_option():
    return option(False, "--yes", "-y", help="allow a restart that stops running containers")


def build_apply_options(
    apply: Any, no_restart: bool, service_manager: Any, timeout: float, yes: bool, as_json: bool,
    restart_command: Optional[str] = None,
):
    """ApplyOptions from the options, checked before anything runs (also with --apply none and --dry-run)."""
    from nvdocker_setup.apply import ApplyOptions
    from nvdocker_setup.errors import UsageError

    mode = "none" if no_restart else str(apply)
    manager = str(service_manager)
    if mode not in ApplyMode.values():
        raise UsageError("--apply must be one of {}, not {!r}".format(", ".join(ApplyMode.values()), mode))
    if manager not in ServiceManagerName.values():
        raise UsageError("--service-manager must be one of {}, not {!r}".format(
            ", ".join(ServiceManagerName.values()), manager))
    command = restart_command or os.environ.get("NVDOCKER_RESTART_COMMAND") or None
    if manager == "command" and not command:
        raise UsageError("--service-manager command needs --restart-command (or NVDOCKER_RESTART_COMMAND)",
                         hint="e.g. --restart-command 'rc-service docker restart'")
    confirm = None
    if sys.stdin.isatty() and not as_json:
        confirm = lambda question: typer.confirm(question, default=False, err=True)  # noqa: E731
    return ApplyOptions(
        mode=mode, service_manager=manager, timeout=timeout, assume_yes=yes, confirm=confirm,
        restart_command=command,
    )


def complete_backup_names(ctx: typer.Context, incomplete: str) -> List[str]:
    """Names of the backups in the state dir (``--state-dir`` if given before, else the default)."""
    try:
        from nvdocker_setup import operations

        state_dir = (ctx.params or {}).get("state_dir") if ctx is not None else None
        context = Context.from_environment(state_dir=state_dir)
        names = [backup.name for backup in operations.list_backups(context)]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [name for name in reversed(names) if name.startswith(incomplete)]


def complete_check_ids(incomplete: str) -> List[str]:
    """doctor's check ids."""
    try:
        from nvdocker_setup.doctor import checks as registry

        ids = [item.id for item in registry.all_checks(None)]
    except Exception:
        return []
    return [check_id for check_id in ids if check_id.startswith(incomplete)]
