"""`nvdocker-setup backups list`: the backups taken before each change."""

from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output

app = typer.Typer(help="Inspect the backups taken before every change.", no_args_is_help=True)


@app.command("list")
def list_backups(
    state_dir: Optional[str] = options.state_dir_option(),
    as_json: bool = options.json_option(),
) -> None:
    """List backups, oldest first."""
    from dataclasses import asdict

    from nvdocker_setup import operations

    with common.reporting(as_json):
        ctx = common.make_context(state_dir)
        backups = operations.list_backups(ctx)
        if as_json:
            output.print_json({"ok": True, "backups": [asdict(b) for b in backups]})
            return
        out = output.console()
        if not backups:
            out.print("no backups in {}".format(ctx.backups_dir))
            return
        from nvdocker_setup.cli.render import print_backups

        print_backups(backups, out, ctx.backups_dir)
