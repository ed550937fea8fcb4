"""A simulated NVIDIA driver root (recipe: /work/shared/TESTING.md, "A simulated NVIDIA driver").

No GPU is attached to the test machines, so the GPU side is tested against a directory laid out
like a host with the driver installed: ``proc/driver/nvidia`` files, real character device nodes
(``mknod``), stub driver libraries that are real ELF shared objects with the driver's SONAMEs (and the
``libcuda.so`` development links a driver install adds),
an ``etc/ld.so.cache`` written by the real ``ldconfig -r``, firmware, the persistenced socket and
an ``usr/bin/nvidia-smi`` script that prints a ``-L`` listing. The code under test reads it
through ``driver-root`` / ``NVDOCKER_DRIVER_ROOT``.
"""

import os
import shutil
import socket
import stat
import subprocess
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

DRIVER_VERSION = "550.54.14"
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
NVIDIA_MAJOR = 195
UVM_MAJOR = 510


#: The unversioned development links a real driver install (NVIDIA's .run installer, or the
#: distributions' packages) puts next to the libraries: ``libcuda.so -> libcuda.so.1``... Apps and
#: CUDA loaders ``dlopen`` these names; the container gets the same links (issue #14, item 2).
DEV_LINKS: Dict[str, str] = {
    "libcuda.so": "libcuda.so.1",
    "libnvidia-ml.so": "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so": "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-encode.so": "libnvidia-encode.so.1",
}


class SimulatedGpu(NamedTuple):
    bus_id: str
    minor: int
    uuid: str
    model: str


DEFAULT_GPUS = (
    SimulatedGpu("0000:3b:00.0", 0, "GPU-4a1c1b6e-3f1d-4c2b-9a51-7d1f0e2c3b40", "NVIDIA A100-SXM4-40GB"),
    SimulatedGpu("0000:86:00.0", 1, "GPU-9e8d7c6b-5a49-4382-8170-6f5e4d3c2b1a", "NVIDIA A100-SXM4-40GB"),
)

#: Library base name -> SONAME; one per capability we test (compute, utility, video, graphics).
LIBRARIES: Dict[str, str] = {
    "libcuda.so": "libcuda.so.1",
    "libnvidia-ptxjitcompiler.so": "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-ml.so": "libnvidia-ml.so.1",
    "libnvidia-encode.so": "libnvidia-encode.so.1",
    "libGLX_nvidia.so": "libGLX_nvidia.so.0",
}

#: Device nodes: container path -> (major, minor), besides one /dev/nvidiaN per GPU.
CONTROL_NODES = {
    "/dev/nvidiactl": (NVIDIA_MAJOR, 255),
    "/dev/nvidia-modeset": (NVIDIA_MAJOR, 254),
    "/dev/nvidia-uvm": (UVM_MAJOR, 0),
    "/dev/nvidia-uvm-tools": (UVM_MAJOR, 1),
}


# -- MIG and IMEX (issue #11, item 4) -------------------------------------------------------------

#: Majors the MIG root's proc/devices lists for the capability and IMEX channel drivers (dynamic on
#: a real host; runc makes the container's nodes from the numbers, so no driver is needed).
CAPS_MAJOR = 235
IMEX_MAJOR = 234
#: The MIG root: GPU 0 (minor 0) in MIG mode with GPU instances 1 and 2, one compute instance (0)
#: each; MIG device index -> (GI, CI) as nvidia-smi -L numbers them.
MIG_INSTANCES = ((1, 0), (2, 0))
MIG_UUIDS = ("MIG-5b3f8d02-6a1c-5e4f-9b8a-0c1d2e3f4a5b", "MIG-7c4e9f13-8b2d-5f60-ac9b-1d2e3f4a5b6c")
IMEX_CHANNELS = (0, 1)


def mig_minor(gpu_minor: int, gi: int, ci: Optional[int] = None) -> int:
    """The driver's numbering of the capability minors (mig-minors): config 1, monitor 2, then per
    GPU 15 GPU instances of (access, 8 compute instances)."""
    base = 3 + gpu_minor * 15 * 9 + gi * 9
    return base if ci is None else base + 1 + ci


