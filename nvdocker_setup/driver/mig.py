"""MIG devices and IMEX channels under a driver root, read from files (no NVML), with bounds.

MIG (multi-instance GPU). The driver lists, per GPU (by its device minor ``N``), the GPU instances
that exist and their compute instances:

* ``/proc/driver/nvidia/capabilities/gpu<N>/mig/gi<G>/access`` and ``.../gi<G>/ci<C>/access``,
  each ``DeviceFileMinor: <m>`` / ``DeviceFileMode: <mode>`` lines: the minor of the capability
  device ``/dev/nvidia-caps/nvidia-cap<m>`` that grants access to that instance;
* ``/proc/driver/nvidia/capabilities/mig/config`` and ``.../mig/monitor``: the same for the
  global MIG configuration and monitoring capabilities;
* ``/proc/driver/nvidia-caps/mig-minors``: the whole table of those minors (``gpu0/gi1/access 12``,
  ``config 1``, ``monitor 2``), used where an ``access`` file gives no minor.

A MIG device is one compute instance: the container gets the parent GPU's ``/dev/nvidia<N>`` and
the two capability nodes (its GPU instance's and its compute instance's). As in NVIDIA's toolkit,
``<gpu>:<mig>`` names the MIG device by the GPU's index and the MIG device's index on that GPU;
without NVML we number a GPU's MIG devices in order of (GPU-instance id, compute-instance id),
the order ``nvidia-smi -L`` lists them in.

MIG UUIDs are not in any file the driver writes (only NVML knows them). ``MIG-<uuid>`` is
accepted when ``<driver root>/etc/nvdocker/mig-uuids`` maps it: a copy of ``nvidia-smi -L``
(``GPU 0: ... (UUID: GPU-...)`` lines, each followed by its ``MIG ... Device  <i>: (UUID: MIG-...)``
lines), refreshed by the admin after a MIG reconfiguration; without it only ``<gpu>:<mig>`` works.

IMEX channels: the character devices ``/dev/nvidia-caps-imex-channels/channel<N>``, whose major
is ``nvidia-caps-imex-channels`` in ``/proc/devices``.

Everything here is the driver root's (the admin's), but it is parsed as if it were hostile: files
are read up to a size, directories listed up to a count, numbers bounded, and a device node whose
major is not the one ``/proc/devices`` lists for its driver is refused.
"""

from __future__ import annotations

import os
import stat

from nvdocker_setup.driver.errors import GpuSetupError, quoted
from nvdocker_setup.driver.model import ContainerEdits, DeviceNode

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Dict, List, Optional, Tuple

    from nvdocker_setup.driver.discovery import Driver, Gpu

CAPS_DRIVER = "nvidia-caps"
IMEX_DRIVER = "nvidia-caps-imex-channels"
#: Under the driver's proc directory (``/proc/driver/nvidia``).
CAPABILITIES_DIR = "capabilities"
MIG_MINORS = "/proc/driver/nvidia-caps/mig-minors"
CAPS_DEV_DIR = "/dev/nvidia-caps"
IMEX_DEV_DIR = "/dev/nvidia-caps-imex-channels"
#: The admin's copy of ``nvidia-smi -L`` that maps MIG UUIDs (see the module's text).
MIG_UUIDS_FILE = "/etc/nvdocker/mig-uuids"

#: Bounds. An ``access`` file is two short lines; mig-minors is ~130 KB for 32 GPUs.
MAX_ACCESS_BYTES = 4096
MAX_TABLE_BYTES = 1 << 20
MAX_TABLE_LINES = 65536
#: Directory entries looked at: a GPU has at most 15 GPU instances of 8 compute instances.
MAX_DIR_ENTRIES = 256
#: MIG devices per GPU (7 on an A100/H100; room for more).
MAX_MIG_PER_GPU = 64
#: IMEX channels (the driver's default is 2048).
MAX_IMEX_CHANNELS = 4096
#: The longest number read (a minor is 20 bits: 7 digits).
MAX_DIGITS = 7


def _number(text: str) -> Optional[int]:
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return None


def _read_bounded(path: str, limit: int) -> Optional[str]:
    """At most ``limit`` bytes of a regular file (never a FIFO or device: O_NONBLOCK and a check)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        left = limit
        while left > 0:  # procfs hands out a page per read
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def _list(path: str) -> List[str]:
    """Names in a directory, sorted, at most :data:`MAX_DIR_ENTRIES` looked at."""
    try:
        with os.scandir(path) as entries:
            names = []
            for entry in entries:
                names.append(entry.name)
                if len(names) >= MAX_DIR_ENTRIES:
                    break
    except OSError:
        return []
    return sorted(names)


def _numbered(names: List[str], prefix: str) -> List[Tuple[int, str]]:
    """``(number, name)`` of the ``<prefix><digits>`` names, sorted by number."""
    found = []
    for name in names:
        if name.startswith(prefix):
            number = _number(name[len(prefix):])
            if number is not None and str(number) == name[len(prefix):]:
                found.append((number, name))
    return sorted(found)


def parse_access(text: str) -> Optional[int]:
    """The ``DeviceFileMinor`` of a capability's ``access`` file, or None."""
    for line in text.splitlines()[:16]:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "DeviceFileMinor":
            return _number(value)
    return None


