"""`nvdocker-setup restore`: put a backup back (after backing up the current file)."""

from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output


def restore(
    backup: Optional[str] = typer.Argument(
        None, metavar="[BACKUP]", help="backup name (or unique prefix)", show_default=False,
        autocompletion=options.complete_backup_names,
    ),
    latest: bool = options.option(False, "--latest", help="restore the newest backup of the config file"),
    config: Optional[str] = options.config_option(),
    engine: options.EngineName = options.engine_option(),  # noqa: B008 (typer.Option)
    in_place: bool = options.in_place_option(),
    state_dir: Optional[str] = options.state_dir_option(),
    lock_timeout: float = options.lock_timeout_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Restore the engine's config file from a backup; the current file is backed up first."""
    from nvdocker_setup import operations
    from nvdocker_setup.errors import UsageError

    with common.reporting(as_json):
        if bool(backup) == bool(latest):
            raise UsageError("name one backup or pass --latest", hint="see: nvdocker-setup backups list")
        ctx = common.make_context(state_dir, lock_timeout)
        result = operations.restore(ctx, backup, config=config, in_place=in_place, engine=common.engine(ctx, engine))
        output.render_result(result, as_json)
