"""The `nvdocker-setup` application: registers one module per verb."""

import io
import os
import sys
from typing import Any, List, Optional

import typer
from typer.core import TyperGroup

from nvdocker_setup import __version__
from nvdocker_setup.cli import backups, cdi, common, doctor, install, options, restore, runtime, show, system, uninstall
from nvdocker_setup.cli import config as config_cli
from nvdocker_setup.cli import node_agent as node_agent_cli

PROG = "nvdocker-setup"
#: The environment variable of typer's completion protocol (completions/ use it).
COMPLETE_VAR = "_NVDOCKER_SETUP_COMPLETE"
_ARGS = "nvdocker_setup.args"


class NvdockerGroup(TyperGroup):
    """The root command: click's own usage errors (unknown option, a value outside a choice, a
    missing argument) are rendered like ours, ``error: <message> (usage)`` and a hint, or as a JSON
    error object when ``--json`` is on the command line; exit status 2. No option of any verb shows
    ``[default: None]`` (typer 0.7 prints one for every option without a default)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _no_default_none(self)

    def make_context(self, info_name: Optional[str], args: List[str], parent: Any = None, **extra: Any) -> Any:
        raw = list(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except common.click_exceptions().ClickException as exc:
            _fail(exc, raw)
        ctx.meta[_ARGS] = raw
        return ctx

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except common.click_exceptions().ClickException as exc:
            _fail(exc, ctx.meta.get(_ARGS, ()))

    def _main_shell_completion(self, ctx_args: Any, prog_name: str, complete_var: Optional[str] = None) -> None:
        # add_completion=False (the packages install completions/) skips typer's registration of its
        # completion classes, which the completion protocol still needs: register them on demand.
        if os.environ.get(complete_var or COMPLETE_VAR):
            from typer.completion import completion_init

            completion_init()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)


def _no_default_none(command: Any) -> None:
    for param in getattr(command, "params", ()):
        if param.default is None or param.default in ((), []):
            param.show_default = False
    for sub in (getattr(command, "commands", None) or {}).values():
        _no_default_none(sub)


def _fail(exc: Any, args: Any) -> Any:
    if type(exc).__name__ == "NoArgsIsHelpError":  # click >= 8.2: prints the help, exits 2
        raise exc
    raise typer.Exit(common.render_click_error(exc, list(args)))


app = typer.Typer(
    name=PROG,
    cls=NvdockerGroup,
    help="Wire a GPU OCI runtime into Docker's daemon.json without losing a byte of it.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo("nvdocker-setup {}".format(__version__))
        raise typer.Exit()


@app.callback()
def root(
    version: bool = options.option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Wire a GPU OCI runtime into Docker's daemon.json without losing a byte of it."""


app.command("install")(install.install)
app.command("uninstall")(uninstall.uninstall)
app.command("show")(show.show)
app.command("restore")(restore.restore)
app.add_typer(backups.app, name="backups")
app.add_typer(cdi.app, name="cdi")
app.command("doctor")(doctor.doctor)
app.add_typer(runtime.app, name="runtime")
app.command("config")(config_cli.config)
app.add_typer(system.app, name="system")
app.command("node-agent")(node_agent_cli.node_agent)


class _ReaderGoneSafe(io.RawIOBase):
    """File descriptor 1 for writing, where a reader that went away (``doctor | head -1``, ``| grep
    -q``) is not an error of ours: what it did not read is dropped, and the command ends with its own
    exit status, not a BrokenPipeError (SIGPIPE stays ignored, as Python sets it: a daemon closing
    its socket must never kill a transaction)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.reader_gone = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: Any) -> int:
        if self.reader_gone:
            return len(data)
        try:
            return os.write(self._fd, data)
        except BrokenPipeError:
            self.reader_gone = True
            return len(data)


def _pipe_safe_stdout() -> None:
    stdout = sys.stdout
    if stdout is None or not hasattr(stdout, "fileno"):
        return
    try:
        fd = stdout.fileno()
    except (OSError, ValueError):
        return  # not a real file (a test's capture): leave it
    stdout.flush()
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_ReaderGoneSafe(fd)), encoding=stdout.encoding,
                                  errors=stdout.errors, line_buffering=bool(getattr(stdout, "line_buffering", False)))


def main() -> None:
    _pipe_safe_stdout()
    app(prog_name=PROG)
