"""The wiring every verb shares: the context from the options, and :func:`reporting`, the one
place that turns an :class:`NvdockerError` (or click's own usage error) into its output and exit
status. Options live in :mod:`nvdocker_setup.cli.options`, rendering in
:mod:`nvdocker_setup.cli.output`."""

import contextlib
import os
from typing import Any, Iterator, Optional, Sequence

import typer

from nvdocker_setup.cli import output
from nvdocker_setup.context import Context
from nvdocker_setup.errors import NvdockerError
from nvdocker_setup.exit_status import ExitStatus


def click_exceptions():
    """click's exceptions module: click is a separate package for older typer (Debian 12: typer 0.7,
    click 8.1) and vendored as ``typer._click`` by newer typer releases."""
    try:
        from typer._click import exceptions  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from click import exceptions  # type: ignore[no-redef,unused-ignore]
    return exceptions


def make_context(state_dir: Optional[str], lock_timeout: float = 10.0) -> Context:
    return Context.from_environment(state_dir=state_dir, lock_timeout=lock_timeout)


def engine(ctx: Context, name: Any):
    """The Engine an --engine value names (``auto``: the one whose daemon runs here)."""
    from nvdocker_setup import engines

    return engines.resolve(ctx, str(name))


@contextlib.contextmanager
def reporting(as_json: bool) -> Iterator[None]:
    """Map every failure to an exit status; tracebacks only for bugs and only with NVDOCKER_DEBUG."""
    try:
        yield
    except NvdockerError as error:
        output.render_error(error, as_json)
        raise typer.Exit(int(error.exit_status)) from None
    except KeyboardInterrupt:
        output.render_error(NvdockerError("interrupted", reference="interrupted"), as_json)
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
        output.render_error(bug, as_json)
        raise typer.Exit(int(ExitStatus.ERROR)) from exc


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
    output.render_error(error, wants_json(args))
    return code
