"""Find the NVIDIA driver under a driver root: its GPUs, version, device nodes, libraries, tools.

A driver root is a directory laid out like the host's ``/`` (NVIDIA's ``root`` setting): ``/``
itself, a driver container's ``/run/nvidia/driver``, or a simulated driver in tests. ``/proc`` and
``/dev`` are looked up inside the root first and then on the host, because a driver container
ships libraries but the kernel's files stay the host's.

Everything is read from files (no NVML, no subprocess), lazily, so that the runtime pays only for
what a container asked for.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from nvdocker_setup.driver import capabilities as caps
from nvdocker_setup.driver.errors import GpuSetupError, quoted
from nvdocker_setup.driver.model import DeviceNode

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Dict, Iterable, List, Optional, Sequence, Tuple

    from nvdocker_setup.driver.ldcache import CacheEntry
    from nvdocker_setup.driver.mig import Mig

VERSION_FILE = "/proc/driver/nvidia/version"
LD_CACHE = "/etc/ld.so.cache"
#: Control nodes every GPU container needs (those present are injected).
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
_MAX_SYMLINKS = 40
#: WSL2: the one device node through which a Linux guest reaches every GPU of the Windows host,
#: and the directory Windows' driver shares its user-space libraries and nvidia-smi in.
WSL_DEVICE = "/dev/dxg"
WSL_LIB_DIR = "/usr/lib/wsl/lib"
#: What a WSL2 container gets besides the capabilities' libraries: libcuda and libnvidia-ml load it.
WSL_LIBRARIES = ("libdxcore.so",)
#: WSL2's driver store: the Windows driver package's folder (``nv*.inf_amd64_<hash>``), from which
#: the libraries of /usr/lib/wsl/lib load the rest of the driver (their loaders, the CUDA kernels).
WSL_DRIVER_STORE = "/usr/lib/wsl/drivers"
#: What a container needs of the driver store, at its own path (NVIDIA's WSL CDI gives the same),
#: by capability; ``nvidia-smi`` also goes to /usr/bin when /usr/lib/wsl/lib has none.
WSL_STORE_FILES = {
    caps.UTILITY: ("libnvidia-ml.so.1", "libnvidia-ml_loader.so", "nvidia-smi"),
    caps.COMPUTE: ("libcuda.so.1.1", "libcuda_loader.so", "libnvidia-ptxjitcompiler.so.1", "libnvdxgdmal.so.1",
                   "nvcubins.bin"),
}
#: Where the WSL2 tools (nvidia-smi) go in the container: they are on no PATH in /usr/lib/wsl/lib.
WSL_BINARY_DIR = "/usr/bin"
#: The driver version when none can be read (WSL2 names no library after it): NVIDIA_REQUIRE_*
#: checks are then skipped (see :func:`nvdocker_setup.driver.requirements.check`).
UNKNOWN_VERSION = "unknown"
#: Opt-in devices NVIDIA's runtime gives a GPU container whose image sets the variable to
#: ``enabled``: (directory, names; ``*`` a prefix) of their nodes. GPUDirect Storage, the RDMA stack
#: (MOFED), NVSwitch and GDRCopy.
GATED_DEVICES = {
    "NVIDIA_GDS": (("/dev", ("nvidia-fs*",)),),
    "NVIDIA_MOFED": (("/dev/infiniband", ("uverbs*", "rdma_cm", "umad*", "issm*")),),
    "NVIDIA_NVSWITCH": (("/dev", ("nvidia-nvswitchctl", "nvidia-nvswitch*")),),
    "NVIDIA_GDRCOPY": (("/dev", ("gdrdrv",)),),
}
_MAX_GATED_NODES = 4096
#: At most this many entries of the WSL library directory are looked at (it is Windows' folder).
_MAX_WSL_ENTRIES = 256
#: At most this many entries of a driver library directory are looked at for unlisted libraries
#: (a multiarch directory of a full desktop install has a few thousand).
_MAX_LIBRARY_DIR_ENTRIES = 20000
#: The kernel's firmware search path after ``firmware_class.path``: where the GSP firmware of the
#: driver version is looked for, first found first (``{release}``: the running kernel's).
FIRMWARE_DIRS = ("/lib/firmware/updates/{release}", "/lib/firmware/updates", "/lib/firmware/{release}", "/lib/firmware")
FIRMWARE_CLASS_PATH = "/sys/module/firmware_class/parameters/path"


def _is_host_root(root: str) -> bool:
    return root in ("", "/")


def resolve_in_root(root: str, path: str) -> Optional[Tuple[str, str]]:
    """``(host path, path inside the root)`` of ``path`` with every symlink resolved as if
    ``root`` were ``/`` (an absolute link target stays inside the root); None when it does not exist.
    No trust check: for what we only compare (device links), never for what a container gets
    (:func:`resolve_trusted`)."""
    found, _problem = _walk(root, path, False)
    return found


def resolve_trusted(root: str, path: str, check_root: bool = True,
                    memo: Optional[Dict[str, os.stat_result]] = None) -> Tuple[Optional[Tuple[str, str]], Optional[str]]:
    """``((host path, resolved path inside the root), None)`` when ``path`` exists under ``root`` and
    only root could have decided what it is; ``(None, None)`` when it does not exist; ``(None, why)``
    when a user could have: every directory looked in is root's and not group/other-writable (a sticky
    one is fine: nobody replaces root's entries there), every symlink followed is root's (a link is
    followed inside the root, as if it were ``/``), and the file itself is root's and not
    group/other-writable (device nodes, sockets, FIFOs and sticky directories aside: their mode bits
    let nobody replace them). With driver root ``/`` this is what keeps a user's ``/tmp/nvidia-mps ->
    /etc`` (or a real directory of theirs there) out of every GPU container. ``check_root=False``
    skips the driver root's own chain, for a caller that has checked it already. ``memo`` (one
    :class:`Driver`'s, so one discovery pass) keeps the ``lstat`` of the directories walked through,
    which every library under ``/usr/lib/x86_64-linux-gnu`` shares."""
    return _walk(root, path, True, check_root, memo)


def _unsafe(info: os.stat_result, final: bool) -> Optional[str]:
    if info.st_uid != 0:
        return "owned by uid {}, not root".format(info.st_uid)
    mode = info.st_mode
    if stat.S_IMODE(mode) & 0o022 and not (
        stat.S_ISLNK(mode)
        or (stat.S_ISDIR(mode) and mode & stat.S_ISVTX)
        or (final and (stat.S_ISCHR(mode) or stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)))
    ):
        return "writable by {} (mode {:04o})".format(
            "others" if stat.S_IMODE(mode) & 0o002 else "its group", stat.S_IMODE(mode))
    return None


def _walk(root: str, path: str, trusted: bool, check_root: bool = True,
          memo: Optional[Dict[str, os.stat_result]] = None) -> Tuple[Optional[Tuple[str, str]], Optional[str]]:
    base = "/" if _is_host_root(root) else root
    if trusted and check_root and not _is_host_root(root):
        # the driver root itself (a driver container's /run/nvidia/driver) must be root's alone too
        problem = _walk("/", root, True)[1]
        if problem is not None:
            return None, "the driver root " + problem
    pending = [part for part in path.split("/") if part]
    resolved: List[str] = []
    links = 0
    shared = False  # a sticky directory (one anybody can add entries to, /tmp) was on the way
    if trusted:
        try:
            problem = _unsafe(os.lstat(base), False)
        except OSError:
            return None, None
        if problem is not None:
            return None, "{} is {}".format(base, problem)
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(base, *resolved, part)
        info = memo.get(candidate) if memo is not None and pending else None
        if info is None:
            try:
                info = os.lstat(candidate)
            except OSError:
                return None, None
            if memo is not None and pending and stat.S_ISDIR(info.st_mode):
                memo[candidate] = info
        if stat.S_ISLNK(info.st_mode):
            if trusted and info.st_uid != 0:
                return None, "the symlink {} is owned by uid {}, not root".format(candidate, info.st_uid)
            links += 1
            if links > _MAX_SYMLINKS:
                return None, "more than {} symlinks".format(_MAX_SYMLINKS) if trusted else None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None, None
            if target.startswith("/"):
                resolved = []
            pending[:0] = [item for item in target.split("/") if item]
            continue
        final = not pending
        if not final and not stat.S_ISDIR(info.st_mode):
            return None, None
        if trusted:
            problem = _unsafe(info, final)
            if problem is not None:
                return None, "{} is {}".format(candidate, problem)
            if final and shared and stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                # a hard link a user made in a sticky directory to one of root's files (possible
                # where fs.protected_hardlinks is 0) would pass as root's own file
                return None, "{} is a hard link ({} names) in a directory anybody can add to".format(
                    candidate, info.st_nlink)
            if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
                shared = True
        resolved.append(part)
    inside = "/" + "/".join(resolved)
    return (os.path.join(base, *resolved), inside), None


class Gpu:
    """One GPU as the kernel driver lists it; ``index`` is nvidia-smi's (PCI bus order)."""

    __slots__ = ("index", "minor", "uuid", "model", "bus_id", "path")

    def __init__(self, index: int, minor: int, uuid: str, model: str, bus_id: str, path: Optional[str] = None) -> None:
        self.index = index
        self.minor = minor
        self.uuid = uuid
        self.model = model
        self.bus_id = bus_id
        self.path = path

    @property
    def device_path(self) -> str:
        """``/dev/nvidia<minor>``; on WSL2 the one ``/dev/dxg``."""
        return self.path or "/dev/nvidia{}".format(self.minor)

    def describe(self) -> str:
        return "{} ({}, {})".format(self.index, self.uuid, self.model)

    def __repr__(self) -> str:
        return "Gpu(index={}, minor={}, uuid={!r}, model={!r}, bus_id={!r})".format(
            self.index, self.minor, self.uuid, self.model, self.bus_id
        )


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_information(text: str) -> Dict[str, str]:
    """``Key:  value`` lines of ``/proc/driver/nvidia/gpus/<bus>/information``."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_version(text: str) -> Optional[str]:
    """The version in ``NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu ...``
    (also the "Open Kernel Module for x86_64" spelling)."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            for word in line.split()[2:]:
                if word[:1].isdigit() and "." in word:
                    return word
    return None


