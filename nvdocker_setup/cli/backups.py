"""`nvdocker-setup backups list`: the backups taken before each change."""

from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output

app = typer.Typer(help="Inspect the backups taken before every change.", no_args_is_help=True)


@app.command("list")
def list_backups(
    engine: Optional[options.EngineName] = options.option(  # noqa: B008 (typer.Option)
        None, "--engine", metavar="ENGINE",
        help="only the backups of this engine's config file (docker, containerd, auto); default: every file",
    ),
    config: Optional[str] = options.option(
        None, "--config", metavar="PATH", help="only the backups of this file (with --engine: that engine's file)",
    ),
    state_dir: Optional[str] = options.state_dir_option(),
    as_json: bool = options.json_option(),
) -> None:
    """List backups, oldest first."""
    from dataclasses import asdict

    from nvdocker_setup import operations

    with common.reporting(as_json):
        ctx = common.make_context(state_dir)
        source = None
        if engine is not None or config is not None:
            source = operations.config_path(ctx, common.engine(ctx, engine or "docker"), config)
        backups = operations.list_backups(ctx, source)
        if as_json:
            output.print_json({"ok": True, "backups": [asdict(b) for b in backups]})
            return
        out = output.console()
        if not backups:
            out.print("no backups in {}".format(ctx.backups_dir))
            return
        from nvdocker_setup.cli.render import print_backups

        print_backups(backups, out, ctx.backups_dir)
