"""Driver capabilities (``NVIDIA_DRIVER_CAPABILITIES``) and the driver files each one brings.

The lists follow what NVIDIA's libnvidia-container injects for each capability, so an image that
works with NVIDIA's runtime finds the same libraries with ours. Names are SONAME prefixes, matched
against the ld cache (``libcuda.so`` matches ``libcuda.so.1``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Dict, Iterable, Optional, Tuple

from nvdocker_setup.driver.errors import GpuSetupError, quoted  # noqa: E402 - after the TYPE_CHECKING guard

COMPUTE = "compute"
COMPAT32 = "compat32"
GRAPHICS = "graphics"
UTILITY = "utility"
VIDEO = "video"
DISPLAY = "display"
NGX = "ngx"

#: Every capability, in the order the CDI spec and messages list them.
ALL_CAPABILITIES: Tuple[str, ...] = (COMPUTE, COMPAT32, DISPLAY, GRAPHICS, NGX, UTILITY, VIDEO)
#: What an image gets when it does not say (NVIDIA's default too).
DEFAULT_CAPABILITIES: Tuple[str, ...] = (UTILITY, COMPUTE)

LIBRARIES: Dict[str, Tuple[str, ...]] = {
    UTILITY: ("libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so"),
    COMPUTE: (
        "libcuda.so",
        "libcudadebugger.so",
        "libnvidia-opencl.so",
        "libnvidia-gpucomp.so",
        "libnvidia-ptxjitcompiler.so",
        "libnvidia-fatbinaryloader.so",
        "libnvidia-allocator.so",
        "libnvidia-compiler.so",
        "libnvidia-pkcs11.so",
        "libnvidia-pkcs11-openssl3.so",
        "libnvidia-nvvm.so",
        "libnvidia-tileiras.so",  # CUDA 13's tile IR compiler (580+ drivers)
    ),
    VIDEO: ("libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so", "libnvcuvid.so"),
    GRAPHICS: (
        "libnvidia-eglcore.so",
        "libnvidia-glcore.so",
        "libnvidia-tls.so",
        "libnvidia-glsi.so",
        "libnvidia-fbc.so",
        "libnvidia-ifr.so",
        "libnvidia-rtcore.so",
        "libnvoptix.so",
        "libGLX_nvidia.so",
        "libEGL_nvidia.so",
        "libGLESv2_nvidia.so",
        "libGLESv1_CM_nvidia.so",
        "libnvidia-glvkspirv.so",
        "libnvidia-cbl.so",
        "libnvidia-egl-gbm.so",
        "libnvidia-egl-wayland.so",
        "libnvidia-vulkan-producer.so",
        "libnvidia-present.so",
    ),
    DISPLAY: (),
    NGX: ("libnvidia-ngx.so",),
    COMPAT32: (),
}

#: Executables, searched in the driver root's bin directories and mounted at the same path.
BINARIES: Dict[str, Tuple[str, ...]] = {
    UTILITY: ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nv-fabricmanager", "nvidia-imex", "nvidia-imex-ctl"),
    COMPUTE: ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server"),
}

#: Non-library files that come with a capability when the driver installed them, at the paths the
#: distributions and NVIDIA's installer use (Debian, Ubuntu, RHEL's ``.x86_64`` names, the .run layout).
DATA_FILES: Dict[str, Tuple[str, ...]] = {
    COMPUTE: (
        # the OpenCL ICD loader finds the driver through it (NVIDIA's CDI gives it with compute)
        "/etc/OpenCL/vendors/nvidia.icd",
    ),
    GRAPHICS: (
        "/etc/vulkan/icd.d/nvidia_icd.json",
        "/etc/vulkan/icd.d/nvidia_icd.x86_64.json",
        "/etc/vulkan/implicit_layer.d/nvidia_layers.json",
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
        "/usr/share/vulkan/icd.d/nvidia_icd.x86_64.json",
        "/usr/share/vulkan/implicit_layer.d/nvidia_layers.json",
        "/usr/share/glvnd/egl_vendor.d/10_nvidia.json",
        "/usr/share/egl/egl_external_platform.d/10_nvidia_wayland.json",
        "/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xcb.json",
        "/usr/share/egl/egl_external_platform.d/20_nvidia_xlib.json",
        "/usr/share/nvidia/nvoptix.bin",
        # GBM's backend for the driver (Debian: an alternatives link in the multiarch gbm/ dir)
        "/usr/lib/x86_64-linux-gnu/gbm/nvidia-drm_gbm.so",
        "/usr/lib64/gbm/nvidia-drm_gbm.so",
    ),
    VIDEO: (
        # VDPAU's loader opens the driver's backend by path in its own directory, not through ld.so
        "/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1",
        "/usr/lib64/vdpau/libvdpau_nvidia.so.1",
    ),
    DISPLAY: (
        "/usr/lib/xorg/modules/drivers/nvidia_drv.so",
        "/usr/lib/xorg/modules/extensions/libglxserver_nvidia.so",
        "/usr/lib64/xorg/modules/drivers/nvidia_drv.so",  # RHEL
        "/usr/lib64/xorg/modules/extensions/libglxserver_nvidia.so",
        "/usr/lib/nvidia/nvidia_drv.so",  # Debian's alternatives
        "/usr/lib/nvidia/libglxserver_nvidia.so",
        "/usr/share/X11/xorg.conf.d/10-nvidia.conf",
        "/usr/share/X11/xorg.conf.d/nvidia-drm-outputclass.conf",
    ),
}

#: Where the driver's daemons listen; mounted when present so that nvidia-smi and MPS clients reach them.
IPC_PATHS: Dict[str, Tuple[str, ...]] = {
    UTILITY: ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket"),
    COMPUTE: ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket"),
}
#: The MPS control daemon's default pipe directory (``CUDA_MPS_PIPE_DIRECTORY`` unset): mounted,
#: writable, into ``compute`` containers when root owns it (see ``Driver.ipc_paths``). An admin who
#: runs MPS elsewhere says so with ``mps-pipe-directory`` in runtime.conf or CUDA_MPS_PIPE_DIRECTORY
#: in the engine's environment.
MPS_PIPE_DIR = "/tmp/nvidia-mps"

#: A library of the driver that none of the lists above names (a newer driver's, such as 580's
#: ``libnvidia-tileiras`` was): a ``lib*.so.<driver version>`` file in a directory that holds a
#: library of the lists. It comes with this capability (most new driver libraries are CUDA's), so
#: that a driver upgrade never silently leaves a library out; NVIDIA's CDI mounts them all too.
UNLISTED_LIBRARIES_CAPABILITY = COMPUTE

BINARY_DIRS: Tuple[str, ...] = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin")


def parse_capabilities(value: Optional[str]) -> Tuple[str, ...]:
    """``NVIDIA_DRIVER_CAPABILITIES`` as a sorted tuple; unset or empty means the default, ``none``
    no capability at all (the GPUs' device nodes only).

    An unknown name is refused rather than ignored, so a typo does not silently start a container
    without the libraries it needs.
    """
    if value is None or not value.strip():
        return tuple(sorted(DEFAULT_CAPABILITIES))
    names = [item.strip().lower() for item in value.split(",") if item.strip()]
    if "all" in names:
        return ALL_CAPABILITIES
    if names == ["none"]:  # NVIDIA's: the device nodes only, no driver file
        return ()
    unknown = [name for name in names if name not in ALL_CAPABILITIES]
    if unknown:
        raise GpuSetupError(
            "unknown driver capability {} in NVIDIA_DRIVER_CAPABILITIES={}".format(
                ", ".join(quoted(n, 60) for n in unknown[:5]) + (", ..." if len(unknown) > 5 else ""), quoted(value)),
            hint="use a comma list of {} or all".format(", ".join(ALL_CAPABILITIES)),
        )
    return tuple(sorted(set(names)))


def _collect(table: Dict[str, Tuple[str, ...]], capabilities: Iterable[str]) -> Tuple[str, ...]:
    seen: Dict[str, None] = {}
    for capability in capabilities:
        for item in table.get(capability, ()):
            seen.setdefault(item, None)
    return tuple(seen)


def libraries_for(capabilities: Iterable[str]) -> Tuple[str, ...]:
    return _collect(LIBRARIES, capabilities)


def binaries_for(capabilities: Iterable[str]) -> Tuple[str, ...]:
    return _collect(BINARIES, capabilities)


def data_files_for(capabilities: Iterable[str]) -> Tuple[str, ...]:
    return _collect(DATA_FILES, capabilities)


def ipc_paths_for(capabilities: Iterable[str]) -> Tuple[str, ...]:
    return _collect(IPC_PATHS, capabilities)