class Driver:
    """The driver under ``root``: what :func:`discover` found, plus lazy lookups of files."""

    def __init__(
        self, root: str, version: str, gpus: Sequence[Gpu], proc_root: str, dev_root: str, wsl: bool = False,
        mps_pipe_dir: str = caps.MPS_PIPE_DIR,
    ) -> None:
        self.root = root
        #: The MPS control daemon's pipe directory (``CUDA_MPS_PIPE_DIRECTORY``; the admin's, else /tmp's).
        self.mps_pipe_dir = mps_pipe_dir
        #: Host paths a container would have got but that failed the trust check (see
        #: :func:`resolve_trusted`): ``"<path>: <why>"``, for the runtime's log and ``doctor``.
        self.refused: List[str] = []
        #: Why the driver root's own chain is not root's alone ("": it is; None: not checked yet).
        self._root_problem: Optional[str] = None
        self.version = version
        self.gpus = list(gpus)
        self.proc_root = proc_root
        self.dev_root = dev_root
        #: A WSL2 driver: one ``/dev/dxg`` for every GPU, libraries in ``/usr/lib/wsl/lib``, no
        #: ``/proc/driver/nvidia``, no ``/dev/nvidia*`` and (usually) no known version.
        self.wsl = wsl
        self._cache: Optional[List[CacheEntry]] = None
        self._mig: Optional[Mig] = None
        #: The lstat of every directory walked through by this discovery pass (resolve_trusted's memo).
        self._walked: Dict[str, os.stat_result] = {}
        #: libraries() per (capabilities, word size): the mounts and the links both need them.
        self._libraries: Dict[Tuple[Tuple[str, ...], int], List[Tuple[str, str]]] = {}

    @property
    def version_known(self) -> bool:
        return self.version != UNKNOWN_VERSION

    # -- GPUs ----------------------------------------------------------------------------------

    def describe_gpus(self) -> str:
        if not self.gpus:
            return "no GPU"
        return ", ".join("GPU " + gpu.describe() for gpu in self.gpus)

    def find_gpu(self, selector: str) -> Gpu:
        """A GPU by index (``"1"``) or UUID (``"GPU-..."``); an unknown one names those that exist."""
        wanted = selector.strip()
        if self.wsl:
            if wanted == "0" and self.gpus:
                return self.gpus[0]
            raise GpuSetupError(
                "WSL2 gives a container every GPU through the one {} node: a GPU request can be all or 0, "
                "not {}".format(WSL_DEVICE, quoted(wanted)),
                hint="request all (or 0); to limit the GPUs a program uses, set CUDA_VISIBLE_DEVICES in the container",
            )
        for gpu in self.gpus:
            if wanted.isascii() and wanted.isdigit() and len(wanted) < 10 and int(wanted) == gpu.index:
                return gpu
            if wanted.lower() == gpu.uuid.lower():
                return gpu
        raise GpuSetupError(
            "unknown GPU {}: this host has {}".format(quoted(wanted), self.describe_gpus()),
            hint="request an index or UUID from that list (nvidia-smi -L shows them), or all",
        )

    def may_have_mig(self) -> bool:
        """Whether a GPU has MIG on (its ``capabilities/gpu<N>/mig`` exists, what the MIG module reads
        first), so that a container start on a host without MIG never imports it."""
        base = os.path.join(self.proc_root, "capabilities")
        return not self.wsl and any(os.path.isdir(os.path.join(base, "gpu{}".format(gpu.minor), "mig")) for gpu in self.gpus)

    @property
    def mig(self) -> Mig:
        """The MIG devices and IMEX channels (read on first use: see :mod:`nvdocker_setup.driver.mig`)."""
        if self._mig is None:
            from nvdocker_setup.driver.mig import Mig

            self._mig = Mig(self)
        return self._mig

    # -- device nodes ----------------------------------------------------------------------------

    def device_node(self, path: str) -> Optional[DeviceNode]:
        """The character device at container path ``path`` as it exists on the host, or None."""
        host_path = os.path.join(self.dev_root, os.path.relpath(path, "/dev"))
        try:
            info = os.lstat(host_path)  # a symlink is no node of ours: it could name any device
        except OSError:
            return None
        if not stat.S_ISCHR(info.st_mode):
            return None
        # the node and every directory above it are root's: nobody else chose its numbers
        _found, problem = resolve_trusted("/", host_path)
        if problem is not None:
            self._refuse(path, problem)
            return None
        return DeviceNode(
            path=path,
            host_path=host_path,
            major=os.major(info.st_rdev),
            minor=os.minor(info.st_rdev),
            file_mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
        )

    def gated_device_nodes(self, feature: str) -> List[DeviceNode]:
        """The device nodes of an opt-in feature (:data:`GATED_DEVICES`: ``NVIDIA_GDS``,
        ``NVIDIA_MOFED``, ``NVIDIA_NVSWITCH``, ``NVIDIA_GDRCOPY`` = ``enabled``): root's own
        character devices only, as every node (:meth:`device_node`); a directory is listed at
        most :data:`_MAX_GATED_NODES` entries deep."""
        nodes: List[DeviceNode] = []
        for directory, prefixes in GATED_DEVICES[feature]:
            try:
                with os.scandir(os.path.join(self.dev_root, os.path.relpath(directory, "/dev"))) as entries:
                    names = sorted(entry.name for _, entry in zip(range(_MAX_GATED_NODES), entries))
            except OSError:
                continue
            for name in names:
                if any(name == prefix or (prefix.endswith("*") and name.startswith(prefix[:-1])) for prefix in prefixes):
                    node = self.device_node(posixpath.join(directory, name))
                    if node is not None:
                        nodes.append(node)
        return nodes

    def gpu_device_node(self, gpu: Gpu) -> DeviceNode:
        node = self.device_node(gpu.device_path)
        if node is None:
            raise GpuSetupError(
                "GPU {} has no device node {} under {}".format(gpu.index, gpu.device_path, self.dev_root),
                hint="create the NVIDIA device nodes (nvidia-modprobe -c {}, or nvidia-ctk system create-device-nodes)".format(gpu.minor),
            )
        return node

    def drm_nodes(self, gpu: Gpu) -> List[DeviceNode]:
        """The GPU's DRM nodes (``/dev/dri/card<N>``, ``/dev/dri/renderD<N>``), found through udev's
        ``/dev/dri/by-path/pci-<bus id>-card`` / ``-render`` links: a link counts only when it is
        root's and names ``../card<N>`` or ``../renderD<N>``, and a node only when it is root's own
        character device with the major ``/proc/devices`` lists for ``drm`` (226). What fails is left
        out (and noted in :attr:`refused`)."""
        if self.wsl or not gpu.bus_id:
            return []
        from nvdocker_setup.driver.devices import read_proc_devices

        drm_major = read_proc_devices(self.root)[1].get("drm")
        by_path = os.path.join(self.dev_root, "dri", "by-path")
        nodes: List[DeviceNode] = []
        for kind, stem in (("card", "card"), ("render", "renderD")):
            link = os.path.join(by_path, "pci-{}-{}".format(gpu.bus_id.lower(), kind))
            try:
                info = os.lstat(link)
                target = os.readlink(link) if stat.S_ISLNK(info.st_mode) else ""
            except OSError:
                continue
            name = target[3:] if target.startswith("../") else ""
            number = name[len(stem):]
            if info.st_uid != 0 or not name.startswith(stem) or not number.isdigit() or len(number) > 7:
                self._refuse("/dev/dri/by-path/" + os.path.basename(link), "owned by uid {}".format(info.st_uid)
                             if info.st_uid != 0 else "not a link to ../{}<N>".format(stem))
                continue
            node = self.device_node("/dev/dri/" + name)
            if node is None:
                continue
            if drm_major is not None and node.major != drm_major:
                self._refuse("/dev/dri/" + name, "major {} but /proc/devices lists drm as {}".format(node.major, drm_major))
                continue
            nodes.append(node)
        return nodes

    def control_device_nodes(self) -> List[DeviceNode]:
        if self.wsl:  # /dev/dxg is all there is, and it is the GPU's node
            return []
        nodes = [node for node in (self.device_node(path) for path in CONTROL_DEVICES) if node is not None]
        if not any(node.path == "/dev/nvidiactl" for node in nodes):
            raise GpuSetupError(
                "the NVIDIA control device /dev/nvidiactl is missing under {}".format(self.dev_root),
                hint="load the driver and create its device nodes (nvidia-modprobe, or nvidia-ctk system "
                "create-device-nodes --control-devices)",
            )
        return nodes

    # -- files -----------------------------------------------------------------------------------

    @property
    def ld_cache_path(self) -> str:
        return os.path.join(self.root, LD_CACHE.lstrip("/"))

    def cache_entries(self) -> List[CacheEntry]:
        """The ld cache's entries for driver libraries (others are skipped unread)."""
        if self._cache is None:
            from nvdocker_setup.driver import ldcache

            wanted = tuple(name.encode() for name in caps.libraries_for(caps.ALL_CAPABILITIES))
            # the cache names the files containers get: it must be root's alone too, and a link to
            # it resolves inside the driver root, as every other path does
            found, problem = resolve_trusted(self.root, LD_CACHE)
            if problem is not None:
                raise GpuSetupError("the driver root's ld cache is not root's alone: {}".format(problem),
                                    hint="chown root:root and chmod go-w it and the directories above it, then run "
                                    "ldconfig{}".format("" if _is_host_root(self.root) else " -r " + self.root))
            if found is None:
                raise GpuSetupError(
                    "cannot read the dynamic linker cache {}: it does not exist (inside the driver root)".format(
                        self.ld_cache_path),
                    hint="run ldconfig (with -r ROOT for a driver root) so that the driver's libraries are indexed")
            self._cache = ldcache.read(found[0], wanted)
        return self._cache

    def _refuse(self, what: str, why: str) -> None:
        """Note a host path left out (once): the runtime logs these, ``doctor`` names them."""
        note = "{}: {}".format(what, why)
        if note not in self.refused:
            self.refused.append(note)

    def locate(self, path: str) -> Optional[Tuple[str, str]]:
        """``(host path, container path)`` of a file in the driver root: the host path with every
        symlink resolved and the chain trusted (:func:`resolve_trusted`), the container path the one
        asked for, never the resolved one. None when it is missing or untrusted (then noted in
        :attr:`refused`)."""
        found = self.locate_resolved(path)
        return (found[0], path) if found is not None else None

    def locate_library(self, path: str) -> Optional[Tuple[str, str]]:
        """:meth:`locate` for an ld cache entry: the file it resolves to goes into the library
        directory the entry names (that directory resolved, so a merged ``/lib -> usr/lib`` gives
        ``/usr/lib/...``, where the hook finds a real directory), under the file's own name
        (``libcuda.so.1`` -> ``libcuda.so.550.54.14``, also when Debian's alternatives put the file
        under ``nvidia/current``); the hook's ldconfig makes the SONAME links."""
        directory = self.locate_resolved(posixpath.dirname(path))
        located = self.locate(path) if directory is not None else None
        if located is None or directory is None:
            return None
        return located[0], posixpath.join(directory[1], posixpath.basename(located[0]))

    def locate_resolved(self, path: str) -> Optional[Tuple[str, str]]:
        """``(host path, resolved path inside the root)``, trusted like :meth:`locate`: for library
        directories (the container gets files in them) and for WSL's folder, whose files must
        resolve inside it."""
        if self._root_problem is None:  # the driver root's own chain: once per Driver, not once per path
            self._root_problem = resolve_trusted("/", self.root)[1] or "" if not _is_host_root(self.root) else ""
        if self._root_problem:
            self._refuse(path, "the driver root " + self._root_problem)
            return None
        found, problem = resolve_trusted(self.root, path, check_root=False, memo=self._walked)
        if problem is not None:
            self._refuse(path, problem)
            return None
        return found

    def libraries(self, capabilities: Iterable[str], word_size: int = 64) -> List[Tuple[str, str]]:
        """The library files for ``capabilities``: ``(host path, container path)``, deduplicated.

        Each ld cache name (``libcuda.so.1``, ``libcuda.so``) is resolved to the file it links
        to (``libcuda.so.550.54.14``), which is what gets mounted; the hook's ldconfig recreates
        the SONAME links in the container.
        """
        if self.wsl:
            return self._wsl_libraries(capabilities) if word_size == 64 else []
        capabilities = tuple(capabilities)
        memo_key = (capabilities, word_size)
        if memo_key in self._libraries:
            return list(self._libraries[memo_key])
        prefixes = frozenset(caps.libraries_for(capabilities))
        found: Dict[str, Tuple[str, str]] = {}
        for entry in self.cache_entries():
            if entry.word_size != word_size or _matching_prefix(entry.name, prefixes) is None:
                continue
            located = self.locate_library(entry.path)
            if located is not None:
                found.setdefault(located[1], located)
        if capabilities:
            for located in self.directory_libraries(list(found.values()), capabilities):
                found.setdefault(located[1], located)
        result = [found[key] for key in sorted(found)]
        self._libraries[memo_key] = result
        return list(result)

    def directory_libraries(self, listed: List[Tuple[str, str]], capabilities: Sequence[str]) -> List[Tuple[str, str]]:
        """``(host path, container path)`` of the driver's libraries the ld cache did not give: the
        regular files ``lib*.so.<driver version>`` in the host directories of the ``listed``
        libraries (Debian's ``nvidia/current`` too), mounted in the container directory those go
        to: one of ``capabilities``' lists, or one no list names, with
        :data:`~nvdocker_setup.driver.capabilities.UNLISTED_LIBRARIES_CAPABILITY` (a library a newer
        driver adds). Each passes the trust rules as every other file does."""
        if self.wsl or not self.version_known:
            return []
        suffix = ".so." + self.version
        known = frozenset(caps.libraries_for(caps.ALL_CAPABILITIES))
        wanted = frozenset(caps.libraries_for(capabilities))
        unlisted = caps.UNLISTED_LIBRARIES_CAPABILITY in capabilities
        # (a library the ld cache names is mounted from its entry; a driver upgrade without ldconfig,
        # or a library the lists do not know, is found here)
        directories: Dict[str, str] = {}  # host directory -> container directory
        for host, container in listed:
            directories.setdefault(posixpath.dirname(host), posixpath.dirname(container))
        found: List[Tuple[str, str]] = []
        cached = {_matching_prefix(entry.name, known) for entry in self.cache_entries()}
        for host_dir, container_dir in sorted(directories.items()):
            inner = host_dir if _is_host_root(self.root) else host_dir[len(self.root.rstrip("/")):]
            try:
                with os.scandir(host_dir) as entries:
                    names = sorted(entry.name for index, entry in zip(range(_MAX_LIBRARY_DIR_ENTRIES), entries)
                                   if entry.name.startswith("lib") and entry.name.endswith(suffix))
            except OSError:
                continue
            for name in names:
                prefix = _matching_prefix(name, known)
                if prefix is not None:
                    # a listed library comes from here only when the ld cache has no entry of it at all:
                    # where it has one, that entry decided (and may have been refused for its link)
                    if prefix not in wanted or prefix in cached:
                        continue
                elif not unlisted:
                    continue
                located = self.locate_resolved(posixpath.join(inner or "/", name))
                if located is None:
                    continue
                try:
                    regular = stat.S_ISREG(os.stat(located[0]).st_mode)
                except OSError:
                    regular = False
                if regular:
                    found.append((located[0], posixpath.join(container_dir, name)))
        return found

    def library_links(self, capabilities: Iterable[str], word_size: int = 64) -> List[Tuple[str, str, str]]:
        """``(target, container directory, name)`` of the links that go next to the libraries for
        ``capabilities``, sorted, at most :data:`~nvdocker_setup.driver.links.MAX_LINKS`.

        These are the symlinks the host has for the libraries we mount: every ld cache entry
        (``libcuda.so.1``, and ``libcuda.so`` when a driver install added that development link)
        that is a symlink whose chain of plain names in its own directory ends at a mounted
        library. Plus NVIDIA's :data:`~nvdocker_setup.driver.links.NVIDIA_LINKS`
        (``libcuda.so -> libcuda.so.1`` even when the host lacks it). A link whose target leaves
        its directory is not copied.
        """
        from nvdocker_setup.driver import links as rules

        if self.wsl:  # Windows' folder holds no symlinks: its files are mounted under their own names
            return []
        capabilities = tuple(capabilities)
        mounted: Dict[str, set] = {}  # container directory -> names of the library files mounted there
        for _host, container in self.libraries(capabilities, word_size):
            directory, _, name = container.rpartition("/")
            mounted.setdefault(directory, set()).add(name)
        prefixes = caps.libraries_for(capabilities)
        prefix_set = frozenset(prefixes)
        located_dirs: Dict[str, Optional[Tuple[str, str]]] = {}
        found: Dict[Tuple[str, str], str] = {}  # (container directory, name) -> target
        present: List[Tuple[str, str]] = []  # names that will resolve in the container
        for entry in self.cache_entries():
            if entry.word_size != word_size or _matching_prefix(entry.name, prefix_set) is None:
                continue
            parent, _, name = entry.path.rpartition("/")
            if parent not in located_dirs:
                located_dirs[parent] = self.locate_resolved(parent) if parent else None
            located = located_dirs[parent]
            if located is None or located[1] not in mounted or not rules.is_plain_name(name):
                continue
            host_dir, container_dir = located
            target = _link_in_directory(host_dir, name, parent)
            end = _chain_end(host_dir, name, parent) if target is not None else name
            if end not in mounted[container_dir]:
                # a link that leaves its directory (Debian's alternatives: libcuda.so.1 ->
                # /etc/alternatives/... -> nvidia/current/libcuda.so.1 -> libcuda.so.<ver>) counts
                # when its trusted resolution is the very file mounted here: the same name then
                # points at that file's name in the container
                resolved = self.locate_library(entry.path)
                if resolved is None or resolved[1].rpartition("/")[0] != container_dir:
                    continue
                end = target = resolved[1].rpartition("/")[2]
                if end not in mounted[container_dir] or end == name:
                    continue
            present.append((container_dir, name))
            if target is not None:
                found.setdefault((container_dir, name), target)
        for link, prefix in rules.NVIDIA_LINKS:
            for container_dir, name in sorted(present):
                if name.startswith(prefix) and name[len(prefix):].isdigit():
                    found.setdefault((container_dir, link), name)
        ordered = sorted(found.items())[: rules.MAX_LINKS]
        return [(target, directory, name) for (directory, name), target in ordered]

    def wsl_files(self) -> List[Tuple[str, str]]:
        """WSL2: ``(host path, container path)`` of the regular files in ``/usr/lib/wsl/lib``
        (a symlink counts when it resolves, inside the root, to a file of that folder), sorted by
        name, at most 256 entries looked at."""
        from nvdocker_setup.driver.links import is_plain_name

        located_dir = self.locate_resolved(WSL_LIB_DIR)
        if located_dir is None:
            return []
        try:
            names = sorted(os.listdir(located_dir[0]))[:_MAX_WSL_ENTRIES]
        except OSError:
            return []
        found: Dict[str, Tuple[str, str]] = {}
        for name in names:
            if not is_plain_name(name):
                continue
            located = self.locate_resolved(located_dir[1] + "/" + name)
            # a link out of the folder (to a host file when the root is /) is not Windows' file
            if located is not None and located[1].rpartition("/")[0] == located_dir[1] and os.path.isfile(located[0]):
                found.setdefault(located[1], located)
        return [found[key] for key in sorted(found)]

    def wsl_store_files(self, capabilities: Iterable[str]) -> List[Tuple[str, str]]:
        """WSL2: ``(host path, container path)`` of the driver store's files for ``capabilities``
        (:data:`WSL_STORE_FILES`), each at its own path: the folders ``nv*.inf_amd64_*`` of
        :data:`WSL_DRIVER_STORE`, at most 256 entries looked at, regular files only, trusted as
        every other path."""
        if not self.wsl:
            return []
        wanted = [name for capability in capabilities for name in WSL_STORE_FILES.get(capability, ())]
        if not wanted:
            return []
        store = self.locate_resolved(WSL_DRIVER_STORE)
        if store is None:
            return []
        try:
            folders = sorted(os.listdir(store[0]))[:_MAX_WSL_ENTRIES]
        except OSError:
            return []
        found: Dict[str, Tuple[str, str]] = {}
        for folder in folders:
            if not (folder.startswith("nv") and ".inf_amd64_" in folder) or "/" in folder:
                continue
            for name in wanted:
                path = "{}/{}/{}".format(WSL_DRIVER_STORE, folder, name)
                if not os.path.lexists(os.path.join(self.root, path.lstrip("/"))):
                    continue
                located = self.locate(path)
                if located is not None and os.path.isfile(located[0]):
                    found.setdefault(located[1], located)
        return [found[key] for key in sorted(found)]

    def _wsl_libraries(self, capabilities: Iterable[str]) -> List[Tuple[str, str]]:
        """The WSL library files for ``capabilities`` (``libcuda.so.1`` and ``libcuda.so.1.1``
        both: Windows' folder has no links), plus :data:`WSL_LIBRARIES`."""
        prefixes = caps.libraries_for(capabilities) + WSL_LIBRARIES
        return [
            (host, container)
            for host, container in self.wsl_files()
            if any(_matches(container.rpartition("/")[2], prefix) for prefix in prefixes)
        ]

    def binaries(self, capabilities: Iterable[str]) -> List[Tuple[str, str]]:
        found: List[Tuple[str, str]] = []
        if self.wsl:  # nvidia-smi is in Windows' folder (or the driver store): it goes where images look for it
            capabilities = tuple(capabilities)
            shared = {container.rpartition("/")[2]: host for host, container in self.wsl_files()}
            for host, container in self.wsl_store_files(capabilities):
                shared.setdefault(container.rpartition("/")[2], host)
            for name in caps.binaries_for(capabilities):
                if name in shared:
                    found.append((shared[name], WSL_BINARY_DIR + "/" + name))
            return found
        for name in caps.binaries_for(capabilities):
            for directory in caps.BINARY_DIRS:
                located = self.locate(directory + "/" + name)
                if located is not None and os.path.isfile(located[0]):
                    found.append(located)
                    break
        return found

    def existing(self, paths: Iterable[str]) -> List[Tuple[str, str]]:
        """Those of ``paths`` (container paths) that exist in the driver root, deduplicated."""
        found: Dict[str, Tuple[str, str]] = {}
        for path in paths:
            located = self.locate(path)
            if located is not None:
                found.setdefault(located[1], located)
        return list(found.values())

    def firmware(self) -> Optional[Tuple[str, str]]:
        """The GSP firmware directory of this driver version, when the driver has one: the first
        ``<dir>/nvidia/<version>`` on the kernel's firmware search path (``firmware_class.path``,
        then :data:`FIRMWARE_DIRS`), mounted at that same path."""
        if self.wsl or not self.version_known:
            return None
        release = os.uname().release
        custom = (_read_text(os.path.join(self.root, FIRMWARE_CLASS_PATH.lstrip("/"))) or "").strip()
        bases = ([custom.rstrip("/")] if custom.startswith("/") and "\0" not in custom else [])
        bases += [base.format(release=release) for base in FIRMWARE_DIRS]
        for base in bases:
            path = posixpath.normpath("{}/nvidia/{}".format(base, self.version))
            if not os.path.lexists(os.path.join(self.root, path.lstrip("/"))):
                continue
            located = self.locate(path)
            if located is not None:
                return located
        return None

    def ipc_paths(self, capabilities: Iterable[str]) -> List[Tuple[str, str]]:
        """The daemons' sockets for ``capabilities``, and with ``compute`` the MPS pipe directory."""
        capabilities = tuple(capabilities)
        found = self.existing(caps.ipc_paths_for(capabilities))
        if caps.COMPUTE in capabilities:
            mps = self.mps_directory()
            if mps is not None and all(mps[1] != container for _host, container in found):
                found.append(mps)
        return found

    def mps_directory(self) -> Optional[Tuple[str, str]]:
        """The MPS pipe directory, shared *writable* with compute containers: only a directory of
        root's alone on a ``nosuid,nodev`` mount. On any other mount a container's root could leave a
        set-uid root program or a device node there that every local user can then run or open on the
        host (the container's own ``nosuid,nodev`` bind options do not reach the host's view)."""
        located = self.locate(self.mps_pipe_dir)
        if located is None:
            return None
        why = None
        try:
            if not stat.S_ISDIR(os.stat(located[0]).st_mode):
                why = "not a directory"
            else:
                flags = os.statvfs(located[0]).f_flag
                if not (flags & os.ST_NOSUID and flags & os.ST_NODEV):
                    why = ("on a mount without nosuid,nodev (a container could leave set-uid programs or device "
                           "nodes there for the host's users)")
        except OSError as exc:
            why = exc.strerror or str(exc)
        if why is not None:
            self._refuse(self.mps_pipe_dir, why)
            return None
        return located

    @property
    def cuda_version(self) -> str:
        from nvdocker_setup.driver.requirements import cuda_version_for_driver

        return cuda_version_for_driver(self.version)


