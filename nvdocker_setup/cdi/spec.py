"""A CDI spec (kind ``nvidia.com/gpu``) for the GPUs of a driver root, and reading one back.

Devices are named by index (``"0"``), by UUID (``"GPU-..."``), MIG devices by ``"<gpu>:<mig>"``
(and ``MIG-<uuid>`` where the driver root maps it, see :mod:`nvdocker_setup.driver.mig`), and
``all``; each device carries its ``/dev/nvidiaN`` node (a MIG device also its two
``/dev/nvidia-caps/nvidia-cap<M>`` nodes), and the spec-wide ``containerEdits`` carry the control nodes, the
driver files for every capability and our ld cache hook: the same :mod:`nvdocker_setup.driver`
edits the runtime applies.

The spec declares the lowest ``cdiVersion`` that can express it (0.5.0 for what we write), because
every consumer refuses a version newer than its CDI library: Debian 12's podman 4.3 reads up to
0.5.0, Docker 26.1 up to 0.7.0. Our own metadata (driver version and root, generator) is therefore
not a spec-level ``annotations`` map, which needs 0.6.0, but comment lines in the YAML header
(``# nvdocker-setup/driver-version: 550.54.14``) that no consumer reads. A JSON spec cannot carry
comments: its driver version is read back from the versioned driver libraries it mounts
(``libcuda.so.550.54.14``), like a foreign spec's. Specs from older releases kept the metadata in
``annotations``; it is still read from there.
"""

import json
import os
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from nvdocker_setup import __version__
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.discovery import Driver
from nvdocker_setup.driver.edits import HookCommand, common_edits, gpu_edits
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import ContainerEdits

VENDOR = "nvidia.com"
CLASS = "gpu"
KIND = VENDOR + "/" + CLASS
#: NVIDIA's kind for IMEX channels (``nvidia-ctk cdi generate --mode=imex``).
IMEX_KIND = VENDOR + "/imex-channel"
ALL_DEVICE = "all"
#: Our metadata keys: lines ``# <key>: <value>`` of the YAML header (annotations in older specs).
DRIVER_VERSION_ANNOTATION = "nvdocker-setup/driver-version"
DRIVER_ROOT_ANNOTATION = "nvdocker-setup/driver-root"
GENERATOR_ANNOTATION = "nvdocker-setup/generator"
METADATA_KEYS = (DRIVER_VERSION_ANNOTATION, DRIVER_ROOT_ANNOTATION, GENERATOR_ANNOTATION)
_METADATA_LINE = re.compile(r"^#\s*(nvdocker-setup/[a-z-]+):\s?(.*)$")
#: A driver branch has 3 digits: WSL2's ``libcuda.so.1.1`` names no version.
_LIBRARY_VERSION = re.compile(r"^lib(?:cuda|nvidia-ml)\.so\.(\d{3,}\.\d+(?:\.\d+)?)$")
#: CDI does not inject twice: a runtime that reads NVIDIA_VISIBLE_DEVICES must leave CDI devices alone.
CDI_ONLY_ENV = ("NVIDIA_VISIBLE_DEVICES=void",)
#: Every cdiVersion the CDI library accepts, oldest first.
CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")


def version_key(version: str):
    return tuple(int(part) for part in version.lstrip("v").split("."))


