"""What a container asked for, read from its OCI spec.

A container requests GPUs through any of:

* ``NVIDIA_VISIBLE_DEVICES`` in ``process.env``: ``all``; ``none`` (driver files, no GPU);
  ``void``, empty or unset (nothing); a comma list of indexes and ``GPU-<uuid>``s;
* the prestart hook dockerd adds for ``docker run --gpus`` (path ending in
  ``nvidia-container-runtime-hook`` or ``nvidia-container-toolkit``), which we remove and do
  the work ourselves;
* CDI annotations ``cdi.k8s.io/<key>: nvidia.com/gpu=<name>[,...]``;
* with ``accept-device-list-as-volume-mounts = true`` (runtime.conf): mounts whose destination is
  ``/var/run/nvidia-container-devices/<name>`` (index, UUID, ``all``), which the kubelet's device
  plugin writes and an image cannot; when any is present ``NVIDIA_VISIBLE_DEVICES`` is ignored and
  the mounts are removed from the spec. IMEX channels come the same way, as NVIDIA's do:
  ``/var/run/nvidia-container-devices/imex/<channel>`` (a number or ``all``); when any is present
  ``NVIDIA_IMEX_CHANNELS`` is ignored. Only mounts of ``/dev/null`` count, for both. With
  ``ignore-imex-channel-requests = true`` neither the IMEX mounts nor ``NVIDIA_IMEX_CHANNELS``
  count (the mounts then stay in the spec, as any other mount).

``NVIDIA_VISIBLE_DEVICES`` items may also be CDI names of kind ``nvidia.com/gpu``
(``nvidia.com/gpu=0``, ``nvidia.com/gpu=all``); other kinds are refused. With
``accept-envvar-when-unprivileged = false`` the variable is ignored (and the reason logged) in a
container whose bounding capabilities lack ``CAP_SYS_ADMIN``, unless dockerd's ``--gpus`` hook is
in the spec: dockerd appends its own ``NVIDIA_VISIBLE_DEVICES`` after the image's, and the last
value is the one read, so the value then is the ``docker run --gpus`` caller's, not the image's.

``NVIDIA_DRIVER_CAPABILITIES`` then picks the driver files, and ``NVIDIA_REQUIRE_*`` constraints
are checked unless ``NVIDIA_DISABLE_REQUIRE`` is true.

MIG devices are ``<gpu>:<mig>`` items (GPU index, MIG device index on it) or ``MIG-<uuid>``s in
any of those lists. Three more variables (:data:`EXTRA_REQUESTS`) ask for more than GPUs:
``NVIDIA_IMEX_CHANNELS`` (``0,1``, ``all``; ``none``/``void``/empty: nothing) for IMEX channel
nodes, under the same ``accept-envvar-when-unprivileged`` policy as ``NVIDIA_VISIBLE_DEVICES``;
``NVIDIA_MIG_CONFIG_DEVICES`` and ``NVIDIA_MIG_MONITOR_DEVICES`` (``all`` or GPUs) for the MIG
configuration / monitoring capabilities, which, as in NVIDIA's toolkit, only a privileged container
(``CAP_SYS_ADMIN``) may ask for: an unprivileged one that does is refused with a message.

The C launcher starts Python only for a ``config.json`` that contains one of
:data:`REQUEST_MARKERS`; its ``request_markers`` array must list exactly those (a test compares
them), so a request kind added here reaches Python.

All of it is the container's (an image's ``ENV``), so sizes are checked before anything else
(:func:`check_request_sizes`), and error messages echo at most a few hundred characters of a
value: an error of more than a pipe buffer would block the runtime on its stderr, which the shim
reads only after the runtime exits, and wedge ``docker run``.
"""

from __future__ import annotations

import os
import posixpath

