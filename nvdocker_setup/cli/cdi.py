"""`nvdocker-setup cdi generate|list`: the CDI spec for the host's NVIDIA GPUs.

With a CDI spec, Docker 25+ (``features.cdi``) and Podman inject GPUs themselves
(``docker run --device nvidia.com/gpu=0``); the spec holds the same edits our runtime applies.
It declares the lowest ``cdiVersion`` that expresses it (``--cdi-version`` pins a higher one), so
that older consumers (Debian 12's podman 4.3 reads up to 0.5.0) read it too.
"""

import contextlib
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import typer

from nvdocker_setup.cdi import DEFAULT_OUTPUT
from nvdocker_setup.cli import common, options, output

app = typer.Typer(help="Generate and inspect the CDI spec for the NVIDIA GPUs.", no_args_is_help=True)


def output_option():
    return typer.Option(
        DEFAULT_OUTPUT, "--output", "-o", metavar="PATH",
        help="where to write the spec: a .json name writes JSON, any other YAML; - prints it",
    )


def driver_root_option():
    return typer.Option(
        None, "--driver-root", metavar="DIR",
        help="where the driver is installed (default: NVDOCKER_DRIVER_ROOT, then driver-root in /etc/nvdocker/runtime.conf, then /)",
    )


@contextlib.contextmanager
def gpu_errors() -> Iterator[None]:
    """The driver code's own exception, as the CLI's error (rendered with its hint), with an id and
    exit status by where it was raised: /etc/nvdocker/runtime.conf (``runtime-config-invalid``, 3),
    reading a CDI spec (``cdi-spec-invalid``, 3), else the driver or a GPU that is not there
    (``gpu-driver``, 9)."""
    from nvdocker_setup.driver.errors import GpuSetupError
    from nvdocker_setup.errors import ConfigReadError, NotFound

    try:
        yield
    except GpuSetupError as error:
        frame = error.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        module = frame.tb_frame.f_globals.get("__name__", "") if frame is not None else ""
        function = frame.tb_frame.f_code.co_name if frame is not None else ""
        if module == "nvdocker_setup.runtime.config":
            raise ConfigReadError(error.message, hint=error.hint, reference="runtime-config-invalid") from None
        if module == "nvdocker_setup.cdi.spec" and function != "generate":
            raise ConfigReadError(error.message, hint=error.hint, reference="cdi-spec-invalid") from None
        raise NotFound(error.message, hint=error.hint, reference="gpu-driver") from None


def _spec_exists(path: str) -> None:
    from nvdocker_setup.errors import NotFound

    if not os.path.lexists(path):
        raise NotFound("there is no CDI spec at {}".format(path), reference="cdi-spec-missing",
                       hint="write one with nvdocker-setup cdi generate (or name it with --spec)")


def _runtime_config(driver_root: Optional[str]):
    from nvdocker_setup.runtime.config import load

    config = load(os.environ)
    if driver_root:
        config.driver_root = driver_root
    return config


def _check(spec) -> None:
    from nvdocker_setup.cdi import validate
    from nvdocker_setup.errors import ValidationFailed

    found = validate.schema_problems(spec) + validate.problems(spec)
    if found:
        raise ValidationFailed(
            "the generated CDI spec does not validate; nothing was written",
            details=found,
            reference="cdi-spec-invalid",
            hint="this is a bug in nvdocker-setup; please report it with the details",
        )