def _all_edits(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    edits = [spec.get("containerEdits") or {}]
    edits += [device.get("containerEdits") or {} for device in spec.get("devices") or () if isinstance(device, dict)]
    return [edit for edit in edits if isinstance(edit, dict)]


def _devices(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [device for device in spec.get("devices") or () if isinstance(device, dict)]


def _in_edits(field: str, test: Callable[[Any], bool]) -> Callable[[Dict[str, Any]], bool]:
    def uses(spec: Dict[str, Any]) -> bool:
        return any(test(item) for edit in _all_edits(spec) for item in edit.get(field) or () if isinstance(item, dict))
    return uses


def _edits_key(key: str) -> Callable[[Dict[str, Any]], bool]:
    return lambda spec: any(edit.get(key) not in (None, [], {}) for edit in _all_edits(spec))


def _starts_without_letter(name: Any) -> bool:
    first = str(name or "")[:1]
    return bool(first) and not (first.isascii() and first.isalpha())


class VersionRule(NamedTuple):
    """A feature of the spec format and the first cdiVersion whose parser knows it."""

    version: str
    feature: str
    uses: Callable[[Dict[str, Any]], bool]


#: The CDI library's rules (specs-go/version.go, ``requiresV040`` ... ``requiresV110``), as data.
#: Anything not listed (hook ``env``, ``args`` and ``timeout``, mount ``options``, ``env``,
#: device node modes and ids) is readable by every version since 0.3.0. A consumer whose library
#: predates a version parses strictly, so it refuses the feature even under a lower cdiVersion
#: (seen: podman 4.3 refuses a spec with ``annotations`` declared as 0.5.0).
VERSION_RULES: Tuple[VersionRule, ...] = (
    VersionRule("0.4.0", "a mount with a type", _in_edits("mounts", lambda mount: bool(mount.get("type")))),
    VersionRule("0.5.0", "a device node with a hostPath", _in_edits("deviceNodes", lambda node: bool(node.get("hostPath")))),
    VersionRule("0.5.0", "a device name that does not start with a letter",
                lambda spec: any(_starts_without_letter(device.get("name")) for device in _devices(spec))),
    VersionRule("0.6.0", "annotations",
                lambda spec: bool(spec.get("annotations")) or any(device.get("annotations") for device in _devices(spec))),
    VersionRule("0.6.0", "a dot in the kind's class", lambda spec: "." in str(spec.get("kind", "")).partition("/")[2]),
    VersionRule("0.7.0", "intelRdt", lambda spec: any(edit.get("intelRdt") is not None for edit in _all_edits(spec))),
    VersionRule("0.7.0", "additionalGids", _edits_key("additionalGids")),
    VersionRule("1.1.0", "netDevices", _edits_key("netDevices")),
)


def required_features(spec: Dict[str, Any]) -> List[VersionRule]:
    """The rules ``spec`` triggers, in rule order."""
    return [rule for rule in VERSION_RULES if rule.uses(spec)]


def minimum_version(spec: Dict[str, Any]) -> str:
    """The lowest cdiVersion whose parser accepts every feature ``spec`` uses: every consumer
    refuses a version above its CDI library's, so never declare more."""
    required = CDI_VERSIONS[0]
    for rule in required_features(spec):
        if version_key(rule.version) > version_key(required):
            required = rule.version
    return required


class VersionRefused(ValueError):
    """A requested cdiVersion that is unknown or cannot express the spec."""


def choose_version(spec: Dict[str, Any], requested: Optional[str] = None) -> str:
    """The cdiVersion to declare: the minimum, or ``requested`` when it can express ``spec``."""
    required = minimum_version(spec)
    if requested is None:
        return required
    wanted = requested.strip().lstrip("v")
    if wanted not in CDI_VERSIONS:
        raise VersionRefused("unknown cdiVersion {!r}: the CDI versions are {}".format(requested, ", ".join(CDI_VERSIONS)))
    if version_key(wanted) < version_key(required):
        needs = ["{} needs {}".format(rule.feature, rule.version) for rule in required_features(spec)
                 if version_key(rule.version) > version_key(wanted)]
        raise VersionRefused("cdiVersion {} cannot express this spec, which needs at least {}: {}".format(
            wanted, required, "; ".join(needs)))
    return wanted


class Mode:
    """``cdi generate --mode``, NVIDIA's names: what the spec describes."""

    AUTO = "auto"  #: the GPUs: nvml, or wsl on a WSL2 driver root (the default)
    NVML = "nvml"  #: the GPUs of a native driver, by index/UUID, MIG devices, all
    WSL = "wsl"  #: WSL2's one /dev/dxg as "all"
    MANAGEMENT = "management"  #: one "all" device with every NVIDIA node (monitoring agents)
    IMEX = "imex"  #: the IMEX channels (kind nvidia.com/imex-channel)
    GATED = ("nvswitch", "gdrcopy", "gds", "mofed")  #: one "all" device with those nodes
    ALL = (AUTO, NVML, WSL, MANAGEMENT, IMEX) + GATED


#: ``--device-name-strategy``: "0" and "0:1"; "GPU-<uuid>" and "MIG-<uuid>"; "gpu0" and "mig0:1".
NAME_STRATEGIES = ("index", "uuid", "type-index")
DEFAULT_NAME_STRATEGIES = ("index", "uuid")
#: --mode -> the discovery feature of the opt-in devices (driver/discovery.py GATED_DEVICES).
GATED_FEATURES = {"nvswitch": "NVIDIA_NVSWITCH", "gdrcopy": "NVIDIA_GDRCOPY", "gds": "NVIDIA_GDS", "mofed": "NVIDIA_MOFED"}
#: Nodes a management spec leaves out (NVIDIA's too): they belong to other modes.
MANAGEMENT_SKIPPED = ("nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VENDOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9]$|^[A-Za-z0-9]$")


class GenerateOptions:
    """What ``cdi generate`` may change about the spec (NVIDIA's options of the same names)."""

    __slots__ = ("mode", "name_strategies", "vendor", "device_class", "all_device", "device_ids")

    def __init__(self, mode: str = Mode.AUTO, name_strategies=DEFAULT_NAME_STRATEGIES, vendor: str = VENDOR,
                 device_class: Optional[str] = None, all_device: bool = True, device_ids=("all",)) -> None:
        if mode not in Mode.ALL:
            raise GpuSetupError("unknown mode {!r}: one of {}".format(mode, ", ".join(Mode.ALL)))
        unknown = [name for name in name_strategies if name not in NAME_STRATEGIES]
        if unknown or not name_strategies:
            raise GpuSetupError("unknown device name strategy {}: use {}".format(
                ", ".join(repr(name) for name in unknown) or "(none)", ", ".join(NAME_STRATEGIES)))
        if not _VENDOR.match(vendor) or "." not in vendor and vendor != VENDOR:
            raise GpuSetupError("invalid CDI vendor {!r}: letters, digits, '-', '_' and '.', a domain name such as "
                                "nvidia.com".format(vendor))
        self.mode = mode
        self.name_strategies = tuple(dict.fromkeys(name_strategies))
        self.vendor = vendor
        if device_class is None:
            device_class = {Mode.IMEX: "imex-channel"}.get(mode, mode if mode in Mode.GATED else CLASS)
        if not _VENDOR.match(device_class) or "." in device_class:
            raise GpuSetupError("invalid CDI class {!r}: letters, digits, '-' and '_'".format(device_class))
        self.device_class = device_class
        self.all_device = all_device
        self.device_ids = tuple(device_ids) or ("all",)

    @property
    def kind(self) -> str:
        return "{}/{}".format(self.vendor, self.device_class)


def _gpu_names(gpu: Any, strategies: Tuple[str, ...]) -> List[str]:
    names = {"index": str(gpu.index), "uuid": gpu.uuid, "type-index": "gpu{}".format(gpu.index)}
    return [names[strategy] for strategy in strategies if names[strategy]]


def _mig_names(mig: Any, strategies: Tuple[str, ...]) -> List[str]:
    names = {"index": mig.name, "uuid": mig.uuid, "type-index": "mig" + mig.name}
    return [names[strategy] for strategy in strategies if names[strategy]]


def _selected(driver: Driver, device_ids: Tuple[str, ...]) -> Tuple[List[Any], List[Any]]:
    """(GPUs, MIG devices) that ``--device-id`` values name (``all``: every one)."""
    from nvdocker_setup.driver.mig import is_mig_selector

    if "all" in device_ids:
        return list(driver.gpus), [] if driver.wsl else list(driver.mig.devices())
    gpus, migs = [], []
    for selector in device_ids:
        if is_mig_selector(selector):
            found = driver.mig.find(selector)
            if found not in migs:
                migs.append(found)
        else:
            gpu = driver.find_gpu(selector)
            if gpu not in gpus:
                gpus.append(gpu)
    return gpus, migs


def generate(driver: Driver, hook: Optional[HookCommand], cdi_version: Optional[str] = None,
             options: Optional[GenerateOptions] = None) -> Dict[str, Any]:
    """The CDI spec for the GPUs of ``driver`` (all of them, or ``options.device_ids``), with the
    files of every capability, declaring the lowest cdiVersion that expresses it (or
    ``cdi_version``; :class:`VersionRefused` when it cannot). Our metadata is not in it: see
    :func:`metadata`. ``options.mode`` other than nvml/wsl/auto: :func:`generate_for_mode`."""
    options = options or GenerateOptions()
    if options.mode not in (Mode.AUTO, Mode.NVML, Mode.WSL):
        return generate_for_mode(driver, hook, options, cdi_version)
    if options.mode == Mode.WSL and not driver.wsl:
        raise GpuSetupError("--mode wsl: the driver under {} is not WSL2's (no /dev/dxg with /usr/lib/wsl/lib)".format(
            driver.root), hint="leave --mode out (auto) to describe this driver")
    if options.mode == Mode.NVML and driver.wsl:
        raise GpuSetupError("--mode nvml: the driver under {} is WSL2's".format(driver.root),
                            hint="leave --mode out (auto) or use --mode wsl")
    if not driver.gpus:
        raise GpuSetupError(
            "no NVIDIA GPU found under {}: a CDI spec needs at least one device".format(driver.proc_root),
            hint="check nvidia-smi -L on the host",
        )
    devices = []
    per_gpu = []
    if driver.wsl:  # one /dev/dxg for every GPU: only "all" names what a container gets
        devices.append({"name": ALL_DEVICE, "containerEdits": gpu_edits(driver, driver.gpus[0]).to_cdi()})
    gpus, migs = ([], []) if driver.wsl else _selected(driver, options.device_ids)
    for gpu in gpus:
        edits = gpu_edits(driver, gpu, ALL_CAPABILITIES, hook)  # the spec carries every capability's files
        per_gpu.append(edits)
        devices += [{"name": name, "containerEdits": edits.to_cdi()} for name in _gpu_names(gpu, options.name_strategies)]
    for mig in migs:  # "0:1", and MIG-<uuid> where known
        edits = driver.mig.edits(mig)
        per_gpu.append(edits)
        devices += [{"name": name, "containerEdits": edits.to_cdi()} for name in _mig_names(mig, options.name_strategies)]
    if not driver.wsl and options.all_device and per_gpu:
        devices.append({"name": ALL_DEVICE, "containerEdits": ContainerEdits().merged(*per_gpu).to_cdi()})
    if not devices:
        raise GpuSetupError("the spec would have no device (--no-all-device with no other name)",
                            hint="drop --no-all-device or add a --device-name-strategy")
    common = common_edits(driver, ALL_CAPABILITIES, hook)
    common.env.extend(CDI_ONLY_ENV)
    spec: Dict[str, Any] = {
        "cdiVersion": "",
        "kind": options.kind,
        "devices": devices,
        "containerEdits": common.to_cdi(),
    }
    spec["cdiVersion"] = choose_version(spec, cdi_version)
    return spec


def management_nodes(driver: Driver) -> List[Any]:
    """Every NVIDIA character device a management (monitoring) container gets: ``/dev/nvidia*``
    but the opt-in ones (:data:`MANAGEMENT_SKIPPED`), the MIG capability nodes and the IMEX channel
    nodes, each as root's own node (the trust rules of every node)."""
    import os as _os

    found = []
    for directory, prefix in (("/dev", "nvidia"), ("/dev/nvidia-caps", "nvidia-cap"),
                              ("/dev/nvidia-caps-imex-channels", "channel")):
        try:
            names = sorted(_os.listdir(_os.path.join(driver.dev_root, _os.path.relpath(directory, "/dev"))))[:4096]
        except OSError:
            continue
        for name in names:
            if not name.startswith(prefix) or name.startswith(MANAGEMENT_SKIPPED):
                continue
            node = driver.device_node(directory + "/" + name)
            if node is not None:
                found.append(node)
    return found


def generate_for_mode(driver: Driver, hook: Optional[HookCommand], options: GenerateOptions,
                      cdi_version: Optional[str] = None) -> Dict[str, Any]:
    """The specs of the other modes, each one ``all`` device (NVIDIA's shapes): ``management``
    (every NVIDIA node, and the driver files of every capability for the tools), the opt-in
    devices' (``nvswitch``, ``gdrcopy``, ``gds``, ``mofed``), or ``imex`` (one device per channel)."""
    if options.mode == Mode.IMEX:
        spec = generate_imex(driver, cdi_version)
        if spec is None:
            raise GpuSetupError("--mode imex: the driver under {} has no IMEX channel nodes".format(driver.root),
                                hint="create them (nvidia-modprobe -i <n>) or leave --mode out")
        spec["kind"] = options.kind
        return spec
    common = ContainerEdits()
    if options.mode == Mode.MANAGEMENT:
        common = common_edits(driver, ALL_CAPABILITIES, hook)
        common.env.extend(CDI_ONLY_ENV)
        shared = {node.path for node in common.device_nodes}  # the control nodes, once
        nodes = [node for node in management_nodes(driver) if node.path not in shared]
    else:
        nodes = driver.gated_device_nodes(GATED_FEATURES[options.mode])
    if not nodes:
        raise GpuSetupError("--mode {}: no such device node under {}".format(options.mode, driver.dev_root),
                            hint="load the driver of those devices, or leave --mode out")
    result: Dict[str, Any] = {
        "cdiVersion": "",
        "kind": options.kind,
        "devices": [{"name": ALL_DEVICE, "containerEdits": ContainerEdits(device_nodes=nodes).to_cdi()}],
        "containerEdits": common.to_cdi(),
    }
    result["cdiVersion"] = choose_version(result, cdi_version)
    return result


def generate_imex(driver: Driver, cdi_version: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The CDI spec of kind ``nvidia.com/imex-channel`` (NVIDIA's name) for the IMEX channels of
    ``driver``, one device per channel (``nvidia.com/imex-channel=0``); None when it has none.
    A CDI spec has one kind, so this is a second file next to the GPUs' (see :func:`imex_path`)."""
    if driver.wsl:
        return None
    channels = driver.mig.imex_channels()
    if not channels:
        return None
    devices = [{"name": str(number), "containerEdits": driver.mig.imex_edits([str(number)]).to_cdi()}
               for number in channels]
    spec: Dict[str, Any] = {"cdiVersion": "", "kind": IMEX_KIND, "devices": devices, "containerEdits": {}}
    spec["cdiVersion"] = choose_version(spec, cdi_version)
    return spec


def imex_path(output: str) -> str:
    """Where the IMEX spec goes for a GPU spec written to ``output``: ``nvdocker.yaml`` ->
    ``nvdocker-imex-channel.yaml`` in the same directory."""
    stem, dot, extension = output.rpartition(".")
    if not dot or "/" in extension:
        return output + "-imex-channel"
    return "{}-imex-channel.{}".format(stem, extension)


def imex_staleness(spec: Dict[str, Any], header: Optional[Dict[str, str]], driver: Driver) -> Optional[str]:
    """Why an IMEX spec (:func:`generate_imex`) no longer fits ``driver``, None when it does: it
    records another driver version, or lists other channels than the driver root has nodes for
    (a channel gone makes every container asking for it fail; a new one is not in the spec)."""
    recorded = driver_version_of(spec, header)
    if recorded and recorded != driver.version:
        return "it was made for driver {}, the driver is now {}".format(recorded, driver.version)
    listed = sorted((str(device.get("name")) for device in spec.get("devices") or () if isinstance(device, dict)),
                    key=lambda name: (len(name), name))
    present = [str(number) for number in ([] if driver.wsl else driver.mig.imex_channels())]
    if set(listed) != set(present):
        def shown(names: List[str]) -> str:
            return ", ".join(names[:16]) + (" and {} more".format(len(names) - 16) if len(names) > 16 else "") or "none"

        return "it lists channel(s) {}, the host has {}".format(shown(listed), shown(present))
    return None


def metadata(driver: Driver) -> Dict[str, str]:
    """What we record about a spec we write (in the YAML header, see :func:`render`)."""
    return {
        DRIVER_VERSION_ANNOTATION: driver.version,
        DRIVER_ROOT_ANNOTATION: driver.root,
        GENERATOR_ANNOTATION: "nvdocker-setup " + __version__,
    }


def device_edits(spec: Dict[str, Any], name: str) -> ContainerEdits:
    """What a container asking for device ``name`` gets from ``spec``: the device's edits and the
    spec's (what a CDI-enabled engine applies), back in our model."""
    for device in spec.get("devices") or ():
        if device.get("name") == name:
            return ContainerEdits.from_cdi(device.get("containerEdits")).merged(ContainerEdits.from_cdi(spec.get("containerEdits")))
    raise KeyError(name)


def qualified_names(spec: Dict[str, Any]) -> List[str]:
    return ["{}={}".format(spec.get("kind", KIND), device.get("name")) for device in spec.get("devices") or ()]


def metadata_of(spec: Dict[str, Any], header: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Our metadata of a spec read back: the header's lines, else (older specs) its annotations."""
    found: Dict[str, str] = {}
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        found.update({key: str(annotations[key]) for key in METADATA_KEYS if isinstance(annotations.get(key), str)})
    found.update(header or {})
    return found


def driver_version_of(spec: Dict[str, Any], header: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The driver version we recorded for ``spec`` (None: none recorded, e.g. a JSON spec)."""
    return metadata_of(spec, header).get(DRIVER_VERSION_ANNOTATION)


def library_driver_version(spec: Dict[str, Any]) -> Optional[str]:
    """The driver version in the name of the libcuda / libnvidia-ml the spec mounts (the driver
    installs them as ``libcuda.so.<version>``): what a JSON or foreign spec says about its driver."""
    for edit in _all_edits(spec):
        for mount in edit.get("mounts") or ():
            if isinstance(mount, dict):
                match = _LIBRARY_VERSION.match(os.path.basename(str(mount.get("hostPath", ""))))
                if match:
                    return match.group(1)
    return None


def recorded_driver_version(spec: Dict[str, Any], header: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The driver a spec was made for: our metadata, else the libraries it mounts."""
    return driver_version_of(spec, header) or library_driver_version(spec)


def is_ours(spec: Dict[str, Any], header: Optional[Dict[str, str]] = None) -> bool:
    """Whether nvdocker-setup wrote ``spec`` (by the generator in its header or annotations)."""
    return metadata_of(spec, header).get(GENERATOR_ANNOTATION, "").startswith("nvdocker-setup")


# -- text --------------------------------------------------------------------------------------

def is_json_path(path: str) -> bool:
    return path.lower().endswith(".json")


def _header_value(value: str) -> str:
    """One line's worth: printable text as is, anything else (or a leading quote) JSON-quoted."""
    if value.isprintable() and not value.startswith('"') and value == value.strip():
        return value
    return json.dumps(value)


def render(spec: Dict[str, Any], as_json: bool, meta: Optional[Dict[str, str]] = None) -> bytes:
    """JSON, or block YAML (:mod:`nvdocker_setup.cdi.yamlio`, which reads it back without a YAML
    library) after a comment header holding ``meta``: no consumer reads the comments. JSON has no
    comments, so ``meta`` is not written there."""
    if as_json:
        return (json.dumps(spec, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    from nvdocker_setup.cdi import yamlio

    body = yamlio.dumps(spec)
    meta = meta or {}
    header = "# CDI spec for the NVIDIA GPUs, written by nvdocker-setup cdi generate (driver {}).\n".format(
        meta.get(DRIVER_VERSION_ANNOTATION) or "unknown"
    )
    header += "# Regenerate it after a driver update. The lines below are read by nvdocker-setup only.\n"
    for key in METADATA_KEYS:
        if key in meta:
            header += "# {}: {}\n".format(key, _header_value(str(meta[key])))
    return (header + body).encode("utf-8")


def header_metadata(data: bytes) -> Dict[str, str]:
    """The ``# nvdocker-setup/<key>: <value>`` lines of the comment block a spec starts with."""
    found: Dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.startswith("#"):
            if line.strip():
                break
            continue
        match = _METADATA_LINE.match(line.rstrip("\r"))
        if match and match.group(1) in METADATA_KEYS:
            value = match.group(2)
            if value.startswith('"'):
                try:
                    value = str(json.loads(value))
                except ValueError:
                    pass
            found[match.group(1)] = value
    return found


def parse(data: bytes, source: str) -> Dict[str, Any]:
    """A spec written by :func:`render` (JSON, block YAML of our subset, or the JSON-in-YAML of
    earlier releases); other YAML needs PyYAML, imported only then."""
    from nvdocker_setup.cdi import yamlio

    text = data.decode("utf-8")
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        value = json.loads(stripped)
    except ValueError:
        try:
            value = yamlio.loads(text)
        except ValueError:
            value = None
    if value is None:
        try:
            import yaml
        except ImportError:
            raise GpuSetupError(
                "{} is YAML outside the subset nvdocker-setup writes, and PyYAML is not installed to read it".format(source)
            ) from None
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # its message quotes the file: say where, not what
            mark = getattr(exc, "problem_mark", None)
            raise GpuSetupError("{} is not valid YAML{}".format(
                source, " (line {})".format(mark.line + 1) if mark is not None else "")) from None
    if not isinstance(value, dict):
        raise GpuSetupError("{} is not a CDI spec (not an object)".format(source))
    return value


class Document(NamedTuple):
    """A spec file read back: the spec, and our metadata from its header (empty for JSON)."""

    spec: Dict[str, Any]
    header: Dict[str, str]


#: The largest spec file read (ours are a few KiB; NVIDIA's management specs under 1 MiB).
MAX_SPEC_BYTES = 16 << 20


def _read(path: str) -> bytes:
    """A spec file's bytes, read the way root may read a file in a directory others can write to
    (spec directories can be anybody's): a symlink only when root owns it, only a regular file
    (a FIFO never blocks, a device is never opened: O_NONBLOCK, then fstat), at most
    :data:`MAX_SPEC_BYTES`."""
    import stat as _stat

    def refused(why: str) -> GpuSetupError:
        return GpuSetupError("cannot read the CDI spec {}: {}".format(path, why),
                             hint="write one with nvdocker-setup cdi generate")

    try:
        info = os.lstat(path)
        if _stat.S_ISLNK(info.st_mode) and info.st_uid != 0 and os.geteuid() == 0:
            raise refused("a symlink owned by uid {} (not followed)".format(info.st_uid))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise refused(exc.strerror or str(exc)) from None
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise refused("not a regular file")
        chunks = []
        size = 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_SPEC_BYTES:
            raise refused("larger than {} bytes".format(MAX_SPEC_BYTES))
        return b"".join(chunks)
    except OSError as exc:
        raise refused(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def load_document(path: str) -> Document:
    data = _read(path)
    return Document(parse(data, path), header_metadata(data))


def load(path: str) -> Dict[str, Any]:
    return parse(_read(path), path)