def mig_minors_table(gpu_minors: Sequence[int]) -> str:
    lines = ["config 1", "monitor 2"]
    for gpu in gpu_minors:
        for gi in range(15):
            lines.append("gpu{}/gi{}/access {}".format(gpu, gi, mig_minor(gpu, gi)))
            lines.extend("gpu{}/gi{}/ci{}/access {}".format(gpu, gi, ci, mig_minor(gpu, gi, ci)) for ci in range(8))
    return "\n".join(lines) + "\n"


def access_file(minor: int, mode: int = 0o444) -> str:
    return "DeviceFileMinor: {}\nDeviceFileMode: {}\nDeviceFileModify: 1\n".format(minor, mode)


def _mknod(path: str, major: int, minor: int, mode: int = 0o666) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
    os.chmod(path, mode)


def add_mig_and_imex(path: str, gpus: Sequence["SimulatedGpu"]) -> Dict[str, Sequence[str]]:
    """MIG on the first GPU (:data:`MIG_INSTANCES`), the capability files, mig-minors, the cap
    nodes, the MIG UUID map, IMEX channels 0 and 1 and a proc/devices listing every driver.
    Returns, per MIG device name (``0:0``), the container paths of its nodes."""
    proc = os.path.join(path, "proc/driver/nvidia")
    caps = os.path.join(proc, "capabilities")
    gpu = gpus[0]
    _write(os.path.join(caps, "mig/config"), access_file(1, 0o400))
    _write(os.path.join(caps, "mig/monitor"), access_file(2, 0o444))
    _mknod(os.path.join(path, "dev/nvidia-caps/nvidia-cap1"), CAPS_MAJOR, 1, 0o400)
    _mknod(os.path.join(path, "dev/nvidia-caps/nvidia-cap2"), CAPS_MAJOR, 2, 0o444)
    devices: Dict[str, Sequence[str]] = {}
    for index, (gi, ci) in enumerate(MIG_INSTANCES):
        gi_dir = os.path.join(caps, "gpu{}/mig/gi{}".format(gpu.minor, gi))
        _write(os.path.join(gi_dir, "access"), access_file(mig_minor(gpu.minor, gi)))
        _write(os.path.join(gi_dir, "ci{}".format(ci), "access"), access_file(mig_minor(gpu.minor, gi, ci)))
        nodes = []
        for minor in (mig_minor(gpu.minor, gi), mig_minor(gpu.minor, gi, ci)):
            node = "/dev/nvidia-caps/nvidia-cap{}".format(minor)
            if not os.path.exists(os.path.join(path, node.lstrip("/"))):
                _mknod(os.path.join(path, node.lstrip("/")), CAPS_MAJOR, minor, 0o444)
            nodes.append(node)
        devices["{}:{}".format(0, index)] = ["/dev/nvidia{}".format(gpu.minor)] + nodes
    _write(os.path.join(path, "proc/driver/nvidia-caps/mig-minors"), mig_minors_table([g.minor for g in gpus]))
    for channel in IMEX_CHANNELS:
        _mknod(os.path.join(path, "dev/nvidia-caps-imex-channels/channel{}".format(channel)), IMEX_MAJOR, channel)
    _write(os.path.join(path, "proc/devices"),
           "Character devices:\n  1 mem\n{} nvidia\n{} nvidia-uvm\n{} nvidia-caps-imex-channels\n{} nvidia-caps\n\n"
           "Block devices:\n  8 sd\n".format(NVIDIA_MAJOR, UVM_MAJOR, IMEX_MAJOR, CAPS_MAJOR))
    listing = ""
    for number, item in enumerate(gpus):
        listing += "GPU {}: {} (UUID: {})\n".format(number, item.model, item.uuid)
        if item is gpu:
            for index, uuid in enumerate(MIG_UUIDS):
                listing += "  MIG 3g.20gb     Device  {}: (UUID: {})\n".format(index, uuid)
    _write(os.path.join(path, "etc/nvdocker/mig-uuids"), listing)
    return devices


DRM_MAJOR = 226


def drm_names(gpu: "SimulatedGpu") -> Tuple[str, str]:
    """(card, render node) names of ``gpu`` in the DRM root (card0 is the BMC's VGA on a server)."""
    return "card{}".format(gpu.minor + 1), "renderD{}".format(128 + gpu.minor)


