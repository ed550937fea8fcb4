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
    output_path: str = typer.Option(
        DEFAULT_OUTPUT, "--output", "-o", metavar="PATH", envvar="NVDOCKER_CDI_OUTPUT",
        help="where to write the spec; - prints it (env NVDOCKER_CDI_OUTPUT)",
    ),
    driver_root: Optional[str] = driver_root_option(),
    cdi_version: Optional[str] = typer.Option(
        None, "--cdi-version", metavar="X.Y.Z", envvar="NVDOCKER_CDI_VERSION",
        help="declare this cdiVersion instead of the lowest one that expresses the spec (refused when lower than that)",
    ),
    mode: str = typer.Option(
        "auto", "--mode", metavar="MODE", envvar="NVDOCKER_CDI_MODE",
        help="what the spec describes: auto (the GPUs: nvml, or wsl on WSL2), nvml, wsl, management (one all device "
             "with every NVIDIA node, for monitoring agents), imex (the IMEX channels), nvswitch, gdrcopy, gds, mofed "
             "(one all device with those nodes)",
    ),
    name_strategies: Optional[List[str]] = typer.Option(  # noqa: B008 (typer.Option)
        None, "--device-name-strategy", metavar="STRATEGY", envvar="NVDOCKER_CDI_DEVICE_NAME_STRATEGY",
        help="how GPUs are named, repeatable: index (0, 0:1), uuid (GPU-..., MIG-...), type-index (gpu0, mig0:1); "
             "default index and uuid",
    ),
    vendor: str = typer.Option("nvidia.com", "--vendor", metavar="VENDOR", envvar="NVDOCKER_CDI_VENDOR",
                               help="the kind's vendor (kind = VENDOR/CLASS)"),
    device_class: Optional[str] = options.option(
        None, "--class", metavar="CLASS", envvar="NVDOCKER_CDI_CLASS",
        help="the kind's class (default: gpu; imex-channel for --mode imex; the mode's name for nvswitch, gdrcopy, gds, mofed)",
    ),
    no_all_device: bool = options.option(False, "--no-all-device", envvar="NVDOCKER_CDI_NO_ALL_DEVICE",
                                         help="no device named all"),
    device_ids: Optional[List[str]] = typer.Option(  # noqa: B008 (typer.Option)
        None, "--device-id", metavar="ID", envvar="NVDOCKER_CDI_DEVICE_ID",
        help="only these GPUs or MIG devices (index, UUID, <gpu>:<mig>), repeatable; default all",
    ),
    spec_format: Optional[str] = options.option(
        None, "--format", metavar="FORMAT", envvar="NVDOCKER_CDI_FORMAT",
        help="yaml or json (default: json for a .json output, else yaml)",
    ),
    dev_root: Optional[str] = options.option(
        None, "--dev-root", metavar="DIR", envvar="NVDOCKER_CDI_DEV_ROOT",
        help="the root whose dev/ holds the device nodes, when not the driver root's (a driver container: /)",
    ),
    as_json: bool = options.json_option(),
) -> None:
    """Write a CDI spec (kind nvidia.com/gpu; devices by index, UUID, MIG <gpu>:<mig> and all), atomically,
    mode 0644; IMEX channels, when the host has some, go to <output>-imex-channel (kind nvidia.com/imex-channel).
    Every option can also come from the environment (NVDOCKER_CDI_<OPTION>, as the refresh service's env file sets them)."""
    with common.reporting(as_json):
        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.driver.discovery import discover
        from nvdocker_setup.errors import UsageError

        if spec_format not in (None, "yaml", "json"):
            raise UsageError("--format must be yaml or json, got {!r}".format(spec_format), reference="usage")
        try:
            generate_options = cdi_spec.GenerateOptions(
                mode=mode, name_strategies=_words(name_strategies) or cdi_spec.DEFAULT_NAME_STRATEGIES, vendor=vendor,
                device_class=device_class, all_device=not no_all_device, device_ids=_words(device_ids) or ("all",))
        except Exception as exc:
            from nvdocker_setup.driver.errors import GpuSetupError

            if not isinstance(exc, GpuSetupError):
                raise
            raise UsageError(exc.message, reference="usage", hint=exc.hint) from None
        with gpu_errors():
            config = _runtime_config(driver_root)
            driver = discover(config.driver_root, config.mps_pipe_dir, dev_root=dev_root)
            try:
                spec = cdi_spec.generate(driver, config.hook_command(), cdi_version=cdi_version, options=generate_options)
            except cdi_spec.VersionRefused as refused:
                raise UsageError(str(refused), reference="cdi-version",
                                 hint="leave --cdi-version out to write the lowest version that expresses the spec") from None
            imex = cdi_spec.generate_imex(driver, cdi_version=cdi_version) if mode in ("auto", "nvml") else None
        _check(spec)
        if imex is not None:
            _check(imex)
        as_json_file = spec_format == "json" if spec_format else cdi_spec.is_json_path(output_path)
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