@app.command("generate")
def generate(
    output_path: str = output_option(),
    driver_root: Optional[str] = driver_root_option(),
    cdi_version: Optional[str] = typer.Option(
        None, "--cdi-version", metavar="X.Y.Z",
        help="declare this cdiVersion instead of the lowest one that expresses the spec (refused when lower than that)",
    ),
    as_json: bool = options.json_option(),
) -> None:
    """Write a CDI spec (kind nvidia.com/gpu; devices by index, UUID, MIG <gpu>:<mig> and all), atomically,
    mode 0644; IMEX channels, when the host has some, go to <output>-imex-channel (kind nvidia.com/imex-channel)."""
    with common.reporting(as_json):
        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.driver.discovery import discover
        from nvdocker_setup.errors import UsageError

        with gpu_errors():
            config = _runtime_config(driver_root)
            driver = discover(config.driver_root, config.mps_pipe_dir)
            try:
                spec = cdi_spec.generate(driver, config.hook_command(), cdi_version=cdi_version)
            except cdi_spec.VersionRefused as refused:
                raise UsageError(str(refused), reference="cdi-version",
                                 hint="leave --cdi-version out to write the lowest version that expresses the spec") from None
            imex = cdi_spec.generate_imex(driver, cdi_version=cdi_version)
        _check(spec)
        if imex is not None:
            _check(imex)
        as_json_file = cdi_spec.is_json_path(output_path)
        data = cdi_spec.render(spec, as_json=as_json_file, meta=cdi_spec.metadata(driver))
        for note in driver.refused[:32]:  # the spec leaves them out; say so on stderr, whatever the format
            typer.echo("warning: left out {} (a host path a container gets must be root's alone; "
                       "see `nvdocker-setup doctor`)".format(note[:400]), err=True)
        if output_path == "-":
            typer.echo(data.decode("utf-8"), nl=False)
            return
        changed = _write_spec(output_path, data)
        names = cdi_spec.qualified_names(spec)
        # IMEX channels are another kind, so another file; one we wrote before goes when they do
        imex_output = cdi_spec.imex_path(output_path)
        if imex is not None:
            changed = _write_spec(imex_output, cdi_spec.render(imex, as_json=as_json_file, meta=cdi_spec.metadata(driver))) \
                or changed
            names += cdi_spec.qualified_names(imex)
        elif os.path.isfile(imex_output) and cdi_spec.is_ours(*cdi_spec.load_document(imex_output)):
            os.unlink(imex_output)
            changed = True
        if as_json:
            output.print_json({
                "ok": True, "changed": changed, "output": output_path, "format": "json" if as_json_file else "yaml",
                "cdiVersion": spec["cdiVersion"], "driver_version": driver.version, "devices": names,
                "imex_output": imex_output if imex is not None else None, "left_out": list(driver.refused),
            })
            return
        out = output.console()
        verb = "wrote" if changed else "no change:"
        out.print("{} {} (cdiVersion {}, driver {})".format(verb, output_path, spec["cdiVersion"], driver.version))
        if imex is not None:
            out.print("  IMEX channels in {}".format(imex_output))
        for name in names:
            out.print("  " + name)


def _write_spec(path: str, data: bytes) -> bool:
    """Write ``data`` atomically unless the file has those bytes already; mode 0644. Whether it changed."""
    from nvdocker_setup.adapters.files import read_snapshot, write_atomically

    snapshot = read_snapshot(path)
    changed = not (snapshot.exists and snapshot.data == data)
    if changed:
        write_atomically(snapshot, data)
    if os.stat(snapshot.real_path).st_mode & 0o7777 != 0o644:
        os.chmod(snapshot.real_path, 0o644)  # rootless engines must be able to read it
    return changed


@app.command("list")
def list_devices(
    spec_path: Optional[str] = typer.Option(
        None, "--spec", metavar="PATH", help="the spec to read (default: the generate default, /etc/cdi/nvdocker.yaml)"
    ),
    driver_root: Optional[str] = driver_root_option(),
    as_json: bool = options.json_option(),
) -> None:
    """Show the devices of the CDI spec, and whether it is stale for the installed driver."""
    with common.reporting(as_json):
        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.driver.discovery import discover
        from nvdocker_setup.driver.errors import GpuSetupError

        path = spec_path or DEFAULT_OUTPUT
        _spec_exists(path)
        with gpu_errors():
            spec, header = cdi_spec.load_document(path)
            config = _runtime_config(driver_root)
        recorded = cdi_spec.recorded_driver_version(spec, header)
        driver = None
        try:
            driver = discover(config.driver_root)
            current: Optional[str] = driver.version
        except GpuSetupError:
            current = None
        stale = bool(recorded and current and recorded != current)
        devices = _devices(spec)
        common_edits = _common_edits(spec)
        imex = _imex_listing(path, driver)
        if as_json:
            output.print_json({
                "ok": True, "spec": path, "cdiVersion": spec.get("cdiVersion"), "driver_version": recorded,
                "current_driver_version": current, "stale": stale, "devices": devices, "common": common_edits,
                "imex": imex,
            })
            return
        out = output.console()
        unicode = out.is_terminal and out.encoding.lower().startswith("utf")
        title = "{} (cdiVersion {}, generated for driver {})".format(path, spec.get("cdiVersion"), recorded or "unknown")
        for line in device_tree(title, devices, common_edits, unicode=unicode):
            out.print(line, highlight=False, markup=False, soft_wrap=not out.is_terminal)
        if imex is not None:
            title = "{} (IMEX channels, cdiVersion {})".format(imex["spec"], imex["cdiVersion"])
            for line in device_tree(title, imex["devices"], None, unicode=unicode):
                out.print(line, highlight=False, markup=False, soft_wrap=not out.is_terminal)
        if stale:
            output.console(stderr=True).print(
                "[bold yellow]warning:[/] the spec is stale: the driver is now {}; run nvdocker-setup cdi generate".format(current)
            )
        if imex is not None and imex["stale"]:
            from rich.markup import escape

            output.console(stderr=True).print(
                "[bold yellow]warning:[/] the IMEX spec {} is stale: {}; run nvdocker-setup cdi generate".format(
                    escape(imex["spec"]), escape(imex["stale_reason"])), highlight=False)


