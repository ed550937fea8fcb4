"""`nvdocker-setup install`: merge the GPU runtime into daemon.json."""

from typing import Any, List, Optional

import typer

from nvdocker_setup.cli import common, options, output
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME


def force_option():
    return options.option(
        False, "--force",
        help="replace another default runtime than runc, or another tool's runtimes.<name> entry",
    )


def allow_unsafe_runtime_option():
    return options.option(
        False, "--allow-unsafe-runtime",
        help="accept a runtime binary that is missing (also with --default-runtime), unsafe, or that a "
        "non-root user could create",
    )


def runtime_path_option(*aliases: str):
    return options.option(
        None, "--runtime-path", *aliases, metavar="PATH",
        help="absolute path of the runtime (default: nvdocker-runtime on PATH, else /usr/bin/nvdocker-runtime)",
    )


def install(
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", metavar="NAME", help="key under runtimes"),
    runtime_path: Optional[str] = runtime_path_option(),
    runtime_arg: Optional[List[str]] = typer.Option(
        None, "--runtime-arg", metavar="ARG", help="argument for the runtime (repeatable), written as runtimeArgs",
        show_default=False,
    ),
    default_runtime: bool = options.option(False, "--default-runtime", help="make it dockerd's default runtime"),
    set_as_default: bool = options.option(False, "--set-as-default", hidden=True, help="nvidia-ctk's --default-runtime"),
    cdi: bool = options.option(False, "--cdi", help="set features.cdi=true (other feature flags are kept)"),
    cdi_enabled: bool = options.option(False, "--cdi.enabled", hidden=True, help="nvidia-ctk's --cdi"),
    config: Optional[str] = options.config_option(),
    engine: options.EngineName = options.engine_option(),  # noqa: B008 (typer.Option)
    dry_run: bool = options.option(False, "--dry-run", help="print the diff and write nothing"),
    force: bool = force_option(),
    allow_unsafe_runtime: bool = allow_unsafe_runtime_option(),
    in_place: bool = options.in_place_option(),
    drop_in: bool = options.option(
        False, "--drop-in",
        help="containerd 2.1+: write the handler to a drop-in file that config.toml imports (conf.d/99-nvdocker.toml "
        "beside it) instead of editing config.toml; refused unless `containerd config dump` proves the merged "
        "config unchanged apart from the handler",
    ),
    drop_in_path: Optional[str] = options.option(
        None, "--drop-in-path", metavar="PATH", help="the drop-in file (implies --drop-in)",
    ),
    apply: options.ApplyMode = options.apply_option(),  # noqa: B008 (typer.Option)
    no_restart: bool = options.no_restart_option(),
    service_manager: options.ServiceManagerName = options.service_manager_option(),  # noqa: B008
    restart_command: Optional[str] = options.restart_command_option(),
    timeout: float = options.timeout_option(),
    yes: bool = options.yes_option(),
    state_dir: Optional[str] = options.state_dir_option(),
    lock_timeout: float = options.lock_timeout_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Add the runtime to the engine's config (daemon.json, config.toml): locked, backed up, validated, written
    atomically, applied to the running daemon and verified."""
    run_install(
        runtime_name=runtime_name, runtime_path=runtime_path, runtime_args=runtime_arg or (),
        set_default=default_runtime or set_as_default, enable_cdi=cdi or cdi_enabled, config=config,
        dry_run=dry_run, force=force, allow_unsafe_runtime=allow_unsafe_runtime, in_place=in_place, apply=apply,
        no_restart=no_restart, service_manager=service_manager, restart_command=restart_command, timeout=timeout,
        yes=yes, state_dir=state_dir, lock_timeout=lock_timeout, as_json=as_json, engine=engine,
        write_mode="drop-in" if drop_in or drop_in_path else None, drop_in_path=drop_in_path,
    )


def run_install(
    *, runtime_name: str, runtime_path: Optional[str], runtime_args: Any, set_default: bool, enable_cdi: bool,
    config: Optional[str], dry_run: bool, force: bool, allow_unsafe_runtime: bool, in_place: bool, apply: Any,
    no_restart: bool, service_manager: Any, restart_command: Optional[str], timeout: float, yes: bool,
    state_dir: Optional[str], lock_timeout: float, as_json: bool, engine: Any = "docker",
    write_mode: Optional[str] = None, drop_in_path: Optional[str] = None,
) -> None:
    """install, also behind `runtime configure` (nvidia-ctk's spelling)."""
    from nvdocker_setup import operations
    from nvdocker_setup.core.plan import InstallRequest

    with common.reporting(as_json):
        apply_options = options.build_apply_options(apply, no_restart, service_manager, timeout, yes, as_json, restart_command)
        ctx = common.make_context(state_dir, lock_timeout)
        chosen = common.engine(ctx, engine)
        request = InstallRequest(
            runtime_name=runtime_name,
            runtime_path=runtime_path or operations.default_runtime_path(ctx),
            runtime_args=tuple(runtime_args),
            set_default=set_default,
            enable_cdi=enable_cdi,
            force=force,
            allow_unsafe_runtime=allow_unsafe_runtime,
            write_mode=write_mode,
            drop_in_path=drop_in_path,
        )
        result = operations.install(
            ctx, request, config=config, dry_run=dry_run, in_place=in_place,
            apply_options=apply_options, reporter=output.RichReporter(enabled=not as_json), engine=chosen,
        )
        output.render_result(result, as_json)
