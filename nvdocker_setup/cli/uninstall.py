"""`nvdocker-setup uninstall`: undo exactly what install changed."""

from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME


def uninstall(
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", metavar="NAME", help="key under runtimes"),
    config: Optional[str] = options.config_option(),
    engine: options.EngineName = options.engine_option(),  # noqa: B008 (typer.Option)
    dry_run: bool = options.option(False, "--dry-run", help="print the diff and write nothing"),
    force: bool = options.option(
        False, "--force", help="remove the entry even if its path changed since install, or was never recorded"
    ),
    in_place: bool = options.in_place_option(),
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
    """Remove what install added (and only that), restoring the previous default runtime."""
    from nvdocker_setup import operations

    with common.reporting(as_json):
        apply_options = options.build_apply_options(apply, no_restart, service_manager, timeout, yes, as_json, restart_command)
        ctx = common.make_context(state_dir, lock_timeout)
        result = operations.uninstall(
            ctx, runtime_name, config=config, dry_run=dry_run, force=force, in_place=in_place,
            apply_options=apply_options, reporter=output.RichReporter(enabled=not as_json),
            engine=common.engine(ctx, engine),
        )
        output.render_result(result, as_json)