def _devices(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    devices = []
    for device in spec.get("devices") or ():
        nodes = [node.get("path") for node in (device.get("containerEdits") or {}).get("deviceNodes") or ()]
        devices.append({"name": "{}={}".format(spec.get("kind"), device.get("name")), "device_nodes": nodes})
    return devices


def _imex_listing(path: str, driver: Any) -> Optional[Dict[str, Any]]:
    """The IMEX spec `cdi generate` writes beside the spec at ``path`` (``<stem>-imex-channel.<ext>``):
    its channels, and whether it is stale for ``driver`` (None: the driver could not be read);
    None when there is no such file of kind nvidia.com/imex-channel."""
    from nvdocker_setup.cdi import spec as cdi_spec
    from nvdocker_setup.driver.errors import GpuSetupError

    imex_path = cdi_spec.imex_path(path)
    if not os.path.isfile(imex_path):
        return None
    try:
        spec, header = cdi_spec.load_document(imex_path)
    except (GpuSetupError, ValueError, UnicodeError):  # not a spec we wrote: someone else's file
        return None
    except Exception as exc:  # PyYAML's errors, where it is installed
        if type(exc).__module__.split(".")[0] != "yaml":
            raise
        return None
    if spec.get("kind") != cdi_spec.IMEX_KIND:
        return None
    reason = cdi_spec.imex_staleness(spec, header, driver) if driver is not None else None
    return {
        "spec": imex_path, "cdiVersion": spec.get("cdiVersion"), "driver_version": cdi_spec.driver_version_of(spec, header),
        "stale": reason is not None, "stale_reason": reason, "devices": _devices(spec),
    }


def _common_edits(spec: Dict[str, Any]) -> Dict[str, List[str]]:
    """What every device of the spec brings along: node paths, mounts (container paths), hooks."""
    edits = spec.get("containerEdits") or {}
    hooks = []
    for hook in edits.get("hooks") or ():
        args = hook.get("args") or []
        command = next((arg for arg in args[1:] if not arg.startswith(("-", "/"))), "")
        hooks.append("{} {} {}".format(hook.get("hookName", "?"), hook.get("path", "?"), command).strip())
    return {
        "device_nodes": [str(node.get("path")) for node in edits.get("deviceNodes") or ()],
        "mounts": [str(mount.get("containerPath")) for mount in edits.get("mounts") or ()],
        "hooks": hooks,
    }


def _is_library(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith("lib") and ".so" in name


def device_tree(title: str, devices: List[Dict[str, Any]], common_edits: Optional[Dict[str, List[str]]],
                unicode: bool = True) -> List[str]:
    """The spec as a tree: each GPU (its names: index, UUID) -> its device nodes, then what every
    GPU container gets (control nodes, libraries and binaries, hooks; no such branch when
    ``common_edits`` is None: the IMEX spec). Plain ASCII when piped."""
    tee, last, bar, space = ("├── ", "└── ", "│   ", "    ") if unicode else ("|-- ", "`-- ", "|   ", "    ")
    groups: Dict[Tuple[str, ...], List[str]] = {}
    for device in devices:
        groups.setdefault(tuple(str(node) for node in device["device_nodes"]), []).append(device["name"])
    branches: List[Tuple[str, List[str]]] = []
    for nodes, names in groups.items():
        branches.append((", ".join(names), list(nodes)))
    with_common = common_edits is not None
    if common_edits is None:
        common_edits = {"device_nodes": [], "mounts": [], "hooks": []}
    libraries = [path for path in common_edits["mounts"] if _is_library(path)]
    others = [path for path in common_edits["mounts"] if not _is_library(path)]
    shared: List[str] = []
    if common_edits["device_nodes"]:
        shared.append("device nodes: " + " ".join(common_edits["device_nodes"]))
    if libraries:
        shared.append("libraries ({}): {}".format(len(libraries), " ".join(sorted(p.rsplit("/", 1)[-1] for p in libraries))))
    if others:
        shared.append("files ({}): {}".format(len(others), " ".join(others)))
    shared.extend("hook " + hook for hook in common_edits["hooks"])
    if with_common:
        branches.append(("every GPU container also gets", shared))
    lines = [title]
    for index, (label, leaves) in enumerate(branches):
        final = index == len(branches) - 1
        lines.append((last if final else tee) + label)
        for leaf_index, leaf in enumerate(leaves):
            lines.append((space if final else bar) + (last if leaf_index == len(leaves) - 1 else tee) + leaf)
    return lines