def add_drm(path: str, gpus: Sequence["SimulatedGpu"] = DEFAULT_GPUS) -> Dict[str, Tuple[str, str]]:
    """What nvidia-drm and udev give a host (issue #20): per GPU ``dev/dri/card<N>`` (0660) and
    ``renderD<N>`` (0666) with major 226, the ``dev/dri/by-path/pci-<bus>-card|render`` links, a card0
    of another device (the BMC) and ``drm`` in ``proc/devices``. Returns bus id -> (card, render)."""
    dri = os.path.join(path, "dev/dri")
    os.makedirs(os.path.join(dri, "by-path"), exist_ok=True)
    os.chmod(dri, 0o755)
    _mknod(os.path.join(dri, "card0"), DRM_MAJOR, 0, 0o660)  # the BMC's VGA: no NVIDIA GPU
    found = {}
    for gpu in gpus:
        card, render = drm_names(gpu)
        _mknod(os.path.join(dri, card), DRM_MAJOR, gpu.minor + 1, 0o660)
        _mknod(os.path.join(dri, render), DRM_MAJOR, 128 + gpu.minor, 0o666)
        os.symlink("../" + card, os.path.join(dri, "by-path", "pci-{}-card".format(gpu.bus_id)))
        os.symlink("../" + render, os.path.join(dri, "by-path", "pci-{}-render".format(gpu.bus_id)))
        found[gpu.bus_id] = (card, render)
    devices = os.path.join(path, "proc/devices")
    text = open(devices).read() if os.path.exists(devices) else "Character devices:\n  1 mem\n{} nvidia\n{} nvidia-uvm\n\n".format(
        NVIDIA_MAJOR, UVM_MAJOR)
    if " drm\n" not in text:
        text = text.replace("Character devices:\n", "Character devices:\n{} drm\n".format(DRM_MAJOR), 1)
    _write(devices, text)
    return found


class DriverRoot(NamedTuple):
    path: str
    version: str
    gpus: Sequence[SimulatedGpu]
    #: SONAME -> container path of the versioned file it links to.
    libraries: Dict[str, str]
    smi_listing: str
    persistenced_socket: Optional[str]
    #: With ``mig=True``: MIG device name (``0:1``) -> container paths of its device nodes.
    mig_devices: Optional[Dict[str, Sequence[str]]] = None

    def host(self, container_path: str) -> str:
        return os.path.join(self.path, container_path.lstrip("/"))


def information(gpu: SimulatedGpu) -> str:
    return (
        "Model: \t\t {model}\nIRQ:   \t\t 0\nGPU UUID: \t {uuid}\nVideo BIOS: \t 92.00.36.00.02\n"
        "Bus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\n"
        "Bus Location: \t {bus}\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"
    ).format(model=gpu.model, uuid=gpu.uuid, bus=gpu.bus_id, minor=gpu.minor)


def smi_listing(gpus: Sequence[SimulatedGpu]) -> str:
    return "".join("GPU {}: {} (UUID: {})\n".format(i, gpu.model, gpu.uuid) for i, gpu in enumerate(gpus))


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _stub_library(path: str, soname: str) -> None:
    """A real ELF shared object (ldconfig skips anything else) with the driver's SONAME."""
    source = path + ".c"
    _write(source, "int nvdocker_simulated_driver(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname," + soname, "-o", path, source], check=True)
    os.unlink(source)


