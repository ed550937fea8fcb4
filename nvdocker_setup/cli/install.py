"""`nvdocker-setup install`: merge the GPU runtime into daemon.json."""

from typing import List, Optional

import typer

from nvdocker_setup.cli import common
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME


def install(
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", help="key under runtimes"),
    runtime_path: Optional[str] = typer.Option(
        None, "--runtime-path", metavar="PATH", help="absolute path of the runtime (default: nvdocker-runtime)"
    ),
    runtime_arg: Optional[List[str]] = typer.Option(
        None, "--runtime-arg", metavar="ARG", help="argument for the runtime (repeatable), written as runtimeArgs"
    ),
    default_runtime: bool = typer.Option(False, "--default-runtime", help="make it dockerd's default runtime"),
    cdi: bool = typer.Option(False, "--cdi", help="set features.cdi=true (other feature flags are kept)"),
    config: Optional[str] = common.config_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the diff and write nothing"),
    force: bool = typer.Option(
        False, "--force", help="replace another default runtime; accept a missing or unsafe runtime binary"
    ),
    in_place: bool = common.in_place_option(),
    apply: str = common.apply_option(),
    no_restart: bool = common.no_restart_option(),
    service_manager: str = common.service_manager_option(),
    restart_command: Optional[str] = common.restart_command_option(),
    timeout: float = common.timeout_option(),
    yes: bool = common.yes_option(),
    state_dir: Optional[str] = common.state_dir_option(),
    lock_timeout: float = common.lock_timeout_option(),
    as_json: bool = common.json_option(),
) -> None:
    """Add the runtime to daemon.json: locked, backed up, validated, written atomically."""
    from nvdocker_setup import operations
    from nvdocker_setup.core.plan import InstallRequest

    with common.reporting(as_json):
        ctx = common.make_context(state_dir, lock_timeout)
        request = InstallRequest(
            runtime_name=runtime_name,
            runtime_path=runtime_path or operations.default_runtime_path(ctx),
            runtime_args=tuple(runtime_arg or ()),
            set_default=default_runtime,
            enable_cdi=cdi,
            force=force,
        )
        options = common.build_apply_options(apply, no_restart, service_manager, timeout, yes, as_json, restart_command)
        result = operations.install(
            ctx, request, config=config, dry_run=dry_run, in_place=in_place,
            apply_options=options, reporter=common.RichReporter(enabled=not as_json),
        )
        common.render_result(result, as_json)