def parse_mig_minors(text: str) -> Dict[str, int]:
    """``mig-minors`` lines (``gpu0/gi1/ci0/access 13``, ``config 1``) by name; at most
    :data:`MAX_TABLE_LINES` lines, malformed ones skipped."""
    table: Dict[str, int] = {}
    for line in text.splitlines()[:MAX_TABLE_LINES]:
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) <= 64:
            minor = _number(parts[1])
            if minor is not None:
                table.setdefault(parts[0], minor)
    return table


def parse_smi_listing(text: str) -> Dict[str, Tuple[str, int]]:
    """MIG UUID -> (parent GPU UUID, MIG device index) from ``nvidia-smi -L`` text."""
    found: Dict[str, Tuple[str, int]] = {}
    gpu_uuid = ""
    for line in text.splitlines()[:MAX_TABLE_LINES]:
        stripped = line.strip()
        uuid = ""
        if "(UUID: " in stripped and stripped.endswith(")"):
            uuid = stripped.rsplit("(UUID: ", 1)[1][:-1].strip()
        if stripped.startswith("GPU ") and uuid.startswith("GPU-"):
            gpu_uuid = uuid
        elif stripped.startswith("MIG ") and uuid.startswith("MIG-") and gpu_uuid and len(uuid) <= 128:
            head = stripped.rsplit("(UUID: ", 1)[0]
            words = head.replace(":", " ").split()
            if "Device" in words and words.index("Device") + 1 < len(words):
                index = _number(words[words.index("Device") + 1])
                if index is not None:
                    found.setdefault(uuid, (gpu_uuid, index))
    return found


class MigDevice:
    """One MIG device (a compute instance) of a GPU: where its two capability minors come from."""

    __slots__ = ("gpu", "index", "gi", "ci", "gi_minor", "ci_minor", "uuid")

    def __init__(self, gpu: Gpu, index: int, gi: int, ci: int, gi_minor: int, ci_minor: int, uuid: str = "") -> None:
        self.gpu = gpu
        self.index = index
        self.gi = gi
        self.ci = ci
        self.gi_minor = gi_minor
        self.ci_minor = ci_minor
        self.uuid = uuid

    @property
    def name(self) -> str:
        """NVIDIA's name for it: ``<gpu index>:<mig index>``."""
        return "{}:{}".format(self.gpu.index, self.index)

    def describe(self) -> str:
        return "{} (GPU instance {}, compute instance {}{})".format(
            self.name, self.gi, self.ci, ", " + self.uuid if self.uuid else "")

    def __repr__(self) -> str:
        return "MigDevice({}, gi={}, ci={}, minors={}/{}, uuid={!r})".format(
            self.name, self.gi, self.ci, self.gi_minor, self.ci_minor, self.uuid)