transform_app = typer.Typer(help="Rewrite a CDI spec.", no_args_is_help=True)
app.add_typer(transform_app, name="transform")


@transform_app.command("root")
def transform_root(
    from_root: str = typer.Option(..., "--from", metavar="DIR", help="the root to replace (absolute)"),
    to_root: str = typer.Option(..., "--to", metavar="DIR", help="the root to put in its place (absolute)"),
    relative_to: str = typer.Option("host", "--relative-to", metavar="SIDE",
                                    help="host (host paths: nodes' hostPath, mounts' hostPath, hook paths) or container"),
    input_path: str = typer.Option("-", "--input", metavar="PATH", help="the spec to read; - reads standard input"),
    output_path: str = typer.Option("-", "--output", "-o", metavar="PATH",
                                    help="where to write it (atomically, mode 0644); - prints it"),
    spec_format: Optional[str] = options.option(None, "--format", metavar="FORMAT",
                                                help="yaml or json (default: the input's, or the output's .json name)"),
) -> None:
    """Replace a root of a CDI spec's paths (a spec generated under a driver container's root, used
    where that root is mounted elsewhere): only at a path component boundary; any tool's spec."""
    with common.reporting(False):
        import sys

        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.cdi import transform
        from nvdocker_setup.errors import UsageError

        if relative_to not in transform.RELATIVE_TO or spec_format not in (None, "yaml", "json"):
            raise UsageError("--relative-to must be host or container and --format yaml or json", reference="usage")
        with gpu_errors():
            if input_path == "-":
                data = sys.stdin.buffer.read(64 << 20)
            else:
                _spec_exists(input_path)
                with open(input_path, "rb") as handle:
                    data = handle.read(64 << 20)
            spec = cdi_spec.parse(data, input_path if input_path != "-" else "standard input")
        try:
            moved = transform.transform_root(spec, from_root, to_root, relative_to)
        except ValueError as exc:
            raise UsageError(str(exc), reference="usage") from None
        meta = cdi_spec.header_metadata(data)
        if cdi_spec.DRIVER_ROOT_ANNOTATION in meta and relative_to == "host":
            meta[cdi_spec.DRIVER_ROOT_ANNOTATION] = transform.transform_path(
                meta[cdi_spec.DRIVER_ROOT_ANNOTATION], from_root, to_root)
        was_json = data.lstrip().startswith(b"{")
        as_json = spec_format == "json" if spec_format else (
            cdi_spec.is_json_path(output_path) if output_path != "-" else was_json)
        rendered = cdi_spec.render(moved, as_json=as_json, meta=meta)
        if output_path == "-":
            typer.echo(rendered.decode("utf-8"), nl=False)
            return
        _write_spec(output_path, rendered)


