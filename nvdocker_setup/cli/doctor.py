"""`nvdocker-setup doctor`: run the checks and render them (the checks live in nvdocker_setup.doctor)."""

from typing import List, Optional

import typer

from nvdocker_setup.cli import common, options, output
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME


def doctor(
    check: Optional[List[str]] = typer.Option(
        None, "--check", metavar="ID", help="run only this check (repeatable; --list shows the ids)", show_default=False,
        autocompletion=options.complete_check_ids,
    ),
    list_checks: bool = options.option(False, "--list", help="list the checks and exit"),
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", metavar="NAME", help="key under runtimes"),
    config: Optional[str] = options.config_option("check"),
    driver_root: Optional[str] = options.option(
        None, "--driver-root", metavar="DIR",
        help="where the NVIDIA driver is, laid out like / (default: env NVDOCKER_DRIVER_ROOT, then driver-root "
        "in /etc/nvdocker/runtime.conf, then /)",
    ),
    smoke: bool = options.option(False, "--smoke", help="also run a container with the runtime and look for the GPUs"),
    smoke_image: Optional[str] = options.option(
        None, "--smoke-image", metavar="IMAGE", help="image for --smoke, already on dockerd (default: busybox:latest)"
    ),
    state_dir: Optional[str] = options.state_dir_option(),
    as_json: bool = options.json_option(),
    engine: options.EngineName = options.engine_option(),  # noqa: B008 (typer.Option)
    root: Optional[str] = options.option(
        None, "--root", metavar="DIR", hidden=True,
        help="read host files (/proc, /etc, /dev, /sys, /run) under DIR: a simulated host, or a host mounted there",
    ),
) -> None:
    """Check the driver, the runtime, the engine's config (daemon.json, config.toml) and its daemon (dockerd,
    containerd); name each fault and its fix."""
    from nvdocker_setup.doctor import checks as registry
    from nvdocker_setup.doctor.facts import DEFAULT_SMOKE_IMAGE, DoctorOptions, Facts
    from nvdocker_setup.errors import UsageError
    from nvdocker_setup.exit_status import ExitStatus

    with common.reporting(as_json):
        ctx = common.make_context(state_dir)
        if list_checks:
            name = common.engine(ctx, engine).name
            _list(registry.all_checks(name), as_json, name)
            return
        engine_name = common.engine(ctx, engine).name
        if root:
            import dataclasses
            import os

            ctx = dataclasses.replace(ctx, root=os.path.abspath(root))
        doctor_options = DoctorOptions(
            config=config, runtime_name=runtime_name, driver_root=driver_root, smoke=smoke,
            smoke_image=smoke_image or DEFAULT_SMOKE_IMAGE, engine=engine_name,
        )
        try:
            registry.select(check, engine_name)
        except registry.NotForEngine as other:
            raise UsageError(
                "not a check of {}'s doctor: {}".format(engine_name, other.args[0]),
                hint="`nvdocker-setup doctor --list --engine {}` shows its ids".format(engine_name),
            ) from None
        except KeyError as unknown:
            raise UsageError(
                "unknown check id: {}".format(unknown.args[0]),
                hint="`nvdocker-setup doctor --list` shows the ids",
            ) from None
        report = registry.run_checks(Facts(ctx, doctor_options), check)
        if as_json:
            output.print_json(dict(report.to_dict(), engine=engine_name))
        else:
            from nvdocker_setup.cli.render import print_doctor

            print_doctor(report, output.console(), ran_all=not check)
        if report.failed:
            raise typer.Exit(int(ExitStatus.DOCTOR_FAILED))


def _list(items, as_json: bool, engine: str) -> None:
    if as_json:
        output.print_json({"engine": engine, "checks": [{"id": item.id, "group": item.group, "title": item.title,
                                                         "opt_in": item.opt_in} for item in items]})
        return
    from rich.markup import escape

    out = output.console()
    for item in items:
        out.print("{:<28} {:<17} {}{}".format(item.id, item.group, escape(item.title),
                                               " [dim](opt-in: {})[/]".format(item.opt_in_flag) if item.opt_in else ""))