class Mig:
    """The MIG devices and IMEX channels of a :class:`Driver`, read once, lazily."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._majors: Optional[Dict[str, int]] = None
        self._minors: Optional[Dict[str, int]] = None
        self._devices: Optional[List[MigDevice]] = None

    # -- sources ---------------------------------------------------------------------------------

    def _path(self, inside: str) -> str:
        from nvdocker_setup.driver.discovery import _kernel_dir

        return _kernel_dir(self.driver.root, inside)

    @property
    def capabilities_dir(self) -> str:
        return os.path.join(self.driver.proc_root, CAPABILITIES_DIR)

    def majors(self) -> Dict[str, int]:
        if self._majors is None:
            from nvdocker_setup.driver.devices import read_proc_devices

            self._majors = read_proc_devices(self.driver.root)[1]
        return self._majors

    def minors_table(self) -> Dict[str, int]:
        if self._minors is None:
            text = _read_bounded(self._path(MIG_MINORS), MAX_TABLE_BYTES)
            self._minors = parse_mig_minors(text) if text is not None else {}
        return self._minors

    def _minor(self, access_path: str, table_key: str) -> Optional[int]:
        text = _read_bounded(access_path, MAX_ACCESS_BYTES)
        minor = parse_access(text) if text is not None else None
        return minor if minor is not None else self.minors_table().get(table_key)

    def _uuids(self) -> Dict[Tuple[str, int], str]:
        """(GPU UUID lower case, MIG index) -> MIG UUID, from :data:`MIG_UUIDS_FILE`."""
        text = _read_bounded(os.path.join(self.driver.root, MIG_UUIDS_FILE.lstrip("/")), MAX_TABLE_BYTES)
        if text is None:
            return {}
        return {(gpu.lower(), index): uuid for uuid, (gpu, index) in parse_smi_listing(text).items()}

    # -- MIG -------------------------------------------------------------------------------------

    def enabled(self, gpu: Gpu) -> bool:
        """Whether the driver lists MIG for ``gpu`` (its ``capabilities/gpu<N>/mig`` exists)."""
        return os.path.isdir(os.path.join(self.capabilities_dir, "gpu{}".format(gpu.minor), "mig"))

    def devices(self) -> List[MigDevice]:
        """Every MIG device of every GPU, by GPU then (GPU instance, compute instance)."""
        if self._devices is None:
            uuids = None
            found: List[MigDevice] = []
            for gpu in [] if self.driver.wsl else self.driver.gpus:
                on_gpu = self._gpu_devices(gpu)
                if on_gpu and uuids is None:
                    uuids = self._uuids()
                for device in on_gpu:
                    device.uuid = (uuids or {}).get((gpu.uuid.lower(), device.index), "")
                found.extend(on_gpu)
            self._devices = found
        return self._devices

    def _gpu_devices(self, gpu: Gpu) -> List[MigDevice]:
        base = os.path.join(self.capabilities_dir, "gpu{}".format(gpu.minor), "mig")
        found: List[MigDevice] = []
        for gi, gi_name in _numbered(_list(base), "gi"):
            gi_dir = os.path.join(base, gi_name)
            gi_minor = self._minor(os.path.join(gi_dir, "access"), "gpu{}/gi{}/access".format(gpu.minor, gi))
            if gi_minor is None:
                continue
            for ci, ci_name in _numbered(_list(gi_dir), "ci"):
                key = "gpu{}/gi{}/ci{}/access".format(gpu.minor, gi, ci)
                ci_minor = self._minor(os.path.join(gi_dir, ci_name, "access"), key)
                if ci_minor is not None and len(found) < MAX_MIG_PER_GPU:
                    found.append(MigDevice(gpu, len(found), gi, ci, gi_minor, ci_minor))
        return found

    def find(self, selector: str) -> MigDevice:
        """A MIG device by ``<gpu>:<mig>`` or ``MIG-<uuid>``; unknown ones name those that exist."""
        wanted = selector.strip()
        if wanted.upper().startswith("MIG-"):
            for device in self.devices():
                if device.uuid and device.uuid.lower() == wanted.lower():
                    return device
            raise GpuSetupError(
                "unknown MIG device {}: {}".format(quoted(wanted), self._known()),
                hint="request it as <gpu>:<mig index>, or list the UUIDs in {} under the driver root "
                "(nvidia-smi -L > {})".format(MIG_UUIDS_FILE, MIG_UUIDS_FILE),
            )
        gpu_part, _, mig_part = wanted.partition(":")
        gpu = self.driver.find_gpu(gpu_part)
        index = _number(mig_part)
        for device in self.devices():
            if device.gpu is gpu and device.index == index:
                return device
        if not self.enabled(gpu):
            raise GpuSetupError(
                "MIG device {} asked for, but GPU {} is not in MIG mode under {}".format(
                    quoted(wanted), gpu.index, self.capabilities_dir),
                hint="request the whole GPU ({}), or enable MIG and create instances (nvidia-smi mig)".format(gpu.index),
            )
        raise GpuSetupError(
            "unknown MIG device {}: {}".format(quoted(wanted), self._known()),
            hint="request one of those (<gpu index>:<MIG device index>, as nvidia-smi -L numbers them)",
        )

    def _known(self) -> str:
        devices = self.devices()
        if not devices:
            return "this host has no MIG device"
        listed = ", ".join(device.describe() for device in devices[:16])
        return "this host has {}{}".format(listed, " and {} more".format(len(devices) - 16) if len(devices) > 16 else "")

    def cap_node(self, minor: int, what: str) -> DeviceNode:
        """``/dev/nvidia-caps/nvidia-cap<minor>``, checked against the ``nvidia-caps`` major."""
        return self._checked_node("{}/nvidia-cap{}".format(CAPS_DEV_DIR, minor), CAPS_DRIVER, what,
                                  "nvidia-modprobe -f /proc/driver/nvidia/capabilities/... (or nvidia-ctk system "
                                  "create-device-nodes) creates the capability nodes")

    def _checked_node(self, path: str, driver_name: str, what: str, hint: str) -> DeviceNode:
        node = self.driver.device_node(path)
        if node is None:
            raise GpuSetupError("{} has no device node {} under {}".format(what, path, self.driver.dev_root), hint=hint)
        expected = self.majors().get(driver_name)
        if expected is not None and node.major != expected:
            raise GpuSetupError(
                "{} is {}:{} but /proc/devices lists {} with major {}: a stale node, not given to the container".format(
                    path, node.major, node.minor, driver_name, expected),
                hint="re-create the node with the right major",
            )
        return node

    def edits(self, device: MigDevice) -> ContainerEdits:
        """What one MIG device adds: the parent GPU's node and its two capability nodes."""
        what = "MIG device {}".format(device.name)
        return ContainerEdits(device_nodes=[
            self.driver.gpu_device_node(device.gpu),
            self.cap_node(device.gi_minor, what),
            self.cap_node(device.ci_minor, what),
        ])

    def global_cap_node(self, name: str) -> DeviceNode:
        """The node of ``capabilities/mig/<name>`` (``config`` or ``monitor``)."""
        minor = self._minor(os.path.join(self.capabilities_dir, "mig", name), name)
        if minor is None:
            raise GpuSetupError(
                "MIG {} access asked for, but the driver lists no {} capability under {}".format(
                    name, name, os.path.join(self.capabilities_dir, "mig")),
                hint="no GPU of this host is MIG-capable, or the driver is too old",
            )
        return self.cap_node(minor, "MIG {} access".format(name))

    def access_edits(self, name: str, selectors: List[str]) -> ContainerEdits:
        """``NVIDIA_MIG_CONFIG_DEVICES`` / ``NVIDIA_MIG_MONITOR_DEVICES``: the global capability
        node, once the GPUs named exist (and, for ``config``, are in MIG mode). The GPUs' own
        nodes come from ``NVIDIA_VISIBLE_DEVICES``, as in NVIDIA's toolkit."""
        if selectors == ["all"]:
            if name == "config" and not any(self.enabled(gpu) for gpu in self.driver.gpus):
                raise GpuSetupError("MIG configuration access asked for, but no GPU is in MIG mode under {}".format(
                    self.capabilities_dir), hint="enable MIG first (nvidia-smi -i <gpu> -mig 1)")
            gpus: List[Gpu] = []
        else:
            gpus = [self.driver.find_gpu(item) for item in selectors]
        if name == "config":
            for gpu in gpus:
                if not self.enabled(gpu):
                    raise GpuSetupError("MIG configuration of GPU {} asked for, but it is not in MIG mode".format(gpu.index),
                                        hint="enable MIG on it first (nvidia-smi -i {} -mig 1)".format(gpu.index))
        return ContainerEdits(device_nodes=[self.global_cap_node(name)])

    # -- IMEX ------------------------------------------------------------------------------------

    def imex_channels(self) -> List[int]:
        """The channel numbers with a node under ``/dev/nvidia-caps-imex-channels``, sorted."""
        directory = os.path.join(self.driver.dev_root, os.path.relpath(IMEX_DEV_DIR, "/dev"))
        try:
            with os.scandir(directory) as entries:
                names = []
                for entry in entries:
                    names.append(entry.name)
                    if len(names) >= MAX_IMEX_CHANNELS:
                        break
        except OSError:
            return []
        return [number for number, _ in _numbered(names, "channel")]

    def imex_edits(self, channels: List[str]) -> ContainerEdits:
        """The nodes of the channels asked for (``["all"]``: every one there is)."""
        present = self.imex_channels()
        if channels == ["all"]:
            numbers = present
        else:
            numbers = []
            for item in channels:
                number = _number(item)
                if number is None or number not in present:
                    raise GpuSetupError(
                        "unknown IMEX channel {}: {}".format(quoted(item), _channels_text(present)),
                        hint="request one of those (NVIDIA_IMEX_CHANNELS=0,1 or all), or create the channel node "
                        "(the IMEX daemon's setup, or nvidia-modprobe -i <n>)",
                    )
                numbers.append(number)
        hint = "create the IMEX channel nodes (nvidia-modprobe -i <n>)"
        return ContainerEdits(device_nodes=[
            self._checked_node("{}/channel{}".format(IMEX_DEV_DIR, number), IMEX_DRIVER, "IMEX channel {}".format(number), hint)
            for number in numbers
        ])


def _channels_text(present: List[int]) -> str:
    if not present:
        return "this host has no IMEX channel"
    shown = ", ".join(str(number) for number in present[:32])
    return "this host has channel{} {}{}".format(
        "s" if len(present) > 1 else "", shown, " and {} more".format(len(present) - 32) if len(present) > 32 else "")


def is_mig_selector(item: str) -> bool:
    """``<gpu>:<mig>`` (digits) or ``MIG-...``."""
    if item.upper().startswith("MIG-"):
        return True
    gpu, sep, mig = item.partition(":")
    return bool(sep) and _number(gpu) is not None and _number(mig) is not None