def _matches(name: str, prefix: str) -> bool:
    """``libcuda.so`` matches ``libcuda.so`` and ``libcuda.so.1``, not ``libcuda.so_x``."""
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] == ".")


def _matching_prefix(name: str, prefixes: "frozenset") -> Optional[str]:
    """The prefix of ``prefixes`` (SONAME prefixes, each ending in ``.so``) that ``name`` matches
    as :func:`_matches` says, found by set lookups of its ``.so`` stems instead of a scan of every
    prefix (the hot path of a GPU container start: ~100 cache entries times ~50 prefixes)."""
    at = name.find(".so")
    while at >= 0:
        end = at + 3
        if end == len(name) or name[end] == ".":
            stem = name[:end]
            if stem in prefixes:
                return stem
        at = name.find(".so", at + 1)
    return None


def _plain_target(target: str, directory: str) -> Optional[str]:
    """A link target as a plain name in ``directory`` (an absolute target in it counts), or None."""
    from nvdocker_setup.driver.links import is_plain_name

    if target.startswith("/") and target.rpartition("/")[0] == directory:
        target = target.rpartition("/")[2]
    return target if is_plain_name(target) else None


def _link_in_directory(host_dir: str, name: str, directory: str) -> Optional[str]:
    """The target of symlink ``name`` as a plain name in the same directory; None when ``name``
    is no symlink or points elsewhere."""
    try:
        return _plain_target(os.readlink(os.path.join(host_dir, name)), directory)
    except OSError:
        return None