from nvdocker_setup.driver.errors import GpuSetupError, quoted, shorten

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Dict, List, Optional, Tuple

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
DRIVER_CAPABILITIES = "NVIDIA_DRIVER_CAPABILITIES"
#: Basenames of the hook dockerd inserts for --gpus (the second is the package's symlink name).
NVIDIA_HOOK_NAMES = ("nvidia-container-runtime-hook", "nvidia-container-toolkit")
CDI_ANNOTATION_PREFIX = "cdi.k8s.io/"
CDI_KIND = "nvidia.com/gpu"
#: Where the device plugin's volume-mount strategy lists devices (NVIDIA's path).
DEVICE_LIST_ROOT = "/var/run/nvidia-container-devices"
#: How many such mounts a container may have (16 GPUs, with room for MIG-era plugins).
MAX_DEVICE_LIST_MOUNTS = 64
#: IMEX channels passed as mounts: ``DEVICE_LIST_ROOT/imex/<channel>`` (NVIDIA's path).
IMEX_MOUNT_DIR = "imex"
#: Capability that makes a container "privileged" for accept-envvar-when-unprivileged (NVIDIA's test).
PRIVILEGED_CAPABILITY = "CAP_SYS_ADMIN"
#: A legacy CUDA image (before NVIDIA_REQUIRE_CUDA, CUDA < 9): ``CUDA_VERSION`` set and no
#: ``NVIDIA_REQUIRE_CUDA``. NVIDIA's runtime gives it every GPU and every capability when it names
#: none, and requires ``cuda>=<major.minor of CUDA_VERSION>``; so do we.
LEGACY_CUDA_VERSION = "CUDA_VERSION"
REQUIRE_CUDA = "NVIDIA_REQUIRE_CUDA"
ALL = "all"
REQUIRE_PREFIX = "NVIDIA_REQUIRE_"
#: The longest request value read: 16 GPU UUIDs are ~700 characters, the NVIDIA_REQUIRE_CUDA of
#: the CUDA images ~1,500. Also the longest value of one cdi.k8s.io/ annotation.
MAX_VALUE_CHARS = 8192
#: How many NVIDIA_REQUIRE_* variables and cdi.k8s.io/ annotations a container may have.
MAX_REQUIRE_VARIABLES = 64
MAX_CDI_ANNOTATIONS = 64
_SIZE_HINT = "request GPUs by index, UUID or all; see NVIDIA_VISIBLE_DEVICES in the documentation"
IMEX_CHANNELS = "NVIDIA_IMEX_CHANNELS"
MIG_CONFIG_DEVICES = "NVIDIA_MIG_CONFIG_DEVICES"
MIG_MONITOR_DEVICES = "NVIDIA_MIG_MONITOR_DEVICES"
#: Requests besides GPUs: variable, what it asks for.
EXTRA_REQUESTS = (
    (IMEX_CHANNELS, "IMEX channels"),
    (MIG_CONFIG_DEVICES, "MIG configuration access"),
    (MIG_MONITOR_DEVICES, "MIG monitoring access"),
)
#: The longest item of a device list we read (a MIG UUID is 40 characters, a GPU UUID 40).
MAX_ITEM_CHARS = 128
#: The most digits of an index or channel number.
_MAX_DIGITS = 7
#: Values of those that ask for nothing (as NVIDIA_VISIBLE_DEVICES's void and none).
_NOTHING = ("", "void", "none")
#: Strings one of which every request puts in config.json: the env names, the --gpus hook names,
#: the CDI annotation prefix (without its "/", which JSON may write as "\/"), "\u" for a
#: JSON-escaped spelling of any of them, and the last component of DEVICE_LIST_ROOT (a device list
#: passed as mounts has no other marker; its "/"s may be written "\/"). launcher/nvdocker-runtime.c request_markers = these.
REQUEST_MARKERS = (
    (VISIBLE_DEVICES,) + NVIDIA_HOOK_NAMES + (CDI_ANNOTATION_PREFIX.rstrip("/"),)
    + tuple(name for name, _ in EXTRA_REQUESTS) + ("\\u", DEVICE_LIST_ROOT.rsplit("/", 1)[1], LEGACY_CUDA_VERSION)
)


