"""Options shared by several verbs, error rendering and result rendering.

Rendering lives here so the verbs stay a few lines of parsing each. Every expected failure is an
:class:`NvdockerError` and is turned into an exit status in :func:`reporting`, the one place that
does so.
"""

import contextlib
import json
import os
import sys
from typing import Any, Dict, Iterator, Optional

import typer

from nvdocker_setup.context import Context
from nvdocker_setup.errors import NvdockerError
from nvdocker_setup.exit_status import ExitStatus

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


def config_option():
    return typer.Option(
        None,
        "--config",
        metavar="PATH",
        help="daemon.json to edit (default: env NVDOCKER_DOCKER_CONFIG, then the file the running dockerd reads, "
        "then rootless, snap, /etc/docker/daemon.json)",
    )


def state_dir_option():
    return typer.Option(
        None,
        "--state-dir",
        metavar="DIR",
        help="where install records and backups live (default: env NVDOCKER_STATE_DIR or /var/lib/nvdocker-setup)",
    )


def json_option():
    return typer.Option(False, "--json", help="print a JSON object for scripts instead of text")


def lock_timeout_option():
    return typer.Option(10.0, "--lock-timeout", metavar="SECONDS", help="wait this long for another run to finish")


def in_place_option():
    return typer.Option(
        False,
        "--in-place",
        help="rewrite the file in place when it cannot be replaced atomically (a bind-mounted daemon.json)",
    )


def make_context(state_dir: Optional[str], lock_timeout: float = 10.0) -> Context:
    return Context.from_environment(state_dir=state_dir, lock_timeout=lock_timeout)


def print_json(payload: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
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
        payload = result.to_dict()
        payload["ok"] = True
        print_json(payload)
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
    return typer.Option(
        "auto", "--apply", metavar="auto|reload|restart|none",
        help="how dockerd takes the change: auto reloads when every changed key is reloadable, else restarts",
    )


def no_restart_option():
    return typer.Option(False, "--no-restart", help="same as --apply none: only write the file")


def service_manager_option():
    return typer.Option(
        "auto", "--service-manager", metavar="auto|systemd|systemd-user|snap|signal|command", help="how dockerd is run on this host"
    )


def restart_command_option():
    return typer.Option(
        None, "--restart-command", metavar="CMD",
        help="how to restart dockerd where no systemd or snap runs it (e.g. 'rc-service docker restart'); "
        "env NVDOCKER_RESTART_COMMAND",
    )


def timeout_option():
    return typer.Option(60.0, "--timeout", metavar="SECONDS", help="how long to wait for dockerd to verify the change")


def yes_option():
    return typer.Option(False, "--yes", "-y", help="allow a restart that stops running containers")


def build_apply_options(
    apply: str, no_restart: bool, service_manager: str, timeout: float, yes: bool, as_json: bool,
    restart_command: Optional[str] = None,
):
    from nvdocker_setup.apply import ApplyOptions
    from nvdocker_setup.core.apply_plan import APPLY_MODES
    from nvdocker_setup.errors import UsageError

    mode = "none" if no_restart else apply
    if mode not in APPLY_MODES:
        raise UsageError("--apply must be one of {}, not {!r}".format(", ".join(APPLY_MODES), apply))
    confirm = None
    if sys.stdin.isatty() and not as_json:
        confirm = lambda question: typer.confirm(question, default=False, err=True)  # noqa: E731
    return ApplyOptions(
        mode=mode, service_manager=service_manager, timeout=timeout, assume_yes=yes, confirm=confirm,
        restart_command=restart_command or os.environ.get("NVDOCKER_RESTART_COMMAND") or None,
    )


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
