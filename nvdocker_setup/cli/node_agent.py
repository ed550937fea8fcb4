"""`nvdocker-setup node-agent`: the Kubernetes DaemonSet's entrypoint (logic in nvdocker_setup.node_agent)."""

from typing import Optional

import typer

from nvdocker_setup.cli import common, options, output
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME
from nvdocker_setup.node_agent import (
    DEFAULT_HOST_ROOT,
    DEFAULT_INSTALL_DIR,
    DEFAULT_LAUNCHER,
    DEFAULT_READY_FILE,
    DEFAULT_STATE_DIR,
)


def node_agent(
    engine: str = typer.Option("containerd", "--engine", metavar="ENGINE", help="the host's engine: containerd or docker"),
    host_root: str = typer.Option(DEFAULT_HOST_ROOT, "--host-root", metavar="DIR",
                                  help="where the host's / (or its needed parts) is mounted in this container"),
    install_dir: str = typer.Option(DEFAULT_INSTALL_DIR, "--install-dir", metavar="HOSTDIR",
                                    help="host directory for the runtime launcher and its Python modules"),
    config: Optional[str] = options.option(
        None, "--config", metavar="HOSTPATH",
        help="the host's engine config (default: /etc/containerd/config.toml, /etc/docker/daemon.json)"),
    socket: Optional[str] = options.option(
        None, "--socket", metavar="HOSTPATH",
        help="the host daemon's API socket (default: /run/containerd/containerd.sock, /var/run/docker.sock)"),
    state_dir: str = typer.Option(DEFAULT_STATE_DIR, "--state-dir", metavar="HOSTDIR",
                                  help="host directory for install records and backups"),
    runtime_name: str = typer.Option(DEFAULT_RUNTIME_NAME, "--runtime-name", metavar="NAME",
                                     help="runtime (containerd: handler) name; a RuntimeClass's handler"),
    default_runtime: bool = options.option(False, "--default-runtime", help="make it the default runtime"),
    cdi: bool = options.option(False, "--cdi", help="enable CDI in the engine"),
    ready_file: str = typer.Option(DEFAULT_READY_FILE, "--ready-file", metavar="PATH",
                                   help="written (in this container) once the host daemon runs the runtime"),
    launcher: str = typer.Option(DEFAULT_LAUNCHER, "--launcher", metavar="PATH",
                                 help="the C launcher built for INSTALL_DIR/lib (scripts/build-launcher.sh)"),
    service_manager: str = typer.Option(
        "systemd", "--service-manager", metavar="MANAGER",
        help="how the host daemon is restarted: systemd (the host's, see --host-exec), command (--restart-command), "
        "signal (dockerd: SIGHUP only) or none (write the file only)"),
    restart_command: Optional[str] = options.restart_command_option(),
    host_exec: str = typer.Option("nsenter", "--host-exec", metavar="HOW",
                                  help="how host commands run: nsenter (into --host-pid's namespaces, needs hostPID) or "
                                  "chroot (below --host-root)"),
    host_pid: int = typer.Option(1, "--host-pid", metavar="PID", help="the host process whose namespaces nsenter enters"),
    systemctl: str = typer.Option("systemctl", "--systemctl", metavar="PATH", help="the host's systemctl"),
    unit: Optional[str] = options.option(None, "--unit", metavar="UNIT",
                                         help="the daemon's unit (default: containerd.service, docker.service)"),
    timeout: float = options.timeout_option(),
    lock_timeout: float = typer.Option(60.0, "--lock-timeout", metavar="SECONDS",
                                       help="wait this long for another run to finish"),
    as_json: bool = options.json_option(),
) -> None:
    """Configure this node's engine from a Kubernetes pod, wait, undo it all on SIGTERM."""
    from nvdocker_setup import node_agent as agent

    output.json_lines()  # a pod's log: every record, errors too, is one line
    try:
        _run_agent(agent, as_json, engine=engine, host_root=host_root, install_dir=install_dir, config=config,
                   socket=socket, state_dir=state_dir, runtime_name=runtime_name, set_default=default_runtime, cdi=cdi,
                   ready_file=ready_file, launcher=launcher, service_manager=service_manager,
                   restart_command=restart_command, host_exec=host_exec, host_pid=host_pid, systemctl=systemctl,
                   unit=unit, timeout=timeout, lock_timeout=lock_timeout)
    finally:
        output.json_lines(False)


def _run_agent(agent, as_json: bool, **values) -> None:
    with common.reporting(as_json):
        stop = agent.Stop()
        stop.install()
        opts = agent.AgentOptions(**values)
        raise typer.Exit(agent.NodeAgent(opts, agent.Log(as_json)).run(stop))