def legacy_defaults(env: Dict[str, str]) -> Dict[str, str]:
    """``env`` with a legacy CUDA image's defaults (:data:`LEGACY_CUDA_VERSION`): every GPU when
    it names no device variable, every capability when it names none, and the CUDA requirement of
    its ``CUDA_VERSION``; any other env as it is."""
    if not env.get(LEGACY_CUDA_VERSION, "").strip() or REQUIRE_CUDA in env:
        return env
    env = dict(env)
    env.setdefault(VISIBLE_DEVICES, ALL)
    env.setdefault(DRIVER_CAPABILITIES, ALL)
    parts = env[LEGACY_CUDA_VERSION].strip().split(".")
    if len(parts) >= 2 and all(part.isdigit() and part.isascii() and len(part) <= 4 for part in parts[:2]):
        env[REQUIRE_CUDA] = "cuda>={}.{}".format(int(parts[0]), int(parts[1]))
    return env


class GpuRequest:
    """A container's GPU request: ``devices`` is ``["all"]``, a list of selectors, or ``[]`` for
    ``none``; ``env`` is the process environment (last value of a name wins); ``mount_indexes``
    are the positions in ``mounts`` of an accepted device list, to remove. ``imex_channels``,
    ``mig_config`` and ``mig_monitor`` are None (not asked for), ``["all"]`` or a list."""

    __slots__ = ("devices", "env", "hook_indexes", "sources", "mount_indexes", "imex_channels", "mig_config",
                 "mig_monitor")

    def __init__(
        self, devices: List[str], env: Dict[str, str], hook_indexes: List[int], sources: List[str],
        mount_indexes: Optional[List[int]] = None, imex_channels: Optional[List[str]] = None,
        mig_config: Optional[List[str]] = None, mig_monitor: Optional[List[str]] = None,
    ) -> None:
        self.devices = devices
        self.env = env
        self.hook_indexes = hook_indexes
        self.sources = sources
        self.mount_indexes = mount_indexes or []
        self.imex_channels = imex_channels
        self.mig_config = mig_config
        self.mig_monitor = mig_monitor

    @property
    def wants_driver(self) -> bool:
        """False when the only thing to do is drop dockerd's hook (``--gpus`` with no device)."""
        return "env" in self.sources or "cdi" in self.sources or "mounts" in self.sources

    @property
    def all_devices(self) -> bool:
        return ALL in self.devices

    def describe(self) -> str:
        text = "devices={} via {}".format(",".join(self.devices) or "none", "+".join(self.sources))
        for what, value in (("imex-channels", self.imex_channels), ("mig-config", self.mig_config),
                            ("mig-monitor", self.mig_monitor)):
            if value is not None:
                text += " {}={}".format(what, ",".join(value))
        return text


