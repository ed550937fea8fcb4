"""`nvdocker-setup system create-dev-char-symlinks|create-device-nodes`: the host setup that
nvidia-ctk's `system` commands do, on :mod:`nvdocker_setup.driver.devices`.

    nvdocker-setup system create-device-nodes --control-devices
    nvdocker-setup system create-dev-char-symlinks

The /dev/char links keep GPU containers their devices across `systemctl daemon-reload` with the
systemd cgroup driver (doctor's driver-dev-char-links); udev/71-nvdocker-dev-char.rules re-creates
them whenever the nvidia module loads.
"""

import contextlib
from typing import Iterator

import typer

from nvdocker_setup.cli import common, options, output

app = typer.Typer(
    help="Host setup for GPU containers: NVIDIA control device nodes and their /dev/char links.",
    no_args_is_help=True,
)

_MARKS = {
    "created": "[green]✓[/]", "replaced": "[green]✓[/]", "would-create": "[cyan]+[/]", "would-replace": "[cyan]~[/]",
    "present": "[dim]=[/]", "conflict": "[bold red]✗[/]", "mismatch": "[bold red]✗[/]", "skipped": "[yellow]-[/]",
}


def driver_root_option():
    return typer.Option(
        "/", "--driver-root", metavar="DIR",
        help="the root whose /dev holds the nodes (a simulated or chroot'ed host); the kernel's nodes are the "
        "host's, so not a driver container's library root",
    )


@contextlib.contextmanager
def device_errors() -> Iterator[None]:
    """The driver code's failures as the CLI's errors: a symlink or a file on the way below the
    driver root is ``unsafe-path`` (exit 6), no driver or node ``gpu-driver`` (9), a failed write
    (not root, a read-only /dev) ``write-failed`` (8)."""
    from nvdocker_setup.driver.devices import UnsafePath
    from nvdocker_setup.driver.errors import GpuSetupError
    from nvdocker_setup.errors import NotFound, TrustCheckFailed, WriteFailed

    try:
        yield
    except UnsafePath as error:
        raise TrustCheckFailed(error.message, hint=error.hint, reference="unsafe-path") from None
    except GpuSetupError as error:
        raise NotFound(error.message, hint=error.hint, reference="gpu-driver") from None
    except OSError as error:
        raise WriteFailed("{}: {}".format(error.filename or "device setup", error.strerror or error),
                          hint="run it as root, on a writable /dev", reference="write-failed") from None


def _render(report, as_json: bool, noun: str) -> None:
    from rich.markup import escape

    from nvdocker_setup.exit_status import ExitStatus

    data = report.to_dict()
    if as_json:
        output.print_json(data)
    else:
        out, err = output.console(), output.console(stderr=True)
        for note in report.notes:
            err.print("[dim]note:[/] " + escape(note))
        for entry in report.entries:
            what = entry.path + (" -> " + entry.target if entry.kind == "link" and entry.target else "")
            if entry.kind == "node" and entry.major is not None:
                what += " ({}:{})".format(entry.major, entry.minor)
            line = "{} {} {}".format(_MARKS.get(entry.status, "?"), entry.status, escape(what))
            if entry.message:
                line += " [dim]({})[/]".format(escape(entry.message))
            out.print(line)
        planned = sum(1 for entry in report.entries if entry.status.startswith("would-"))
        done = sum(1 for entry in report.entries if entry.status in ("created", "replaced"))
        if report.dry_run:
            out.print("[bold]dry run:[/] {} {}{} to make; nothing was written".format(planned, noun, "" if planned == 1 else "s") if planned
                      else "[bold]dry run:[/] nothing to do")
        elif done:
            out.print("made {} {}{} under {}".format(done, noun, "" if done == 1 else "s", escape(report.driver_root)))
        elif not report.problems:
            out.print("nothing to do: every {} is in place".format(noun))
    if report.problems:
        if not as_json:
            output.console(stderr=True).print(
                "[bold red]error:[/] {} left alone [dim](conflict)[/]".format(
                    ", ".join(entry.path for entry in report.problems)))
        raise typer.Exit(int(ExitStatus.CONFLICT))


@app.command("create-dev-char-symlinks")
def create_dev_char_symlinks(
    driver_root: str = driver_root_option(),
    dev_char_path: str = typer.Option(
        "/dev/char", "--dev-char-path", metavar="DIR",
        help="where the links go, a path inside the driver root",
    ),
    dry_run: bool = options.option(False, "--dry-run", help="list what would be made and write nothing"),
    force: bool = options.option(
        False, "--force", help="replace a symlink that points elsewhere (anything that is not a symlink is never replaced)"
    ),
    as_json: bool = options.json_option(),
) -> None:
    """Link /dev/char/<major>:<minor> to every NVIDIA device node, as udev does (195:0 -> ../nvidia0).

    The nodes are the character devices nvidiactl, nvidia<N>, nvidia-uvm, nvidia-uvm-tools,
    nvidia-modeset and nvidia-caps/* under the driver root's /dev; their numbers come from the nodes,
    cross-checked against /proc/devices (a stale node gets no link). With the systemd cgroup driver
    these links keep running GPU containers their devices across `systemctl daemon-reload`
    ("Failed to initialize NVML: Unknown Error"). Idempotent: a link that reaches the node is left
    alone; a link elsewhere, or a file, is reported (exit 7) and left alone. No symlink below the
    driver root is followed.
    """
    from nvdocker_setup.driver import devices

    with common.reporting(as_json), device_errors():
        report = devices.create_dev_char_links(driver_root, dev_char_path, dry_run=dry_run, force=force)
    _render(report, as_json, "link")


@app.command("create-device-nodes")
def create_device_nodes(
    control_devices: bool = options.option(
        False, "--control-devices",
        help="create nvidiactl, nvidia-modeset, nvidia-uvm and nvidia-uvm-tools (the only kind made so far)",
    ),
    driver_root: str = driver_root_option(),
    load_kernel_modules: bool = options.option(
        False, "--load-kernel-modules", envvar="NVDOCKER_LOAD_KMODS",
        help="first load nvidia, nvidia-uvm and nvidia-modeset with modprobe (env NVDOCKER_LOAD_KMODS=true; "
             "only with the driver root /)",
    ),
    dry_run: bool = options.option(False, "--dry-run", help="list what would be made and write nothing"),
    as_json: bool = options.json_option(),
) -> None:
    """Create the missing NVIDIA control device nodes, mode 0666 root:root, like nvidia-modprobe.

    nvidiactl (195:255) and nvidia-modeset (195:254) when /proc/devices lists the nvidia driver;
    nvidia-uvm and nvidia-uvm-tools (<nvidia-uvm major>:0 and :1) when it lists nvidia-uvm. A node
    with the right number is left alone; anything else at the name is reported (exit 7), never
    replaced.
    """
    from nvdocker_setup.driver import devices
    from nvdocker_setup.errors import UsageError

    with common.reporting(as_json):
        if not control_devices:
            raise UsageError("say which nodes to create: --control-devices",
                             hint="nvdocker-setup system create-device-nodes --control-devices")
        with device_errors():
            if load_kernel_modules and not dry_run:
                devices.load_kernel_modules(driver_root)
            report = devices.create_control_nodes(driver_root, dry_run=dry_run)
    _render(report, as_json, "node")
