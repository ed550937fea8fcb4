"""`nvdocker-setup runtime configure`: nvidia-ctk's spelling of `install`, with all of install's safety.

    nvidia-ctk runtime configure --runtime=docker --set-as-default --cdi.enabled
    nvdocker-setup runtime configure --runtime=docker --set-as-default --cdi.enabled

Docker and containerd are configured (through install's engines); CRI-O is a usage error that says so.
"""

from typing import Optional

import typer

from nvdocker_setup.cli import common, install, options
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME

app = typer.Typer(
    help="nvidia-ctk compatibility: `runtime configure` is `install` spelled the nvidia-ctk way.",
    no_args_is_help=True,
)


class Engine(options.Choice):
    """nvidia-ctk's --runtime."""

    docker = "docker"
    containerd = "containerd"
    crio = "crio"


@app.command("configure")
def configure(
    engine: Engine = options.option(  # noqa: B008 (a typer.Option)
        Engine.docker, "--runtime", metavar="ENGINE",
        help="the container engine to configure: docker or containerd (crio is not supported)",
    ),
    set_as_default: bool = options.option(
        False, "--set-as-default", "--nvidia-set-as-default", help="make the runtime dockerd's default runtime"
    ),
    cdi_enabled: bool = options.option(
        False, "--cdi.enabled", "--cdi.enable", "--enable-cdi", help="set features.cdi=true (other flags are kept)"
    ),
    config: Optional[str] = options.config_option(),
    dry_run: bool = options.option(False, "--dry-run", help="print the diff and write nothing"),
    runtime_name: str = typer.Option(
        DEFAULT_RUNTIME_NAME, "--nvidia-runtime-name", "--runtime-name", metavar="NAME", help="key under runtimes"
    ),
    runtime_path: Optional[str] = install.runtime_path_option("--nvidia-runtime-path"),
    force: bool = install.force_option(),
    allow_unsafe_runtime: bool = install.allow_unsafe_runtime_option(),
    apply: options.ApplyMode = options.apply_option(),  # noqa: B008 (typer.Option)
    no_restart: bool = options.no_restart_option(),
    service_manager: options.ServiceManagerName = options.service_manager_option(),  # noqa: B008
    restart_command: Optional[str] = options.restart_command_option(),
    timeout: float = options.timeout_option(),
    yes: bool = options.yes_option(),
    state_dir: Optional[str] = options.state_dir_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Add the runtime to Docker's daemon.json or containerd's config.toml like `nvidia-ctk runtime
    configure`, through install (install --engine docker|containerd).

    The entry is written (Docker: with runtimeArgs, since dockerd ignores the args key that nvidia-ctk
    writes) after a backup, validated, atomically, applied to the daemon and verified;
    `nvdocker-setup uninstall --engine ...` undoes exactly this. Another tool's runtimes.<name> entry is
    not taken over without --force.
    """
    if engine is Engine.crio:
        from nvdocker_setup.errors import UsageError

        with common.reporting(as_json):
            raise UsageError(
                "--runtime=crio is not supported: nvdocker-setup configures Docker's daemon.json and containerd's "
                "config.toml",
                hint="for CRI-O, use nvidia-ctk runtime configure --runtime=crio",
            )
    install.run_install(
        runtime_name=runtime_name, runtime_path=runtime_path, runtime_args=(), set_default=set_as_default,
        enable_cdi=cdi_enabled, config=config, dry_run=dry_run, force=force,
        allow_unsafe_runtime=allow_unsafe_runtime, in_place=False, apply=apply, no_restart=no_restart,
        service_manager=service_manager, restart_command=restart_command, timeout=timeout, yes=yes,
        state_dir=state_dir, lock_timeout=10.0, as_json=as_json, engine=engine.value,
    )
