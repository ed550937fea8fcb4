"""The `nvdocker-setup` application: registers one module per verb."""

import typer

from nvdocker_setup import __version__
from nvdocker_setup.cli import backups, cdi, doctor, install, restore, show, uninstall

app = typer.Typer(
    name="nvdocker-setup",
    help="Wire a GPU OCI runtime into Docker's daemon.json without losing a byte of it.",
    no_args_is_help=True,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo("nvdocker-setup {}".format(__version__))
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
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


def main() -> None:
    app(prog_name="nvdocker-setup")
