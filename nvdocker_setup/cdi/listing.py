"""Which CDI device a consumer gets under each name, over every spec directory it reads.

CDI consumers (Docker, containerd, podman, CRI-O: the ``container-device-interface`` library) read
every ``*.json``/``*.yaml`` file of each spec directory; a device is ``<kind>=<name>``. When two
directories define one name, the spec in the *later* directory wins (``/var/run/cdi`` over
``/etc/cdi`` by default); two specs in the *same* directory defining one name conflict and the
consumer drops the name. Pure: the caller reads the files (cli/cdi.py), this decides.
"""

from typing import Any, Dict, List, Optional, Sequence

#: The directories every CDI consumer reads when it is not configured otherwise, in priority order.
DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
SPEC_EXTENSIONS = (".json", ".yaml")


class SpecFile:
    """One file of a spec directory: its parsed content, or why it could not be read."""

    __slots__ = ("path", "directory", "priority", "value", "error")

    def __init__(self, path: str, directory: str, priority: int, value: Optional[Dict[str, Any]], error: Optional[str]) -> None:
        self.path = path
        self.directory = directory
        self.priority = priority
        self.value = value
        self.error = error

    @property
    def kind(self) -> Optional[str]:
        kind = (self.value or {}).get("kind")
        return kind if isinstance(kind, str) else None

    def device_names(self) -> List[str]:
        names = []
        for device in (self.value or {}).get("devices") or ():
            if isinstance(device, dict) and isinstance(device.get("name"), str) and self.kind:
                names.append("{}={}".format(self.kind, device["name"]))
        return names

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "directory": self.directory, "kind": self.kind,
                "cdiVersion": (self.value or {}).get("cdiVersion"), "devices": self.device_names(), "error": self.error}


class Resolution:
    """A device name as consumers see it: the spec that provides it, the ones it shadows, or the
    specs that conflict over it (then no spec provides it)."""

    __slots__ = ("name", "spec", "shadowed", "conflict")

    def __init__(self, name: str) -> None:
        self.name = name
        self.spec: Optional[str] = None
        self.shadowed: List[str] = []
        self.conflict: List[str] = []

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "shadows": list(self.shadowed), "conflict": list(self.conflict)}


def resolve(files: Sequence[SpecFile]) -> List[Resolution]:
    """Every device name of ``files`` (already in directory order), as a consumer resolves it."""
    by_name: Dict[str, List[SpecFile]] = {}
    for spec in files:
        for name in spec.device_names():
            owners = by_name.setdefault(name, [])
            if spec not in owners:
                owners.append(spec)
    resolved = []
    for name in sorted(by_name, key=_device_order):
        owners = by_name[name]
        top = max(spec.priority for spec in owners)
        winners = [spec for spec in owners if spec.priority == top]
        entry = Resolution(name)
        if len(winners) > 1:
            entry.conflict = [spec.path for spec in winners]
        else:
            entry.spec = winners[0].path
        entry.shadowed = [spec.path for spec in owners if spec.priority < top]
        resolved.append(entry)
    return resolved


def _device_order(name: str):
    """kind, then numeric names in number order, then the rest (``all`` last)."""
    kind, _, device = name.partition("=")
    return (kind, device == "all", not device.isdigit(), int(device) if device.isdigit() else 0, device)


def spec_file_names(names: Sequence[str]) -> List[str]:
    """The file names of a directory listing a consumer reads, in its (lexical) order."""
    return sorted(name for name in names if name.endswith(SPEC_EXTENSIONS))