def _chain_end(host_dir: str, name: str, directory: str, hops: int = 8) -> Optional[str]:
    """The name a chain of same-directory links starting at ``name`` ends at (a file, not a
    link); None when the chain leaves the directory, breaks or is too long."""
    for _ in range(hops):
        try:
            target = os.readlink(os.path.join(host_dir, name))
        except OSError as exc:
            return name if exc.errno == errno.EINVAL else None
        following = _plain_target(target, directory)
        if following is None:
            return None
        name = following
    return None


def _kernel_dir(root: str, path: str) -> str:
    """``root``'s copy of a kernel directory when it has one, else the host's."""
    if not _is_host_root(root):
        candidate = os.path.join(root, path.lstrip("/"))
        if os.path.exists(candidate):
            return candidate
    return path


def read_gpus(proc_gpus_dir: str) -> List[Gpu]:
    """Every GPU under ``.../proc/driver/nvidia/gpus``, indexed in PCI bus order as nvidia-smi does."""
    try:
        bus_ids = sorted(os.listdir(proc_gpus_dir), key=str.lower)
    except OSError:
        return []
    gpus: List[Gpu] = []
    for bus_id in bus_ids:
        text = _read_text(os.path.join(proc_gpus_dir, bus_id, "information"))
        if text is None:
            continue
        fields = parse_information(text)
        minor = fields.get("Device Minor", "")
        if not minor.isdigit():
            continue
        gpus.append(
            Gpu(
                index=len(gpus),
                minor=int(minor),
                uuid=fields.get("GPU UUID", ""),
                model=fields.get("Model", "NVIDIA GPU"),
                bus_id=fields.get("Bus Location", bus_id),
            )
        )
    return gpus


