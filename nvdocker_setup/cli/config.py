"""`nvdocker-setup config`: read and edit the runtime's settings, /etc/nvdocker/runtime.conf
(`nvidia-ctk config`'s counterpart: `--set KEY[=VALUE] --in-place`, nvidia-ctk's key names taken).

Edits are line by line (:mod:`nvdocker_setup.runtime.settings_edit`): the rest of the file stays
byte for byte, and nothing the runtime would refuse is written. ``--in-place`` takes the lock the
other verbs take, keeps a backup in the state directory (``backups list`` shows it) and replaces
the file atomically with its owner and mode; a new file is 0644 (root's, as root).
"""

import os
from typing import Any, Dict, List, Optional

import typer

from nvdocker_setup.cli import common, options, output


def _path(explicit: Optional[str]) -> str:
    from nvdocker_setup.runtime.config import CONFIG_ENV, DEFAULT_CONFIG_PATH

    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def _as_cli_error(error: Any) -> Any:
    """A :class:`SettingsError` (or the runtime reader's error) as the CLI's error, with its id."""
    from nvdocker_setup.errors import ConfigReadError, UsageError

    reference = getattr(error, "reference", "runtime-config-invalid")
    if getattr(error, "usage", False):
        return UsageError(error.message, hint=error.hint, reference=reference)
    return ConfigReadError(error.message, hint=error.hint, reference=reference)


def _snapshot(path: str):
    """:func:`read_snapshot`, its errors named for this file: ``runtime-config-unreadable``."""
    from nvdocker_setup.adapters.files import read_snapshot
    from nvdocker_setup.errors import ConfigReadError

    try:
        return read_snapshot(path)
    except ConfigReadError as error:
        raise ConfigReadError(error.message, hint="check the path; runtime.conf must be a plain file",
                              details=error.details, reference="runtime-config-unreadable") from None


def _read(path: str):
    """The file's snapshot and text (a missing file: empty)."""
    from nvdocker_setup.errors import ConfigReadError

    snapshot = _snapshot(path)
    try:
        text = snapshot.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigReadError("{} is not UTF-8 text ({})".format(path, exc), reference="runtime-config-invalid",
                              hint="fix the file by hand: the runtime refuses it as it is") from None
    return snapshot, text


def _trust_problem(path: str) -> Optional[str]:
    """As root, why the runtime would refuse the file (not root's alone), else None."""
    from nvdocker_setup.driver.errors import GpuSetupError
    from nvdocker_setup.runtime.config import check_trusted

    try:
        check_trusted(path)
    except OSError:
        return None  # missing, or unreadable: reading it says so
    except GpuSetupError as error:
        return error.message
    return None