def _bind_socket(path: str) -> Optional[str]:
    """A unix socket file like nvidia-persistenced's (None when the path is too long for one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if len(path.encode()) >= 108:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
    return path


def add_kernel_side(path: str, gpus: Sequence[SimulatedGpu] = DEFAULT_GPUS, version: str = DRIVER_VERSION) -> None:
    """What the kernel module gives a host, under ``path``: ``proc/driver/nvidia`` (version, one
    ``information`` file per GPU) and the device nodes (``mknod``, 0666, root's)."""
    proc = os.path.join(path, "proc/driver/nvidia")
    _write(
        os.path.join(proc, "version"),
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  {}  Thu Feb 22 01:44:30 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n".format(version),
    )
    for gpu in gpus:
        _write(os.path.join(proc, "gpus", gpu.bus_id, "information"), information(gpu))
    nodes = dict(CONTROL_NODES)
    for gpu in gpus:
        nodes["/dev/nvidia{}".format(gpu.minor)] = (NVIDIA_MAJOR, gpu.minor)
    os.makedirs(os.path.join(path, "dev"), exist_ok=True)
    for node, (major, minor) in nodes.items():
        target = os.path.join(path, node.lstrip("/"))
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(target, 0o666)


def build_driver_root(
    path: str, gpus: Sequence[SimulatedGpu] = DEFAULT_GPUS, version: str = DRIVER_VERSION, with_ldcache: bool = True,
    mig: bool = False,
) -> DriverRoot:
    """Lay out a driver root at ``path`` (root, gcc and ldconfig needed); with ``mig``, also MIG on
    the first GPU and two IMEX channels (:func:`add_mig_and_imex`)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    add_kernel_side(path, gpus, version)
    libraries = {}
    lib_dir = os.path.join(path, LIB_DIR.lstrip("/"))
    os.makedirs(lib_dir, exist_ok=True)
    for base, soname in LIBRARIES.items():
        real_name = "{}.{}".format(base, version)
        _stub_library(os.path.join(lib_dir, real_name), soname)
        os.symlink(real_name, os.path.join(lib_dir, soname))
        libraries[soname] = LIB_DIR + "/" + real_name
    for link, target in DEV_LINKS.items():
        os.symlink(target, os.path.join(lib_dir, link))
    if with_ldcache:
        _write(os.path.join(path, "etc/ld.so.conf"), LIB_DIR + "\n")
        subprocess.run(["ldconfig", "-r", path], check=True, stderr=subprocess.DEVNULL)
    listing = smi_listing(gpus)
    _write(
        os.path.join(path, "usr/bin/nvidia-smi"),
        "#!/bin/sh\n# simulated nvidia-smi\nif [ \"$1\" = -L ]; then\ncat <<'LISTING'\n{}LISTING\nelse\n"
        "echo 'NVIDIA-SMI {v}   Driver Version: {v}   CUDA Version: 12.4'\nfi\n".format(listing, v=version),
        mode=0o755,
    )
    _write(os.path.join(path, "lib/firmware/nvidia", version, "gsp_ga10x.bin"), "simulated GSP firmware\n")
    persistenced = _bind_socket(os.path.join(path, "run/nvidia-persistenced/socket"))
    mig_devices = add_mig_and_imex(path, gpus) if mig else None
    return DriverRoot(path, version, tuple(gpus), libraries, listing, persistenced, mig_devices)


def upgrade_driver_root(root: DriverRoot, version: str) -> DriverRoot:
    """Upgrade the driver of ``root`` in place to ``version``, as a driver package does: the
    kernel module's version file, new versioned libraries with the SONAME links moved onto them
    (each link replaced by a rename) and the old files deleted, the ld cache rewritten,
    nvidia-smi and the firmware folder of the new version."""
    proc = os.path.join(root.path, "proc/driver/nvidia/version")
    with open(proc) as handle:
        text = handle.read()
    _write(proc, text.replace(root.version, version))
    lib_dir = os.path.join(root.path, LIB_DIR.lstrip("/"))
    libraries = {}
    for base, soname in LIBRARIES.items():
        real_name = "{}.{}".format(base, version)
        _stub_library(os.path.join(lib_dir, real_name), soname)
        link = os.path.join(lib_dir, soname)
        os.symlink(real_name, link + ".new")
        os.replace(link + ".new", link)
        os.unlink(os.path.join(lib_dir, "{}.{}".format(base, root.version)))
        libraries[soname] = LIB_DIR + "/" + real_name
    if os.path.exists(os.path.join(root.path, "etc/ld.so.conf")):
        subprocess.run(["ldconfig", "-r", root.path], check=True, stderr=subprocess.DEVNULL)
    smi = os.path.join(root.path, "usr/bin/nvidia-smi")
    with open(smi) as handle:
        script = handle.read()
    _write(smi, script.replace(root.version, version), mode=0o755)
    firmware = os.path.join(root.path, "lib/firmware/nvidia")
    os.rename(os.path.join(firmware, root.version), os.path.join(firmware, version))
    return root._replace(version=version, libraries=libraries)


def missing_tools() -> List[str]:
    """Why a driver root cannot be built here (empty when it can)."""
    why = []
    if os.geteuid() != 0:
        why.append("mknod and ldconfig -r need root")
    for tool in ("gcc", "ldconfig"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            why.append("{} is not installed".format(tool))
    return why


def driver_root_or_skip(path: str, **kwargs) -> DriverRoot:
    """``build_driver_root``, or a skip (a failure under CI=true, where these tests must run)."""
    import pytest

    why = missing_tools()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: cannot build the simulated driver root: " + "; ".join(why))
        pytest.skip("; ".join(why))
    return build_driver_root(path, **kwargs)


_session_roots: Dict[int, DriverRoot] = {}


def simulated_driver_root_fixture(tmp_path_factory) -> DriverRoot:
    """Body of the session fixture the test packages' conftest files declare: built once per
    session however many packages ask (the fixture object is the session's)."""
    key = id(tmp_path_factory)
    if key not in _session_roots:
        _session_roots[key] = driver_root_or_skip(str(tmp_path_factory.mktemp("driver") / "root"))
    return _session_roots[key]


_session_mig_roots: Dict[int, DriverRoot] = {}


def simulated_mig_root_fixture(tmp_path_factory) -> DriverRoot:
    """The same for a root with MIG on GPU 0 and two IMEX channels (``build_driver_root(mig=True)``)."""
    key = id(tmp_path_factory)
    if key not in _session_mig_roots:
        _session_mig_roots[key] = driver_root_or_skip(str(tmp_path_factory.mktemp("mig-driver") / "root"), mig=True)
    return _session_mig_roots[key]


# -- WSL2 ----------------------------------------------------------------------------------------

WSL_LIB_DIR = "/usr/lib/wsl/lib"
#: /dev/dxg is a misc device (major 10) with a dynamic minor; 126 is free on the test machines.
DXG_NODE = (10, 126)
#: The files Windows' driver shares in /usr/lib/wsl/lib -> their SONAME (None: not a library).
#: All regular files, as on a real WSL2 (Windows' folder has no symlinks).
WSL_FILES: Dict[str, Optional[str]] = {
    "libcuda.so.1": "libcuda.so.1",
    "libcuda.so.1.1": "libcuda.so.1",
    "libdxcore.so": "libdxcore.so",
    "libnvidia-ml.so.1": "libnvidia-ml.so.1",
    "nvidia-smi": None,
}


class WslRoot(NamedTuple):
    path: str
    #: (major, minor) of dev/dxg.
    dxg: Sequence[int]
    #: Container paths of the files in usr/lib/wsl/lib.
    files: Sequence[str]
    smi_listing: str

    def host(self, container_path: str) -> str:
        return os.path.join(self.path, container_path.lstrip("/"))


def build_wsl_root(path: str, extra_files: Sequence[str] = ()) -> WslRoot:
    """Lay out a WSL2 driver root at ``path``: ``dev/dxg`` (mknod), stub ELF libraries and a
    simulated nvidia-smi in ``usr/lib/wsl/lib``, no ``proc/driver/nvidia``, no /dev/nvidia* and no
    ld cache (WSL's comes from /etc/ld.so.conf.d/ld.wsl.conf, which discovery does not need).
    ``extra_files`` are more library names (stub ELF files, their own SONAME) in that folder."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    os.makedirs(os.path.join(path, "dev"), exist_ok=True)
    dxg = os.path.join(path, "dev/dxg")
    os.mknod(dxg, stat.S_IFCHR | 0o666, os.makedev(*DXG_NODE))
    os.chmod(dxg, 0o666)
    lib_dir = os.path.join(path, WSL_LIB_DIR.lstrip("/"))
    os.makedirs(lib_dir, exist_ok=True)
    listing = "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6)\n"
    files = dict(WSL_FILES)
    files.update({name: name for name in extra_files})
    for name, soname in files.items():
        if soname is None:
            _write(
                os.path.join(lib_dir, name),
                "#!/bin/sh\n# simulated WSL2 nvidia-smi\nif [ \"$1\" = -L ]; then\ncat <<'LISTING'\n{}LISTING\nelse\n"
                "echo 'NVIDIA-SMI 560.35.02   Driver Version: 560.94   CUDA Version: 12.6'\nfi\n".format(listing),
                mode=0o755,
            )
        else:
            _stub_library(os.path.join(lib_dir, name), soname)
            os.chmod(os.path.join(lib_dir, name), 0o755)
    return WslRoot(path, DXG_NODE, tuple(WSL_LIB_DIR + "/" + name for name in sorted(files)), listing)


def wsl_root_or_skip(path: str, **kwargs) -> WslRoot:
    """``build_wsl_root``, or a skip (a failure under CI=true), as :func:`driver_root_or_skip`."""
    import pytest

    why = missing_tools()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: cannot build the simulated WSL2 driver root: " + "; ".join(why))
        pytest.skip("; ".join(why))
    return build_wsl_root(path, **kwargs)
