"""Options shared by several verbs, error rendering and result rendering.

Rendering lives here so the verbs stay a few lines of parsing each. Every expected failure is an
:class:`NvdockerError` and is turned into an exit status in :func:`reporting`, the one place that
does so.
"""

import contextlib
import enum
import json
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence

import typer

from nvdocker_setup import __version__
from nvdocker_setup.context import Context
from nvdocker_setup.errors import NvdockerError
from nvdocker_setup.exit_status import ExitStatus

#: The version of the ``--json`` output's shape (docs/json.md). Fields may be added within a
#: version; one that is removed, renamed or changes its type or meaning bumps it.
SCHEMA_VERSION = 1

_consoles: Dict[str, Any] = {}


def console(stderr: bool = False):
    """rich consoles, created on first use (importing rich costs start-up time)."""
    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        _consoles[key] = Console(stderr=stderr, highlight=False, soft_wrap=True)
    return _consoles[key]


def reset_consoles() -> None:
    """Forget cached consoles (tests capture output per invocation)."""
    _consoles.clear()


def click_exceptions():
    """click's exceptions module: click is a separate package for older typer (Debian 12: typer 0.7,
    click 8.1) and vendored as ``typer._click`` by newer typer releases."""
    try:
        from typer._click import exceptions  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from click import exceptions  # type: ignore[no-redef,unused-ignore]
    return exceptions


class Choice(str, enum.Enum):
    """A closed set of option values: click.Choice-backed (checked before anything runs, completed
    by the shell); printed as its value, so help says ``[default: auto]`` on every typer version."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def values(cls) -> List[str]:
        return [str(member.value) for member in cls]


class ApplyMode(Choice):
    """--apply (nvdocker_setup.core.apply_plan.APPLY_MODES)."""

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
        help="daemon.json to {} (default: env NVDOCKER_DOCKER_CONFIG, then the file the running dockerd reads, "
        "then rootless, snap, /etc/docker/daemon.json)".format(action),
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


def make_context(state_dir: Optional[str], lock_timeout: float = 10.0) -> Context:
    return Context.from_environment(state_dir=state_dir, lock_timeout=lock_timeout)


def envelope(payload: Dict[str, Any]) -> Dict[str, Any]:
    """What every ``--json`` output starts with: the shape's version, the tool's version and ``ok``."""
    clash = {"schema_version", "version"} & set(payload)
    if clash:
        raise ValueError("a --json payload may not set {}".format(", ".join(sorted(clash))))
    data: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "version": __version__, "ok": True}
    data.update(payload)
    return data


def print_json(payload: Dict[str, Any]) -> None:
    """The one writer of ``--json`` output: every verb's result, and every error."""
    sys.stdout.write(json.dumps(envelope(payload), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def render_error(error: NvdockerError, as_json: bool) -> None:
    if as_json:
        print_json({"ok": False, "error": error.to_dict()})
        return
    from rich.markup import escape

    err = console(stderr=True)
    err.print("[bold red]error:[/] {} [dim]({})[/]".format(escape(error.message), error.reference))
    for line in error.details:
        err.print("  " + escape(line))
    if error.hint:
        err.print("[bold cyan]hint:[/] " + escape(error.hint))


@contextlib.contextmanager
def reporting(as_json: bool) -> Iterator[None]:
    """Map every failure to an exit status; tracebacks only for bugs and only with NVDOCKER_DEBUG."""
    try:
        yield
    except NvdockerError as error:
        render_error(error, as_json)
        raise typer.Exit(int(error.exit_status)) from None
    except KeyboardInterrupt:
        render_error(NvdockerError("interrupted", reference="interrupted"), as_json)
        raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind a switch
        if os.environ.get("NVDOCKER_DEBUG"):
            raise
        bug = NvdockerError(
            "unexpected {}: {}".format(type(exc).__name__, exc),
            reference="internal-error",
            hint="this is a bug in nvdocker-setup; re-run with NVDOCKER_DEBUG=1 for a traceback and report it",
        )
        render_error(bug, as_json)
        raise typer.Exit(int(ExitStatus.ERROR)) from exc


def print_diff(diff: str) -> None:
    from rich.text import Text

    out = console()
    for line in diff.splitlines():
        style = None
        if line.startswith("+++") or line.startswith("---"):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        out.print(Text(line, style=style or ""))


def render_result(result, as_json: bool) -> None:
    """Text or JSON for an install/uninstall/restore :class:`~nvdocker_setup.operations.Result`."""
    if as_json:
        print_json(result.to_dict())
        return
    from rich.markup import escape

    out, err = console(), console(stderr=True)
    for notice in result.notices:
        err.print("[dim]note:[/] " + escape(notice))
    for warning in result.warnings:
        err.print("[bold yellow]warning:[/] " + escape(warning))
    if result.dry_run:
        if result.diff:
            print_diff(result.diff)
            out.print("[bold]dry run:[/] nothing was written to {}".format(escape(result.config)))
        else:
            out.print("[bold]dry run:[/] no change needed in {}".format(escape(result.config)))
        return
    if result.changed:
        for change in result.changes:
            out.print("[green]✓[/] " + escape(change))
        out.print("wrote {} [dim](backup: {})[/]".format(escape(result.config), escape(result.backup or "none")))
    else:
        out.print("no change: {}".format(escape(result.config)))
    render_apply(getattr(result, "apply", None))


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


# -- click's own errors, in our style ------------------------------------------------------------


def wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asked for --json (before a ``--``): decides how a usage error looks."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def render_click_error(exc: Any, args: Sequence[str]) -> int:
    """A click usage error (unknown option, bad --apply value ...) as ``error: ... (usage)`` plus a
    hint, or a JSON error object under --json; returns the exit status (2 for usage errors)."""
    from nvdocker_setup.errors import UsageError

    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "nvdocker-setup"
    is_usage = isinstance(exc, click_exceptions().UsageError)
    error = UsageError(
        exc.format_message(),
        reference="usage" if is_usage else "command-line",
        hint="see: {} --help".format(command),
    )
    code = int(ExitStatus.USAGE) if is_usage else int(getattr(exc, "exit_code", 1) or 1)
    if not is_usage:
        error.exit_status = code  # type: ignore[assignment]
    render_error(error, wants_json(args))
    return code


# -- value completion (never fails: a broken state dir completes nothing) ------------------------


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

        ids = [item.id for item in registry.all_checks()]
    except Exception:
        return []
    return [check_id for check_id in ids if check_id.startswith(incomplete)]


class RichReporter:
    """Progress on stderr: a step line per action and a spinner with elapsed time while waiting."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def step(self, message: str) -> None:
        if self.enabled:
            console(stderr=True).print("[dim]…[/] " + message)

    @contextlib.contextmanager
    def waiting(self, message: str):
        if not self.enabled:
            yield lambda _text: None
            return
        with console(stderr=True).status(message) as status:
            yield lambda elapsed: status.update("{} [dim]({})[/]".format(message, elapsed))


def render_apply(report) -> None:
    from rich.markup import escape

    if report is None:
        return
    out = console()
    for note in report.notes:
        console(stderr=True).print("[bold yellow]note:[/] " + escape(note))
    if report.method == "none":
        out.print("dockerd: not changed [dim]({})[/]".format(escape(report.reason)))
    elif report.verified:
        via = report.method + (" then " + report.fallback if report.fallback else "")
        out.print("[green]✓[/] dockerd: {} verified in {:.2f}s [dim]({})[/]".format(via, report.seconds or 0.0, escape(report.reason)))
