"""Build :class:`ContainerEdits` from a discovered driver: per GPU, and common to every GPU.

The runtime asks for ``request_edits(driver, gpus, capabilities, hook)``; ``cdi generate`` writes
``gpu_edits`` per device and ``common_edits`` for the whole spec. Both come from these functions.
"""

from __future__ import annotations

import os

from nvdocker_setup.driver import capabilities as caps
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.links import format_link
from nvdocker_setup.driver.model import HOOK_ENV, READ_ONLY_MOUNT, WRITABLE_MOUNT, ContainerEdits, Hook, Mount

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Iterable, List, Optional, Sequence, Tuple

    from nvdocker_setup.driver.discovery import Driver, Gpu
    from nvdocker_setup.driver.model import DeviceNode

#: The OCI lifecycle point our ld cache hook runs at: after the mounts, before pivot_root.
LDCACHE_HOOK_POINT = "createContainer"


class HookCommand:
    """How to start our hook binary: absolute ``path``, the argv before the subcommand, and the
    host ``ldconfig`` it runs against the container root."""

    __slots__ = ("path", "args", "ldconfig")

    def __init__(self, path: str, args: Sequence[str], ldconfig: str) -> None:
        # runc resolves a relative hook path against its working directory, which for a
        # createContainer hook is the container's rootfs: only absolute paths, on the host
        for what, value in (("hook path", path), ("ldconfig", ldconfig)):
            if not isinstance(value, str) or not value.startswith("/"):
                raise GpuSetupError("the {} must be an absolute path, got {!r}".format(what, value))
        self.path = path
        self.args = list(args)
        self.ldconfig = ldconfig

    def ldcache_hook(
        self,
        folders: Iterable[str],
        rootfs: Optional[str] = None,
        links: Iterable[Tuple[str, str, str]] = (),
        host_driver_version: Optional[str] = None,
    ) -> Hook:
        """The hook entry; with ``rootfs`` (the runtime knows it, a CDI spec cannot) the hook
        need not read the container state, which saves it the JSON parsing. ``links`` are
        ``(target, container directory, name)``: the same interpreter start creates them before
        it runs ldconfig, so the new names are in the container's ld cache too. With
        ``host_driver_version`` (a version :func:`versions.parse_version` reads; anything else is
        left out) the hook also puts the image's CUDA forward-compatibility directory first in
        the ld cache when its ``libcuda.so.<version>`` is of a newer driver branch."""
        from nvdocker_setup.driver.versions import COMPAT_DIR, parse_version

        argv = self.args + ["update-ldcache"]
        if host_driver_version is not None and parse_version(host_driver_version) is not None:
            argv += ["--cuda-compat-dir", COMPAT_DIR, "--host-driver-version", host_driver_version]
        argv += ["--ldconfig", self.ldconfig]
        if rootfs is not None:
            argv += ["--rootfs", rootfs]
        for folder in folders:
            argv += ["--folder", folder]
        for target, directory, name in links:
            argv += ["--link", format_link(target, directory, name)]
        return Hook(LDCACHE_HOOK_POINT, self.path, argv, HOOK_ENV)

    def dri_link_hook(self, dri_links: Iterable[Tuple[str, str]], rootfs: Optional[str] = None) -> Hook:
        """The hook entry that makes udev's ``/dev/dri/by-path`` links (``(node, name)``: NAME ->
        ../NODE) in the container; without ``--folder`` it runs no ldconfig."""
        argv = self.args + ["update-ldcache", "--ldconfig", self.ldconfig]
        if rootfs is not None:
            argv += ["--rootfs", rootfs]
        for node, name in dri_links:
            argv += ["--dri-link", "{}::{}".format(node, name)]
        return Hook(LDCACHE_HOOK_POINT, self.path, argv, HOOK_ENV)


#: The capabilities whose libraries talk to the GPU through its DRM nodes (EGL, Vulkan, GBM, VA/VDPAU, Xorg).
DRM_CAPABILITIES = (caps.GRAPHICS, caps.VIDEO, caps.DISPLAY)