def parse_wsl_version(names: Iterable[str]) -> Optional[str]:
    """The driver version in a WSL library's name (``libnvidia-ml.so.560.94``), or None: WSL2 names
    its files after the SONAME (``libcuda.so.1.1``), so usually none; a version's first part is
    a driver branch (3 digits), which ``1.1`` is not."""
    for name in sorted(names):
        for stem in ("libnvidia-ml.so.", "libcuda.so."):
            if not name.startswith(stem):
                continue
            parts = name[len(stem):].split(".")
            if 2 <= len(parts) <= 4 and all(part.isascii() and part.isdigit() and len(part) <= 8 for part in parts):
                if int(parts[0]) >= 100:
                    return name[len(stem):]
    return None


def discover_wsl(root: str) -> Optional[Driver]:
    """The WSL2 driver under ``root``: ``dev/dxg`` is a character device (the root's, else the
    host's) and ``usr/lib/wsl/lib`` a directory; None when it is not one."""
    lib_dir = os.path.join(root, WSL_LIB_DIR.lstrip("/"))
    if not os.path.isdir(lib_dir):
        return None
    dev_root = "/dev"
    if not _is_host_root(root) and os.path.lexists(os.path.join(root, "dev", "dxg")):
        dev_root = os.path.join(root, "dev")
    try:
        info = os.stat(os.path.join(dev_root, "dxg"))
    except OSError:
        return None
    if not stat.S_ISCHR(info.st_mode):
        return None
    try:
        names = os.listdir(lib_dir)[:_MAX_WSL_ENTRIES]
    except OSError:
        names = []
    version = parse_wsl_version(names) or UNKNOWN_VERSION
    gpu = Gpu(index=0, minor=os.minor(info.st_rdev), uuid="", model="every GPU of the Windows host (WSL2)",
              bus_id="", path=WSL_DEVICE)
    proc_root = _kernel_dir(root, "/proc/driver/nvidia")
    return Driver(root=root, version=version, gpus=[gpu], proc_root=proc_root, dev_root=dev_root, wsl=True)


