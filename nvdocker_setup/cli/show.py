"""`nvdocker-setup show`: which file, which entry, which default runtime."""

import json
from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME


def show(
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", metavar="NAME", help="key under runtimes"),
    config: Optional[str] = options.config_option("read"),
    engine: options.EngineName = options.engine_option(),  # noqa: B008 (typer.Option)
    state_dir: Optional[str] = options.state_dir_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Show the runtime entry, the default runtime and how the config file was chosen."""
    from rich.markup import escape

    from nvdocker_setup import operations

    with common.reporting(as_json):
        ctx = common.make_context(state_dir)
        shown = operations.show(ctx, runtime_name, config=config, engine=common.engine(ctx, engine))
        if as_json:
            output.print_json(shown.to_dict())
            return
        out = output.console()
        out.print("[bold]config:[/]          {}{}".format(escape(shown.config), "" if shown.exists else " (does not exist)"))
        out.print("[bold]chosen by:[/]       {} [dim]({})[/]".format(escape(shown.config_reason), shown.config_rule))
        entry = json.dumps(shown.entry, ensure_ascii=False, default=output.json_value) if shown.entry is not None else "[dim]absent[/]"
        containerd = shown.engine == "containerd"
        label = "handler {}".format(shown.runtime_name) if containerd else "runtimes.{}".format(shown.runtime_name)
        out.print("[bold]{}:[/] {}".format(escape(label), entry if shown.entry is None else escape(entry)))
        out.print("[bold]default runtime:[/] {} [dim]({})[/]".format(escape(shown.default_runtime), shown.default_runtime_source))
        out.print("[bold]{}:[/]    {}".format("enable_cdi" if containerd else "features.cdi",
                                              json.dumps(shown.cdi) if shown.cdi is not None else "[dim]unset[/]"))
        out.print("[bold]installed by nvdocker-setup:[/] {}".format("yes" if shown.installed_by_us else "no"))
        owner = _owner(shown.entry) if shown.entry is not None and not shown.installed_by_us else None
        if owner:
            out.print("[bold]owner:[/]           {}".format(escape(owner)))
        out.print("[bold]next:[/]            {}".format(escape(_next_step(shown, containerd))))


#: Binaries of other tools' runtime entries, and who writes them.
_OWNERS = (
    ("nvidia-container-runtime", "NVIDIA's nvidia-container-toolkit (nvidia-ctk runtime configure, or nvidia-docker2)"),
    ("nvidia-container-runtime.cdi", "NVIDIA's nvidia-container-toolkit (its CDI mode)"),
    ("nvidia-container-runtime.legacy", "NVIDIA's nvidia-container-toolkit (its legacy mode)"),
    ("amd-container-runtime", "AMD's container toolkit (amd-ctk)"),
)


def _binary(entry) -> Optional[str]:
    if not isinstance(entry, dict):
        return None
    options = entry.get("options")
    if not isinstance(options, dict):
        options = {}
    for value in (entry.get("path"), options.get("BinaryName"), entry.get("BinaryName")):
        if isinstance(value, str) and value:
            return value
    return None


def _owner(entry) -> Optional[str]:
    """Which tool wrote an entry that is not ours, when its binary says so."""
    binary = _binary(entry)
    if binary is None:
        return None
    name = binary.rstrip("/").rsplit("/", 1)[-1]
    for known, owner in _OWNERS:
        if name == known:
            return "{} ({})".format(owner, binary)
    return "another tool ({})".format(binary)


def _next_step(shown, containerd: bool) -> str:
    engine = " --engine containerd" if containerd else ""
    if shown.entry is None:
        return "sudo nvdocker-setup install{} adds it (--dry-run shows the change first)".format(engine)
    if shown.installed_by_us:
        return "nothing to do: `nvdocker-setup doctor{}` checks that it works, `sudo nvdocker-setup uninstall{}` undoes it".format(
            engine, engine)
    return ("it is not ours: `sudo nvdocker-setup install{} --runtime-name nvdocker` adds ours beside it, or "
            "`--force` replaces it (uninstall puts it back)".format(engine))