def gpu_edits(driver: Driver, gpu: Gpu, capabilities: Sequence[str] = (), hook: Optional[HookCommand] = None,
              rootfs: Optional[str] = None) -> ContainerEdits:
    """What one GPU adds: its device node (and the cgroup rule that goes with it), and with
    graphics, video or display its DRM nodes (``/dev/dri/card<N>``, ``renderD<N>``) and, with a
    ``hook``, the hook that makes their ``/dev/dri/by-path`` links."""
    nodes = [driver.gpu_device_node(gpu)]
    hooks = []
    if any(capability in DRM_CAPABILITIES for capability in capabilities):
        drm = driver.drm_nodes(gpu)
        nodes += drm
        links = drm_links(gpu, drm)
        if hook is not None and links:
            hooks.append(hook.dri_link_hook(links, rootfs))
    return ContainerEdits(device_nodes=nodes, hooks=hooks)


def drm_links(gpu: Gpu, drm_nodes: Sequence[DeviceNode]) -> List[Tuple[str, str]]:
    """``(node, by-path name)`` of udev's links to ``drm_nodes`` of ``gpu``:
    ``pci-<bus id>-card -> ../card<N>``, ``pci-<bus id>-render -> ../renderD<N>``."""
    found = []
    for node in drm_nodes:
        name = node.path.rpartition("/")[2]
        kind = "render" if name.startswith("renderD") else "card"
        found.append((name, "pci-{}-{}".format(gpu.bus_id.lower(), kind)))
    return found


def _word_sizes(capabilities: Sequence[str]) -> Tuple[int, ...]:
    return (64, 32) if caps.COMPAT32 in capabilities else (64,)


def _library_mounts(driver: Driver, capabilities: Sequence[str]) -> List[Mount]:
    return [Mount(host, container) for size in _word_sizes(capabilities) for host, container in driver.libraries(capabilities, size)]


def _library_links(driver: Driver, capabilities: Sequence[str]) -> List[Tuple[str, str, str]]:
    """The host's links for the mounted libraries (``libcuda.so -> libcuda.so.1``), bounded."""
    from nvdocker_setup.driver.links import MAX_LINKS

    found = [link for size in _word_sizes(capabilities) for link in driver.library_links(capabilities, size)]
    return found[:MAX_LINKS]


def common_edits(
    driver: Driver, capabilities: Sequence[str], hook: Optional[HookCommand], rootfs: Optional[str] = None
) -> ContainerEdits:
    """What any GPU container gets for ``capabilities``: control nodes, driver files, the ld hook
    (which also creates the libraries' links, see :meth:`Driver.library_links`)."""
    libraries = _library_mounts(driver, capabilities)
    mounts = list(libraries)
    mounts += [Mount(host, container) for host, container in driver.binaries(capabilities)]
    mounts += [Mount(host, container) for host, container in driver.existing(caps.data_files_for(capabilities))]
    mounts += [Mount(host, container) for host, container in driver.wsl_store_files(capabilities)]
    firmware = driver.firmware() if capabilities else None  # capabilities none: the device nodes only
    if firmware is not None:
        mounts.append(Mount(*firmware))
    for host, container in driver.ipc_paths(capabilities):
        # the MPS pipe directory is shared with the host's MPS daemon and must stay writable
        options = WRITABLE_MOUNT if container == driver.mps_pipe_dir else READ_ONLY_MOUNT
        mounts.append(Mount(host, container, options))
    hooks = []
    if hook is not None and libraries:
        folders = sorted({os.path.dirname(mount.container_path) for mount in libraries})
        # the CUDA forward-compatibility step only matters where the driver's libcuda is mounted
        version = driver.version if caps.COMPUTE in capabilities else None
        hooks.append(hook.ldcache_hook(folders, rootfs, _library_links(driver, capabilities), version))
    return ContainerEdits(device_nodes=driver.control_device_nodes(), mounts=mounts, hooks=hooks)


def request_edits(
    driver: Driver, gpus: Sequence[Gpu], capabilities: Sequence[str], hook: Optional[HookCommand], rootfs: Optional[str] = None
) -> ContainerEdits:
    """Everything a container that asked for ``gpus`` with ``capabilities`` gets."""
    return common_edits(driver, capabilities, hook, rootfs).merged(*(gpu_edits(driver, gpu, capabilities) for gpu in gpus))