def discover(root: str = "/", mps_pipe_dir: Optional[str] = None, dev_root: Optional[str] = None) -> Driver:
    """The driver under ``root``; a :class:`GpuSetupError` when no NVIDIA driver is loaded there.
    ``mps_pipe_dir``: where the admin runs the MPS control daemon (default :data:`caps.MPS_PIPE_DIR`).
    ``dev_root``: the root whose ``dev/`` holds the device nodes, when not the driver root's (a
    driver container's files under /run/nvidia/driver, its nodes in the host's /dev)."""
    driver = _discover(os.path.abspath(root or "/"))
    if mps_pipe_dir:
        driver.mps_pipe_dir = mps_pipe_dir
    if dev_root:
        if not os.path.isdir(os.path.join(dev_root, "dev")):
            raise GpuSetupError("the device root {} has no dev/ directory".format(dev_root),
                                hint="--dev-root names the root that contains dev/ (often /)")
        driver.dev_root = os.path.join(os.path.abspath(dev_root), "dev")
    return driver


def _discover(root: str) -> Driver:
    if not os.path.isdir(root):
        raise GpuSetupError("the driver root {} is not a directory".format(root), hint="fix driver-root (or NVDOCKER_DRIVER_ROOT)")
    if not os.path.exists(os.path.join(root, "proc/driver/nvidia")):
        # WSL2 has no /proc/driver/nvidia; a root with its own (a native driver) is never WSL's
        wsl = discover_wsl(root)
        if wsl is not None:
            return wsl
    proc_root = _kernel_dir(root, "/proc/driver/nvidia")
    dev_root = _kernel_dir(root, "/dev") if os.path.exists(os.path.join(root, "dev", "nvidiactl")) else "/dev"
    version_text = _read_text(os.path.join(proc_root, "version"))
    version = parse_version(version_text) if version_text is not None else None
    if version is None:
        where = os.path.join(proc_root, "version")
        if version_text is None and not _is_host_root(root):
            where = "{} (nor {})".format(where, os.path.join(root, VERSION_FILE.lstrip("/")))
        raise GpuSetupError(
            "no NVIDIA driver is loaded: {} is {}".format(where, "missing" if version_text is None else "not understood"),
            hint="install and load the NVIDIA driver (nvidia-smi should work on the host), or set driver-root",
        )
    gpus = read_gpus(os.path.join(proc_root, "gpus"))
    return Driver(root=root, version=version, gpus=gpus, proc_root=proc_root, dev_root=dev_root)
