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


def generate(driver: Driver, hook: Optional[HookCommand], cdi_version: Optional[str] = None) -> Dict[str, Any]:
    """The CDI spec for every GPU of ``driver``, with the files of every capability, declaring the
    lowest cdiVersion that expresses it (or ``cdi_version``; :class:`VersionRefused` when it cannot).
    Our metadata is not in it: see :func:`metadata`."""
    if not driver.gpus:
        raise GpuSetupError(
            "no NVIDIA GPU found under {}: a CDI spec needs at least one device".format(driver.proc_root),
            hint="check nvidia-smi -L on the host",
        )
    devices = []
    per_gpu = []
    if driver.wsl:  # one /dev/dxg for every GPU: only "all" names what a container gets
        devices.append({"name": ALL_DEVICE, "containerEdits": gpu_edits(driver, driver.gpus[0]).to_cdi()})
    for gpu in [] if driver.wsl else driver.gpus:
        edits = gpu_edits(driver, gpu, ALL_CAPABILITIES, hook)  # the spec carries every capability's files
        per_gpu.append(edits)
        devices.append({"name": str(gpu.index), "containerEdits": edits.to_cdi()})
        devices.append({"name": gpu.uuid, "containerEdits": edits.to_cdi()})
    for mig in [] if driver.wsl else driver.mig.devices():  # "0:1", and MIG-<uuid> where known
        edits = driver.mig.edits(mig)
        per_gpu.append(edits)
        devices.append({"name": mig.name, "containerEdits": edits.to_cdi()})
        if mig.uuid:
            devices.append({"name": mig.uuid, "containerEdits": edits.to_cdi()})
    if not driver.wsl:
        devices.append({"name": ALL_DEVICE, "containerEdits": ContainerEdits().merged(*per_gpu).to_cdi()})
    common = common_edits(driver, ALL_CAPABILITIES, hook)
    common.env.extend(CDI_ONLY_ENV)
    spec: Dict[str, Any] = {
        "cdiVersion": "",
        "kind": KIND,
        "devices": devices,
        "containerEdits": common.to_cdi(),
    }
    spec["cdiVersion"] = choose_version(spec, cdi_version)
    return spec


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
    """JSON, or YAML that is JSON plus a comment header holding ``meta``: every YAML parser reads
    it (JSON is a subset of YAML 1.2 flow style), no consumer reads the comments, and we read both
    back without a YAML library. JSON has no comments, so ``meta`` is not written there."""
    body = json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
    if as_json:
        return body.encode("utf-8")
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
    """A spec written by :func:`render`; other YAML needs PyYAML, imported only then."""
    text = data.decode("utf-8")
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        value = json.loads(stripped)
    except ValueError:
        try:
            import yaml
        except ImportError:
            raise GpuSetupError(
                "{} is YAML that is not JSON, and PyYAML is not installed to read it".format(source)
            ) from None
        value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise GpuSetupError("{} is not a CDI spec (not an object)".format(source))
    return value


class Document(NamedTuple):
    """A spec file read back: the spec, and our metadata from its header (empty for JSON)."""

    spec: Dict[str, Any]
    header: Dict[str, str]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise GpuSetupError(
            "cannot read the CDI spec {}: {}".format(path, exc.strerror or exc),
            hint="write one with nvdocker-setup cdi generate",
        ) from None


def load_document(path: str) -> Document:
    data = _read(path)
    return Document(parse(data, path), header_metadata(data))


def load(path: str) -> Dict[str, Any]:
    return parse(_read(path), path)