def environment(spec: Dict[str, Any]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    process = spec.get("process")
    entries = process.get("env") if isinstance(process, dict) else None
    if not isinstance(entries, list):
        return env
    for entry in entries:
        if isinstance(entry, str):
            name, _, value = entry.partition("=")
            env[name] = value
    return env


def _too_long(name: str, value: str, limit: int) -> GpuSetupError:
    return GpuSetupError(
        "{} is {} characters long; at most {} are accepted".format(name, len(value), limit), hint=_SIZE_HINT
    )


def check_request_sizes(env: Dict[str, str], spec: Dict[str, Any]) -> None:
    """Refuse, early and in a few words, request values too large to be real: nothing after this
    spends time or memory in proportion to them, or echoes them at length."""
    for name in (VISIBLE_DEVICES, DRIVER_CAPABILITIES, "NVIDIA_DISABLE_REQUIRE") + tuple(n for n, _ in EXTRA_REQUESTS):
        value = env.get(name)
        if value is not None and len(value) > MAX_VALUE_CHARS:
            raise _too_long(name, value, MAX_VALUE_CHARS)
    required = [name for name in env if name.startswith(REQUIRE_PREFIX)]
    if len(required) > MAX_REQUIRE_VARIABLES:
        raise GpuSetupError("the container has {} {}* variables; at most {} are accepted".format(
            len(required), REQUIRE_PREFIX, MAX_REQUIRE_VARIABLES))
    for name in required:
        if len(env[name]) > MAX_VALUE_CHARS:
            raise _too_long(shorten(name, 60), env[name], MAX_VALUE_CHARS)
    annotations = spec.get("annotations")
    if isinstance(annotations, dict):
        keys = [key for key in annotations if isinstance(key, str) and key.startswith(CDI_ANNOTATION_PREFIX)]
        if len(keys) > MAX_CDI_ANNOTATIONS:
            raise GpuSetupError("the container has {} {} annotations; at most {} are accepted".format(
                len(keys), CDI_ANNOTATION_PREFIX, MAX_CDI_ANNOTATIONS))
        for key in keys:
            value = annotations[key]
            if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
                raise _too_long("the annotation " + quoted(key, 60), value, MAX_VALUE_CHARS)
    listed = device_list_mounts(spec)
    if len(listed) > MAX_DEVICE_LIST_MOUNTS:
        raise GpuSetupError("the container has {} mounts under {}; at most {} are accepted".format(
            len(listed), DEVICE_LIST_ROOT, MAX_DEVICE_LIST_MOUNTS))
    for _position, destination, _from_null in listed:
        if len(destination) > MAX_VALUE_CHARS:
            raise _too_long("a mount destination under " + DEVICE_LIST_ROOT, destination, MAX_VALUE_CHARS)


def _list_items(name: str, value: str) -> Optional[List[str]]:
    """None for nothing (empty, ``void``, ``none``), ``["all"]``, or the unique items."""
    if value.strip().lower() in _NOTHING:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        return None
    if ALL in items:
        return [ALL]
    for item in items:
        if item in _NOTHING or len(item) > MAX_ITEM_CHARS:
            raise GpuSetupError("cannot read {} in {}={}".format(quoted(item, 60), name, quoted(value)),
                                hint="use all, none, or a comma list")
    return _unique(items)


def parse_imex_channels(value: Optional[str]) -> Optional[List[str]]:
    """``NVIDIA_IMEX_CHANNELS``: None (nothing), ``["all"]`` or channel numbers."""
    if value is None:
        return None
    channels = _list_items(IMEX_CHANNELS, value)
    for item in channels or ():
        if item != ALL and not _is_number(item):
            raise GpuSetupError(
                "cannot read IMEX channel {} in {}={}".format(quoted(item, 60), IMEX_CHANNELS, quoted(value)),
                hint="use all, none, or a comma list of channel numbers (0,1)",
            )
    return channels


def parse_mig_access(name: str, value: Optional[str], spec: Dict[str, Any]) -> Optional[List[str]]:
    """``NVIDIA_MIG_CONFIG_DEVICES`` / ``NVIDIA_MIG_MONITOR_DEVICES``: None, ``["all"]`` or GPUs;
    asked for by an unprivileged container, a refusal (NVIDIA's toolkit refuses it too)."""
    if value is None:
        return None
    gpus = _list_items(name, value)
    if gpus is None:
        return None
    for item in gpus:
        if item != ALL and not (_is_number(item) or item.upper().startswith("GPU-")):
            raise GpuSetupError("cannot read GPU {} in {}={}".format(quoted(item, 60), name, quoted(value)),
                                hint="use all, or a comma list of GPU indexes and GPU-<uuid>s")
    if not is_privileged(spec):
        what = dict(EXTRA_REQUESTS)[name]
        raise GpuSetupError(
            "{}={} asks for {}, which only a privileged container ({}) gets; the container was not started".format(
                name, quoted(value), what, PRIVILEGED_CAPABILITY),
            hint="run it with --privileged (or --cap-add SYS_ADMIN), or unset {}".format(name),
        )
    return gpus


def _is_number(item: str) -> bool:
    return item.isascii() and item.isdigit() and len(item) <= _MAX_DIGITS


def nvidia_hook_indexes(spec: Dict[str, Any]) -> List[int]:
    """Positions in ``hooks.prestart`` of dockerd's --gpus hook (by path or argv[0])."""
    hooks = spec.get("hooks")
    prestart = hooks.get("prestart") if isinstance(hooks, dict) else None
    found: List[int] = []
    if not isinstance(prestart, list):
        return found
    for position, hook in enumerate(prestart):
        if not isinstance(hook, dict):
            continue
        path, args = hook.get("path"), hook.get("args")
        first = args[0] if isinstance(args, list) and args else ""
        names = (os.path.basename(path if isinstance(path, str) else ""), os.path.basename(first if isinstance(first, str) else ""))
        if any(name in NVIDIA_HOOK_NAMES for name in names):
            found.append(position)
    return found


def parse_visible_devices(value: str) -> Optional[List[str]]:
    """None for no request (``void``, empty), ``[]`` for ``none``, ``["all"]`` or selectors.
    CDI names of kind ``nvidia.com/gpu`` stand for their device (``nvidia.com/gpu=0`` is ``0``)."""
    raw = [item.strip() for item in value.split(",") if item.strip()]
    # the whole value for context, but never the same text twice: one item is named alone
    origin = VISIBLE_DEVICES if len(raw) == 1 else "{}={}".format(VISIBLE_DEVICES, quoted(value))
    return _parse_items([_cdi_name(item, origin) for item in raw], origin)


def _cdi_name(item: str, origin: str) -> str:
    """``nvidia.com/gpu=<name>`` -> ``<name>``; any other ``kind=name`` is refused."""
    if "=" not in item:
        return item
    kind, _, name = item.partition("=")
    if kind.strip() != CDI_KIND or not name.strip():
        raise GpuSetupError(
            "CDI device {} in {} is not of kind {}; nvdocker-runtime gives only NVIDIA GPUs".format(
                quoted(item), origin, CDI_KIND),
            hint="use {}=<index|uuid|all>, or let the container engine resolve other CDI devices".format(CDI_KIND),
        )
    return name.strip()


def _parse_items(items: List[str], origin: str) -> Optional[List[str]]:
    if not items or items == ["void"]:
        return None
    if ALL in items:
        return [ALL]
    if items == ["none"]:
        return []
    for item in items:
        _check_selector(item, origin)
    return _unique(items)


def is_privileged(spec: Dict[str, Any]) -> bool:
    """NVIDIA's test: ``CAP_SYS_ADMIN`` in ``process.capabilities.bounding`` (any odd shape: no)."""
    process = spec.get("process")
    capabilities = process.get("capabilities") if isinstance(process, dict) else None
    bounding = capabilities.get("bounding") if isinstance(capabilities, dict) else None
    return isinstance(bounding, list) and PRIVILEGED_CAPABILITY in bounding


def device_list_mounts(spec: Dict[str, Any]) -> List[Tuple[int, str, bool]]:
    """(position in ``mounts``, destination, whether its source is ``/dev/null``) of each mount
    under :data:`DEVICE_LIST_ROOT`, compared after normalizing (``//``, ``/./``, a trailing ``/``).
    Only a ``/dev/null`` source counts as a device list, as NVIDIA's: an image's ``VOLUME`` there
    becomes a mount too (Docker, containerd's CRI), but with a volume directory as its source."""
    mounts = spec.get("mounts")
    found: List[Tuple[int, str, bool]] = []
    if not isinstance(mounts, list):
        return found
    for position, mount in enumerate(mounts):
        destination = mount.get("destination") if isinstance(mount, dict) else None
        if isinstance(destination, str) and DEVICE_LIST_ROOT.rsplit("/", 1)[1] in destination:
            normalized = posixpath.normpath(destination)
            if normalized.startswith(DEVICE_LIST_ROOT + "/") or normalized == DEVICE_LIST_ROOT:
                source = mount.get("source")
                from_null = isinstance(source, str) and posixpath.normpath(source) == "/dev/null"
                found.append((position, normalized, from_null))
    return found


def split_imex_mounts(listed: List[Tuple[int, str, bool]]) -> Tuple[List[Tuple[int, str, bool]], List[str]]:
    """(the GPU device-list mounts, the IMEX channels named by mounts at
    ``DEVICE_LIST_ROOT/imex/<channel>``, NVIDIA's path for them). A channel is a number or ``all``."""
    gpus: List[Tuple[int, str, bool]] = []
    channels: List[str] = []
    prefix = DEVICE_LIST_ROOT + "/" + IMEX_MOUNT_DIR + "/"
    for entry in listed:
        destination = entry[1]
        if not destination.startswith(prefix):
            gpus.append(entry)
            continue
        channel = destination[len(prefix):]
        if not (channel == ALL or _is_number(channel)):
            raise GpuSetupError(
                "cannot read an IMEX channel from the mount at {}".format(quoted(destination, 120)),
                hint="the device plugin mounts {}<channel number|all>".format(prefix),
            )
        channels.append(channel)
    return gpus, ([ALL] if ALL in channels else _unique(channels))


def parse_device_list(listed: List[Tuple[int, str, bool]]) -> Optional[List[str]]:
    """The devices a volume-mount list names: the component after :data:`DEVICE_LIST_ROOT`."""
    names = []
    for _position, destination, _from_null in listed:
        name = destination[len(DEVICE_LIST_ROOT) + 1:]
        origin = "the mount at " + quoted(destination, 120)
        if not name or "/" in name or "," in name:
            raise GpuSetupError(
                "cannot read a device from {}".format(origin),
                hint="the device plugin mounts {}/<index|uuid|all>".format(DEVICE_LIST_ROOT),
            )
        names.append(_cdi_name(name, origin))
    return _parse_items(names, "the device list under " + DEVICE_LIST_ROOT)


def _is_mig(item: str) -> bool:
    """``<gpu>:<mig>`` (two numbers) or ``MIG-<uuid>`` (hex digits and dashes)."""
    if item.upper().startswith("MIG-"):
        rest = item[4:]
        return 0 < len(rest) <= MAX_ITEM_CHARS and all(c in "0123456789abcdefABCDEF-" for c in rest)
    gpu, sep, mig = item.partition(":")
    return bool(sep) and _is_number(gpu) and _is_number(mig)


def _check_selector(item: str, origin: str) -> None:
    if item in ("none", "void"):
        raise GpuSetupError("{!r} cannot be combined with other devices in {}".format(item, origin))
    if not (_is_number(item) or (item.upper().startswith("GPU-") and len(item) <= MAX_ITEM_CHARS) or _is_mig(item)):
        raise GpuSetupError(
            "cannot read device {} in {}".format(quoted(item), origin),
            hint="use all, none, void, or a comma list of GPU indexes, GPU-<uuid>s, <gpu>:<mig> and MIG-<uuid>s",
        )


def _unique(items: List[str]) -> List[str]:
    seen: Dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def cdi_devices(spec: Dict[str, Any]) -> List[str]:
    """Device names of kind ``nvidia.com/gpu`` in ``cdi.k8s.io/*`` annotations; other kinds are
    not ours (the engine that wrote them resolves them)."""
    annotations = spec.get("annotations")
    names: List[str] = []
    if not isinstance(annotations, dict):
        return names
    for key in sorted(key for key in annotations if isinstance(key, str)):
        if not key.startswith(CDI_ANNOTATION_PREFIX) or not isinstance(annotations[key], str):
            continue
        for qualified in annotations[key].split(","):
            kind, sep, name = qualified.strip().partition("=")
            if sep and kind == CDI_KIND and name:
                if name != ALL:
                    _check_selector(name, "annotation {}".format(quoted(key, 80)))
                names.append(name)
    return names


def dockerd_set_visible_devices(spec: Dict[str, Any]) -> bool:
    """Whether the last ``NVIDIA_VISIBLE_DEVICES`` entry is dockerd's own ``--gpus`` value: dockerd
    appends it after every container entry, followed at most by its ``NVIDIA_DRIVER_CAPABILITIES``
    (``--gpus capabilities=...``). For ``--gpus 0`` it appends none, and the entry read is the
    container's (an image's). An image whose own variable is its very last entry still looks like
    dockerd's; see docs/security.md's known limits."""
    process = spec.get("process")
    entries = process.get("env") if isinstance(process, dict) else None
    if not isinstance(entries, list):
        return False
    names = [entry.partition("=")[0] for entry in entries if isinstance(entry, str)]
    if names and names[-1] == DRIVER_CAPABILITIES:
        names.pop()
    return bool(names) and names[-1] == VISIBLE_DEVICES


def resolve(
    spec: Dict[str, Any], accept_envvar_unprivileged: bool = True, accept_volume_mounts: bool = False,
    notes: Optional[List[str]] = None, ignore_imex: bool = False,
) -> Optional[GpuRequest]:
    """The container's request, or None when it asked for nothing (the spec stays untouched).
    The flags are runtime.conf's policy (``ignore_imex``: ``ignore-imex-channel-requests``, under
    which neither ``NVIDIA_IMEX_CHANNELS`` nor the IMEX device-list mounts count, and those mounts
    stay as they are); ``notes`` collects why a request was ignored."""
    env = environment(spec)
    check_request_sizes(env, spec)
    env = legacy_defaults(env)
    if ignore_imex and IMEX_CHANNELS in env:
        if notes is not None:
            notes.append("{} ignored: ignore-imex-channel-requests = true".format(IMEX_CHANNELS))
        env = dict(env)
        del env[IMEX_CHANNELS]
    imex, mig_config, mig_monitor = extra_requests(env, spec, accept_envvar_unprivileged, notes)
    hook_indexes = nvidia_hook_indexes(spec)
    sources: List[str] = []
    devices: List[str] = []
    mount_indexes: List[int] = []
    from_env: Optional[List[str]] = None
    listed = device_list_mounts(spec) if accept_volume_mounts else []
    if notes is not None and any(not from_null for _, _, from_null in listed):
        notes.append("mounts under {} whose source is not /dev/null ignored (an image VOLUME makes those)".format(
            DEVICE_LIST_ROOT))
    listed = [entry for entry in listed if entry[2]]
    if ignore_imex:
        imex_prefix = DEVICE_LIST_ROOT + "/" + IMEX_MOUNT_DIR + "/"
        if notes is not None and any(entry[1].startswith(imex_prefix) for entry in listed):
            notes.append("the IMEX channels under {}/{} ignored: ignore-imex-channel-requests = true".format(
                DEVICE_LIST_ROOT, IMEX_MOUNT_DIR))
        listed = [entry for entry in listed if not entry[1].startswith(imex_prefix)]
    mount_indexes = [position for position, _, _ in listed]
    listed, imex_from_mounts = split_imex_mounts(listed)
    if imex_from_mounts:
        if IMEX_CHANNELS in env and notes is not None:
            notes.append("{} ignored: the IMEX channels under {}/{} are used".format(
                IMEX_CHANNELS, DEVICE_LIST_ROOT, IMEX_MOUNT_DIR))
        imex = imex_from_mounts
    if listed:
        from_mounts = parse_device_list(listed)
        if VISIBLE_DEVICES in env and notes is not None:
            notes.append("{} ignored: the device list under {} is used".format(VISIBLE_DEVICES, DEVICE_LIST_ROOT))
        if from_mounts is not None:
            sources.append("mounts")
            devices.extend(from_mounts)
    elif VISIBLE_DEVICES in env:
        from_env = parse_visible_devices(env[VISIBLE_DEVICES])
        if (from_env is not None and hook_indexes and not accept_envvar_unprivileged and not is_privileged(spec)
                and not dockerd_set_visible_devices(spec)):
            # `--gpus 0` (count 0): dockerd adds its hook but no value, so the value read is the image's
            if notes is not None:
                notes.append("{} ignored: dockerd's --gpus set no value of its own (count 0), the one read is the "
                             "container's, and accept-envvar-when-unprivileged = false".format(VISIBLE_DEVICES))
            from_env = None
        if from_env is not None and not (accept_envvar_unprivileged or hook_indexes or is_privileged(spec)):
            if notes is not None:
                notes.append("{} ignored: the container is not privileged (no {}) and "
                             "accept-envvar-when-unprivileged = false".format(VISIBLE_DEVICES, PRIVILEGED_CAPABILITY))
            from_env = None
    if from_env is not None:
        sources.append("env")
        devices.extend(from_env)
    from_cdi = cdi_devices(spec)
    if from_cdi:
        sources.append("cdi")
        devices.extend(from_cdi)
    if hook_indexes:
        sources.append("--gpus")
    for source, value in (("imex", imex), ("mig-config", mig_config), ("mig-monitor", mig_monitor)):
        if value is not None:
            sources.append(source)
    if not sources and not mount_indexes:
        return None
    devices = [ALL] if ALL in devices else _unique(devices)
    return GpuRequest(devices, env, hook_indexes, sources, mount_indexes, imex, mig_config, mig_monitor)


def extra_requests(
    env: Dict[str, str], spec: Dict[str, Any], accept_envvar_unprivileged: bool = True, notes: Optional[List[str]] = None,
) -> Tuple[Optional[List[str]], Optional[List[str]], Optional[List[str]]]:
    """``(IMEX channels, MIG config GPUs, MIG monitor GPUs)`` the container asks for (None: not).
    IMEX channels follow the variable policy of ``NVIDIA_VISIBLE_DEVICES``; MIG access needs a
    privileged container, whatever the policy."""
    imex = parse_imex_channels(env.get(IMEX_CHANNELS))
    if imex is not None and not (accept_envvar_unprivileged or is_privileged(spec)):
        if notes is not None:
            notes.append("{} ignored: the container is not privileged (no {}) and "
                         "accept-envvar-when-unprivileged = false".format(IMEX_CHANNELS, PRIVILEGED_CAPABILITY))
        imex = None
    mig_config = parse_mig_access(MIG_CONFIG_DEVICES, env.get(MIG_CONFIG_DEVICES), spec)
    mig_monitor = parse_mig_access(MIG_MONITOR_DEVICES, env.get(MIG_MONITOR_DEVICES), spec)
    return imex, mig_config, mig_monitor


def remove_nvidia_hooks(spec: Dict[str, Any], indexes: List[int]) -> None:
    """Drop dockerd's --gpus hooks (an emptied ``prestart`` list goes too)."""
    if not indexes:
        return
    hooks = spec["hooks"]
    hooks["prestart"] = [hook for position, hook in enumerate(hooks["prestart"]) if position not in indexes]
    if not hooks["prestart"]:
        del hooks["prestart"]


def remove_device_list_mounts(spec: Dict[str, Any], indexes: List[int]) -> None:
    """Drop the accepted device-list mounts (NVIDIA does too: they are a message, not a mount)."""
    if indexes:
        spec["mounts"] = [mount for position, mount in enumerate(spec["mounts"]) if position not in indexes]