def config(
    settings: Optional[List[str]] = typer.Option(  # noqa: B008 (typer.Option)
        None, "--set", metavar="KEY[=VALUE]",
        help="set a key (repeatable; nvidia-ctk's names work too, KEY alone means KEY=true for a true/false key); "
        "prints the resulting file unless --in-place or --output",
    ),
    get: Optional[str] = options.option(None, "--get", metavar="KEY", help="print the value the runtime uses for KEY"),
    list_keys: bool = options.option(False, "--list", help="every key with its value, default and meaning (the default)"),
    in_place: bool = options.option(False, "--in-place", "-i", help="write the edit to the file (backup, lock, atomic)"),
    output_path: Optional[str] = options.option(
        None, "--output", "-o", metavar="PATH", help="write the edited file to PATH instead",
    ),
    config_path: Optional[str] = options.option(
        None, "--config", "--config-file", "-c", metavar="PATH",
        help="the runtime's settings file (default: env NVDOCKER_RUNTIME_CONFIG, then /etc/nvdocker/runtime.conf)",
    ),
    state_dir: Optional[str] = options.state_dir_option(),
    lock_timeout: float = options.lock_timeout_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Show or change the runtime's settings (/etc/nvdocker/runtime.conf), keeping the rest of the file as it is."""
    from nvdocker_setup.errors import UsageError
    from nvdocker_setup.runtime.settings_edit import SettingsError

    with common.reporting(as_json):
        actions = [name for name, given in (("--set", settings), ("--get", get is not None), ("--list", list_keys))
                   if given]
        if len(actions) > 1:
            raise UsageError("{} cannot be combined".format(" and ".join(actions)), hint="give one of them")
        if (in_place or output_path) and not settings:
            raise UsageError("--in-place and --output go with --set", hint="e.g. --set no-cgroups --in-place")
        if in_place and output_path:
            raise UsageError("--in-place and --output cannot be combined", hint="give one of them")
        path = _path(config_path)
        try:
            if settings:
                _set(path, settings, in_place, output_path, state_dir, lock_timeout, as_json)
            elif get is not None:
                _get(path, get, as_json)
            else:
                _list(path, as_json)
        except SettingsError as error:
            raise _as_cli_error(error) from None


def _warnings(path: str, exists: bool) -> List[str]:
    problem = _trust_problem(path) if exists else None
    return ["the runtime refuses this file as it is: {} (chown root:root and chmod go-w it)".format(problem)] \
        if problem else []


def _get(path: str, given: str, as_json: bool) -> None:
    from nvdocker_setup.runtime import settings_edit

    key = settings_edit.resolve_key(given)
    snapshot, text = _read(path)
    for entry, value, is_set in settings_edit.effective(text, path):
        if entry.name != key:
            continue
        warnings = _warnings(path, snapshot.exists)
        if as_json:
            output.print_json({"ok": True, "action": "get", "config": path, "exists": snapshot.exists, "key": key,
                               "value": value, "default": settings_edit.default_of(entry), "set": is_set,
                               "warnings": warnings})
            return
        for warning in warnings:
            typer.echo("warning: " + warning, err=True)
        typer.echo(value)


def _list(path: str, as_json: bool) -> None:
    from nvdocker_setup.runtime import settings_edit

    snapshot, text = _read(path)
    rows = settings_edit.effective(text, path)
    warnings = _warnings(path, snapshot.exists)
    if as_json:
        output.print_json({
            "ok": True, "action": "list", "config": path, "exists": snapshot.exists, "warnings": warnings,
            "keys": [{"key": key.name, "value": value, "default": settings_edit.default_of(key), "set": is_set,
                      "meaning": key.meaning, "nvidia_ctk": settings_edit.aliases_of(key.name)}
                     for key, value, is_set in rows],
        })
        return
    for warning in warnings:
        typer.echo("warning: " + warning, err=True)
    # a listing that is itself a runtime.conf: set keys as they are, the others commented out
    typer.echo("# {}{}".format(path, "" if snapshot.exists else " (does not exist: every key has its default)"))
    typer.echo("[runtime]")
    for key, value, is_set in rows:
        aliases = settings_edit.aliases_of(key.name)
        typer.echo("# {}; default: {}{}".format(key.meaning, settings_edit.default_of(key) or "(empty)",
                                                "; nvidia-ctk: " + ", ".join(aliases) if aliases else ""))
        typer.echo("{}{} = {}".format("" if is_set else "#", key.name, value).rstrip())


def _set(path: str, settings: List[str], in_place: bool, output_path: Optional[str], state_dir: Optional[str],
         lock_timeout: float, as_json: bool) -> None:
    from nvdocker_setup.runtime import settings_edit

    for assignment in settings:  # the command line first, before any file is read
        settings_edit.parse_assignment(assignment)
    target = None
    if in_place or (output_path and os.path.realpath(output_path) == os.path.realpath(path)):
        target = path
    payload: Dict[str, Any]
    if target is not None:
        payload = _set_in_place(target, settings, state_dir, lock_timeout)
    else:
        snapshot, text = _read(path)
        outcome = settings_edit.apply(text, settings, path)
        payload = _payload(path, snapshot.exists, outcome, text)
        if output_path:
            from nvdocker_setup.adapters.files import write_atomically

            written = _snapshot(output_path)
            if not (written.exists and written.data == outcome.text.encode("utf-8")):
                write_atomically(written, outcome.text.encode("utf-8"))
                payload["changed"] = True
            payload["written"] = output_path
    if as_json:
        output.print_json(payload)
        return
    from rich.markup import escape

    err = output.console(stderr=True)
    for note in payload["notes"]:
        err.print("[dim]note:[/] " + escape(note))
    for warning in payload["warnings"]:
        err.print("[bold yellow]warning:[/] " + escape(warning))
    if payload["written"] is None:
        typer.echo(payload["content"], nl=False)
        return
    out = output.console()
    for setting in payload["settings"]:
        previous = setting["previous"]
        out.print("[green]✓[/] {} = {} [dim]({})[/]".format(
            escape(setting["key"]), escape(setting["value"]),
            "was unset" if previous is None else "was " + escape(previous or "empty")))
    if payload["changed"]:
        out.print("wrote {} [dim](backup: {})[/]".format(escape(payload["written"]), escape(payload["backup"] or "none")))
    else:
        out.print("no change: {}".format(escape(payload["written"])))


def _payload(path: str, exists: bool, outcome: Any, before: str) -> Dict[str, Any]:
    return {
        "ok": True, "action": "set", "config": path, "exists": exists, "changed": False,
        "would_change": outcome.text != before, "written": None, "backup": None,
        "settings": [{"key": key, "value": value, "previous": previous, "given": given}
                     for key, value, previous, given in outcome.settings],
        "content": outcome.text, "notes": list(outcome.notes), "warnings": list(outcome.warnings),
    }


def _set_in_place(path: str, settings: List[str], state_dir: Optional[str], lock_timeout: float) -> Dict[str, Any]:
    """Under the lock: read, edit, check, back up, write atomically (the file's owner and mode kept)."""
    from nvdocker_setup.adapters import statedir
    from nvdocker_setup.adapters.backups import BackupStore
    from nvdocker_setup.adapters.files import write_atomically
    from nvdocker_setup.adapters.lock import FileLock
    from nvdocker_setup.errors import TrustCheckFailed
    from nvdocker_setup.runtime import settings_edit

    ctx = common.make_context(state_dir, lock_timeout)
    uids = statedir.trusted_uids(ctx.euid)
    statedir.check_state_dir(ctx.state_dir, uids, create=True)
    with FileLock(ctx.lock_path, timeout=ctx.lock_timeout, trusted_uids=uids, what="the runtime's settings"):
        snapshot, text = _read(path)
        problem = _trust_problem(path) if snapshot.exists else None
        if problem is not None:
            raise TrustCheckFailed(
                "{}: nothing was written (the runtime refuses a file that is not root's alone)".format(problem),
                hint="chown root:root {} and chmod go-w it (and the directories above it), then re-run".format(path),
                reference="runtime-config-untrusted",
            )
        outcome = settings_edit.apply(text, settings, path)
        payload = _payload(path, snapshot.exists, outcome, text)
        payload["written"] = path
        if not payload["would_change"] and snapshot.exists:
            return payload
        store = BackupStore(ctx.backups_dir, clock=ctx.clock, trusted_uids=uids)
        reason = "config --set " + " ".join(settings)
        backup = store.save(snapshot, reason[:200])
        try:
            write_atomically(snapshot, outcome.text.encode("utf-8"))
        except BaseException:
            store.discard(backup)
            raise
        payload["changed"] = payload["would_change"] = True
        payload["backup"] = backup.name if snapshot.exists else None
        return payload
