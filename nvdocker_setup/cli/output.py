"""What the verbs print: the --json envelope, errors, results, diffs and the apply report.
One writer of JSON (:func:`print_json`), so every output carries the schema version."""

import contextlib
import json
import sys
from typing import Any, Dict

from nvdocker_setup import __version__
from nvdocker_setup.errors import NvdockerError

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


def envelope(payload: Dict[str, Any]) -> Dict[str, Any]:
    """What every ``--json`` output starts with: the shape's version, the tool's version and ``ok``."""
    clash = {"schema_version", "version"} & set(payload)
    if clash:
        raise ValueError("a --json payload may not set {}".format(", ".join(sorted(clash))))
    data: Dict[str, Any] = {"schema_version": SCHEMA_VERSION, "version": __version__, "ok": True}
    data.update(payload)
    return data


def json_value(value: Any) -> Any:
    """``json.dumps``'s ``default``: a TOML date or time (config.toml may hold one) as its ISO text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError("Object of type {} is not JSON serializable".format(type(value).__name__))


#: One JSON object per line instead of indented blocks: set by verbs whose output is a log that
#: line-oriented shippers read (node-agent, issue #22).
_json_lines = False


def json_lines(on: bool = True) -> None:
    global _json_lines
    _json_lines = on


def print_json(payload: Dict[str, Any]) -> None:
    """The one writer of ``--json`` output: every verb's result, and every error."""
    if _json_lines:
        text = json.dumps(envelope(payload), ensure_ascii=False, default=json_value, separators=(",", ":"))
    else:
        text = json.dumps(envelope(payload), indent=2, ensure_ascii=False, default=json_value)
    sys.stdout.write(text + "\n")
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
    render_apply(getattr(result, "apply", None), "containerd" if getattr(result, "engine", None) == "containerd" else "dockerd")


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


def render_apply(report, daemon: str = "dockerd") -> None:
    from rich.markup import escape

    if report is None:
        return
    out = console()
    for note in report.notes:
        console(stderr=True).print("[bold yellow]note:[/] " + escape(note))
    if report.method == "none":
        out.print("{}: not changed [dim]({})[/]".format(daemon, escape(report.reason)))
    elif report.verified:
        via = report.method + (" then " + report.fallback if report.fallback else "")
        out.print("[green]✓[/] {}: {} verified in {:.2f}s [dim]({})[/]".format(
            daemon, via, report.seconds or 0.0, escape(report.reason)))