def _words(values: Optional[List[str]]) -> List[str]:
    """Repeated options, each also a comma or space list (how an environment variable gives several)."""
    return [word for value in values or () for word in value.replace(",", " ").split()]


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
        None, "--spec", metavar="PATH", help="list this one spec file instead of every spec directory"
    ),
    spec_dirs: Optional[List[str]] = typer.Option(  # noqa: B008 (typer.Option)
        None, "--spec-dir", metavar="DIR",
        help="a spec directory to read, in priority order (repeatable; default: /etc/cdi, /var/run/cdi and the "
             "directories the engines' configs name)",
    ),
    driver_root: Optional[str] = driver_root_option(),
    root: Optional[str] = typer.Option(
        None, "--root", metavar="DIR", hidden=True,
        help="read the spec directories and engine configs under DIR: a simulated host, or a host mounted there",
    ),
    as_json: bool = options.json_option(),
) -> None:
    """Show every CDI device name the spec directories define, which file a consumer takes it from (a later
    directory wins a name), then the nvidia.com/gpu spec's devices and whether it is stale for the installed driver."""
    with common.reporting(as_json):
        from nvdocker_setup.cdi import listing
        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.driver.discovery import discover
        from nvdocker_setup.driver.errors import GpuSetupError

        ctx = common.make_context(None)
        if root:
            import dataclasses

            ctx = dataclasses.replace(ctx, root=os.path.abspath(root))
        if spec_path:
            _spec_exists(spec_path)
            searched: List[Tuple[str, str]] = []
            files = [_read_spec_file(spec_path, os.path.dirname(spec_path), 0, spec_path)]
        else:
            searched = [(directory, "--spec-dir") for directory in spec_dirs] if spec_dirs else _spec_dirs(ctx)
            files = _spec_files(ctx, searched)
        names = listing.resolve(files)
        path = spec_path or _primary_spec(files, names, searched)
        with gpu_errors():
            spec, header = cdi_spec.load_document(ctx.host_path(path) if not spec_path else path)
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
        imex = _imex_listing(ctx.host_path(path) if not spec_path else path, driver)
        if as_json:
            output.print_json({
                "ok": True, "spec": path, "cdiVersion": spec.get("cdiVersion"), "driver_version": recorded,
                "current_driver_version": current, "stale": stale, "devices": devices, "common": common_edits,
                "imex": imex, "spec_dirs": [{"path": directory, "source": source} for directory, source in searched],
                "spec_files": [spec_file.to_json() for spec_file in files], "names": [name.to_json() for name in names],
            })
            return
        out = output.console()
        unicode = out.is_terminal and out.encoding.lower().startswith("utf")
        # what a spec file says is anybody's text: no control character reaches the terminal
        if searched:
            for line in name_table(searched, names):
                out.print(_printable(line), highlight=False, markup=False, soft_wrap=not out.is_terminal)
            out.print("")
        title = "{} (cdiVersion {}, generated for driver {})".format(path, spec.get("cdiVersion"), recorded or "unknown")
        for line in device_tree(title, devices, common_edits, unicode=unicode):
            out.print(_printable(line), highlight=False, markup=False, soft_wrap=not out.is_terminal)
        if imex is not None:
            title = "{} (IMEX channels, cdiVersion {})".format(imex["spec"], imex["cdiVersion"])
            for line in device_tree(title, imex["devices"], None, unicode=unicode):
                out.print(_printable(line), highlight=False, markup=False, soft_wrap=not out.is_terminal)
        warnings = output.console(stderr=True)
        from rich.markup import escape

        for spec_file in files:
            if spec_file.error is not None:
                warnings.print("[bold yellow]warning:[/] {} is not a readable CDI spec: {}".format(
                    escape(_printable(spec_file.path)), escape(_printable(spec_file.error))), highlight=False)
        for name in names:
            if name.conflict:
                warnings.print("[bold yellow]warning:[/] {} is defined by {} in one directory: CDI consumers drop it "
                               "(\"conflicting device\"); remove one of them".format(
                                   escape(_printable(name.name)), escape(_printable(" and ".join(name.conflict)))),
                               highlight=False)
        if stale:
            warnings.print(
                "[bold yellow]warning:[/] the spec is stale: the driver is now {}; run nvdocker-setup cdi generate".format(current)
            )
        if imex is not None and imex["stale"]:
            warnings.print(
                "[bold yellow]warning:[/] the IMEX spec {} is stale: {}; run nvdocker-setup cdi generate".format(
                    escape(imex["spec"]), escape(imex["stale_reason"])), highlight=False)


def _printable(text: Any, limit: int = 2000) -> str:
    """``text`` with every control character (C0, DEL, C1) as ``?`` and cut at ``limit``: spec files
    can be anybody's, and an escape sequence in one must not rewrite what the admin reads."""
    shown = "".join("?" if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 else char for char in str(text))
    return shown if len(shown) <= limit else shown[:limit] + "... ({} characters)".format(len(shown))


def _spec_dirs(ctx: Any) -> List[Tuple[str, str]]:
    """CDI's default directories, then those the engines' own configs add (dockerd's
    ``cdi-spec-dirs``, containerd's ``cdi_spec_dirs``, podman's containers.conf), each once."""
    from nvdocker_setup.cdi import listing

    found: List[Tuple[str, str]] = [(directory, "CDI's default") for directory in listing.DEFAULT_SPEC_DIRS]
    for directory, source in _engine_spec_dirs(ctx) + _podman_spec_dirs(ctx):
        if directory.startswith("/") and all(os.path.normpath(directory) != os.path.normpath(known) for known, _ in found):
            found.append((directory, source))
    return found


def _engine_spec_dirs(ctx: Any) -> List[Tuple[str, str]]:
    """What each registered engine's config sets (doctor reads them the same way); an engine that
    is not installed or whose config cannot be read adds nothing."""
    from nvdocker_setup import engines
    from nvdocker_setup.doctor import cdi as doctor_cdi
    from nvdocker_setup.doctor.facts import DoctorOptions, Facts

    found: List[Tuple[str, str]] = []
    for name in engines.REGISTRY:
        try:
            directories, source = doctor_cdi.spec_dirs(Facts(ctx, DoctorOptions(engine=name)))
        except Exception:  # noqa: BLE001 - a missing or broken engine config only means no extra directory
            continue
        if not source.startswith("CDI's default"):
            found += [(directory, source) for directory in directories]
    return found


#: podman's containers.conf, the distribution's then the admin's (the admin's wins).
PODMAN_CONFS = ("/usr/share/containers/containers.conf", "/etc/containers/containers.conf")


