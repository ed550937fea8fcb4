"""A CDI spec (kind ``nvidia.com/gpu``) for the GPUs of a driver root, and reading one back.

Devices are named by index (``"0"``), by UUID (``"GPU-..."``) and ``all``; each device carries
its ``/dev/nvidiaN`` node, and the spec-wide ``containerEdits`` carry the control nodes, the
driver files for every capability and our ld cache hook: the same :mod:`nvdocker_setup.driver`
edits the runtime applies. The spec declares the lowest ``cdiVersion`` that can express it and
records the driver version in an annotation, so that ``doctor`` can tell when it is stale.
"""

import json
from typing import Any, Dict, List, Optional

from nvdocker_setup import __version__
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.discovery import Driver
from nvdocker_setup.driver.edits import HookCommand, common_edits, gpu_edits
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import ContainerEdits

VENDOR = "nvidia.com"
CLASS = "gpu"
KIND = VENDOR + "/" + CLASS
ALL_DEVICE = "all"
DRIVER_VERSION_ANNOTATION = "nvdocker-setup/driver-version"
DRIVER_ROOT_ANNOTATION = "nvdocker-setup/driver-root"
GENERATOR_ANNOTATION = "nvdocker-setup/generator"
#: CDI does not inject twice: a runtime that reads NVIDIA_VISIBLE_DEVICES must leave CDI devices alone.
CDI_ONLY_ENV = ("NVIDIA_VISIBLE_DEVICES=void",)
#: Every cdiVersion the CDI library accepts, oldest first.
CDI_VERSIONS = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0")


def version_key(version: str):
    return tuple(int(part) for part in version.lstrip("v").split("."))


def _all_edits(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    edits = [spec.get("containerEdits") or {}]
    edits += [device.get("containerEdits") or {} for device in spec.get("devices") or ()]
    return edits


def minimum_version(spec: Dict[str, Any]) -> str:
    """The lowest cdiVersion whose parser accepts every feature ``spec`` uses (the CDI library's
    ``MinimumRequiredVersion`` rules): Docker 25.0 reads up to 0.6.0, so never ask for more."""
    required = "0.3.0"

    def need(version: str) -> None:
        nonlocal required
        if version_key(version) > version_key(required):
            required = version

    edits = _all_edits(spec)
    if any("type" in mount for edit in edits for mount in edit.get("mounts") or ()):
        need("0.4.0")
    if any("hostPath" in node for edit in edits for node in edit.get("deviceNodes") or ()):
        need("0.5.0")
    if any(str(device.get("name", ""))[:1].isdigit() for device in spec.get("devices") or ()):
        need("0.5.0")
    if spec.get("annotations") or any(device.get("annotations") for device in spec.get("devices") or ()):
        need("0.6.0")
    if "." in str(spec.get("kind", "")).partition("/")[2]:
        need("0.6.0")
    if any(edit.get("intelRdt") is not None or edit.get("additionalGids") for edit in edits):
        need("0.7.0")
    if any(edit.get("netDevices") for edit in edits):
        need("1.1.0")
    return required


def generate(driver: Driver, hook: Optional[HookCommand]) -> Dict[str, Any]:
    """The CDI spec for every GPU of ``driver``, with the files of every capability."""
    if not driver.gpus:
        raise GpuSetupError(
            "no NVIDIA GPU found under {}: a CDI spec needs at least one device".format(driver.proc_root),
            hint="check nvidia-smi -L on the host",
        )
    devices = []
    per_gpu = []
    for gpu in driver.gpus:
        edits = gpu_edits(driver, gpu)
        per_gpu.append(edits)
        devices.append({"name": str(gpu.index), "containerEdits": edits.to_cdi()})
        devices.append({"name": gpu.uuid, "containerEdits": edits.to_cdi()})
    devices.append({"name": ALL_DEVICE, "containerEdits": ContainerEdits().merged(*per_gpu).to_cdi()})
    common = common_edits(driver, ALL_CAPABILITIES, hook)
    common.env.extend(CDI_ONLY_ENV)
    spec: Dict[str, Any] = {
        "cdiVersion": "",
        "kind": KIND,
        "annotations": {
            DRIVER_VERSION_ANNOTATION: driver.version,
            DRIVER_ROOT_ANNOTATION: driver.root,
            GENERATOR_ANNOTATION: "nvdocker-setup " + __version__,
        },
        "devices": devices,
        "containerEdits": common.to_cdi(),
    }
    spec["cdiVersion"] = minimum_version(spec)
    return spec


def device_edits(spec: Dict[str, Any], name: str) -> ContainerEdits:
    """What a container asking for device ``name`` gets from ``spec``: the device's edits and the
    spec's (what a CDI-enabled engine applies), back in our model."""
    for device in spec.get("devices") or ():
        if device.get("name") == name:
            return ContainerEdits.from_cdi(device.get("containerEdits")).merged(ContainerEdits.from_cdi(spec.get("containerEdits")))
    raise KeyError(name)


def qualified_names(spec: Dict[str, Any]) -> List[str]:
    return ["{}={}".format(spec.get("kind", KIND), device.get("name")) for device in spec.get("devices") or ()]


def driver_version_of(spec: Dict[str, Any]) -> Optional[str]:
    annotations = spec.get("annotations") or {}
    return annotations.get(DRIVER_VERSION_ANNOTATION)


# -- text --------------------------------------------------------------------------------------

def is_json_path(path: str) -> bool:
    return path.lower().endswith(".json")


def render(spec: Dict[str, Any], as_json: bool) -> bytes:
    """JSON, or YAML that is JSON plus a comment header: every YAML parser reads it (JSON is a
    subset of YAML 1.2 flow style) and we read it back without a YAML library."""
    body = json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
    if as_json:
        return body.encode("utf-8")
    header = "# CDI spec for the NVIDIA GPUs, written by nvdocker-setup cdi generate (driver {}).\n".format(
        driver_version_of(spec) or "unknown"
    )
    return (header + "# Regenerate it after a driver update.\n" + body).encode("utf-8")


def parse(data: bytes, source: str) -> Dict[str, Any]:
    """A spec written by :func:`render`; other YAML needs PyYAML, imported only then."""
    text = data.decode("utf-8")
    stripped = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        value = json.loads(stripped)
    except ValueError:
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise GpuSetupError(
                "{} is YAML that is not JSON, and PyYAML is not installed to read it".format(source)
            ) from None
        value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise GpuSetupError("{} is not a CDI spec (not an object)".format(source))
    return value


def load(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise GpuSetupError(
            "cannot read the CDI spec {}: {}".format(path, exc.strerror or exc),
            hint="write one with nvdocker-setup cdi generate",
        ) from None
    return parse(data, path)