def _podman_spec_dirs(ctx: Any) -> List[Tuple[str, str]]:
    import tomlkit

    found: List[Tuple[str, str]] = []
    for conf in PODMAN_CONFS:
        try:
            with open(ctx.host_path(conf), encoding="utf-8") as handle:
                value = tomlkit.parse(handle.read()).get("engine", {}).get("cdi_spec_dirs")
        except Exception:  # noqa: BLE001 - no podman, or a file podman itself would refuse
            continue
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            found = [(str(item), "cdi_spec_dirs in " + conf) for item in value]
    return found


def _read_spec_file(shown: str, directory: str, priority: int, host_path: str) -> Any:
    from nvdocker_setup.cdi import listing
    from nvdocker_setup.cdi import spec as cdi_spec
    from nvdocker_setup.driver.errors import GpuSetupError

    try:
        value, _ = cdi_spec.load_document(host_path)
    except GpuSetupError as error:
        return listing.SpecFile(shown, directory, priority, None, error.message)
    except Exception as exc:  # noqa: BLE001 - a decoding or nesting error of whatever parser read it
        return listing.SpecFile(shown, directory, priority, None, "not valid JSON or YAML ({})".format(type(exc).__name__))
    if not isinstance(value, dict):
        return listing.SpecFile(shown, directory, priority, None, "not a JSON object")
    return listing.SpecFile(shown, directory, priority, value, None)


def _spec_files(ctx: Any, searched: List[Tuple[str, str]]) -> List[Any]:
    from nvdocker_setup.cdi import listing

    files = []
    for priority, (directory, _) in enumerate(searched):
        try:
            names = os.listdir(ctx.host_path(directory))
        except OSError:
            continue
        for name in listing.spec_file_names(names):
            shown = os.path.join(directory, name)
            files.append(_read_spec_file(shown, directory, priority, ctx.host_path(shown)))
    return files


def _primary_spec(files: List[Any], names: List[Any], searched: List[Tuple[str, str]]) -> str:
    """The spec whose GPU devices a consumer uses: the one that provides ``nvidia.com/gpu=all``,
    else the first readable spec of that kind. None: the error naming where we looked."""
    from nvdocker_setup.cdi import spec as cdi_spec
    from nvdocker_setup.errors import NotFound

    for name in names:
        if name.name == cdi_spec.KIND + "=all" and name.spec is not None:
            return name.spec
    for spec_file in files:
        if spec_file.kind == cdi_spec.KIND:
            return spec_file.path
    raise NotFound(
        "there is no CDI spec for {} in {}".format(cdi_spec.KIND, ", ".join(directory for directory, _ in searched)),
        reference="cdi-spec-missing",
        hint="write one with nvdocker-setup cdi generate (to /etc/cdi/nvdocker.yaml; the nvdocker-cdi-refresh "
             "service keeps /run/cdi/nvdocker.yaml current instead), or name a directory with --spec-dir",
    )


def name_table(searched: List[Tuple[str, str]], names: List[Any]) -> List[str]:
    """Each device name, the file consumers take it from and what it shadows or conflicts with."""
    lines = ["CDI spec directories, in priority order (a later one wins a name): " + ", ".join(
        "{} ({})".format(directory, source) for directory, source in searched)]
    width = max([len(name.name) for name in names] + [4])
    for name in names:
        if name.conflict:
            where = "none: conflict between {}".format(" and ".join(name.conflict))
        else:
            where = str(name.spec)
        if name.shadowed:
            where += " (shadows {})".format(", ".join(name.shadowed))
        lines.append("{}  {}".format(name.name.ljust(width), where))
    return lines


def _dicts(value: Any) -> List[Dict[str, Any]]:
    """The mappings of a list read from a spec (anything else in it, or a non-list, is skipped)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _edits_of(holder: Dict[str, Any]) -> Dict[str, Any]:
    edits = holder.get("containerEdits")
    return edits if isinstance(edits, dict) else {}


def _devices(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    devices = []
    for device in _dicts(spec.get("devices")):
        nodes = [node.get("path") for node in _dicts(_edits_of(device).get("deviceNodes"))]
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
    except (GpuSetupError, ValueError, UnicodeError, RecursionError):  # not a spec we wrote: someone else's file
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
    edits = _edits_of(spec)
    hooks = []
    for hook in _dicts(edits.get("hooks")):
        args = hook.get("args")
        if not isinstance(args, list):
            args = []
        command = next((arg for arg in args[1:] if isinstance(arg, str) and not arg.startswith(("-", "/"))), "")
        hooks.append("{} {} {}".format(hook.get("hookName", "?"), hook.get("path", "?"), command).strip())
    return {
        "device_nodes": [str(node.get("path")) for node in _dicts(edits.get("deviceNodes"))],
        "mounts": [str(mount.get("containerPath")) for mount in _dicts(edits.get("mounts"))],
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
