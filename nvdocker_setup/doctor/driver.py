"""Checks of the NVIDIA driver under the driver root, on top of :mod:`nvdocker_setup.driver`
(the discovery the runtime and ``cdi generate`` use): kernel module, GPUs, device nodes, ld cache
libraries, nvidia-smi and the ``/dev/char`` links systemd's device rules need.

On WSL2 (``Driver.wsl``: ``/dev/dxg`` and ``/usr/lib/wsl/lib``, no kernel module of NVIDIA's) the
checks look at what a WSL2 container gets instead, and those that cannot apply are skipped with
the reason."""

import os
import subprocess
from typing import Dict, List, Optional, Tuple

from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import Facts

GROUP = "driver"
#: The nvidia character major is fixed (it is registered with that number); nvidia-uvm's is dynamic.
NVIDIA_MAJOR = 195
CTL_MINOR = 255
#: Libraries libnvidia-container and CUDA programs load by SONAME.
REQUIRED_LIBRARIES = ("libcuda.so.1", "libnvidia-ml.so.1")
#: On WSL2, in /usr/lib/wsl/lib: both load libdxcore, WSL2's way to the Windows driver.
WSL_REQUIRED = ("libcuda.so.1", "libnvidia-ml.so.1", "libdxcore.so")
WSL_LIB_DIR = "/usr/lib/wsl/lib"
NODES_HINT = ("create them: `nvidia-modprobe -u -c=0` (or `nvidia-ctk system create-device-nodes --control-devices "
              "--load-kernel-modules`); to have them before dockerd starts containers at boot, enable "
              "nvidia-persistenced")


@check("driver-kernel-module", GROUP, "NVIDIA kernel module loaded")
def driver_kernel_module(facts: Facts):
    from nvdocker_setup.driver import GpuSetupError

    try:
        driver = facts.driver()
    except GpuSetupError as error:
        return fail(error.message, error.hint or "install and load the NVIDIA driver (`modprobe nvidia`)",
                    driver_root=facts.driver_root)
    if driver.wsl:
        return _wsl_driver(driver)
    try:
        cuda: Optional[str] = driver.cuda_version
    except Exception:  # an unknown version format: the driver version alone still helps
        cuda = None
    supports = " (CUDA up to {})".format(cuda) if cuda else ""
    return ok("NVIDIA kernel module {} loaded{}; images that require a newer CUDA fail with \"unsatisfied "
              "condition: cuda>=...\"".format(driver.version, supports), version=driver.version, cuda=cuda)


def _wsl_node(driver) -> str:
    node = driver.device_node(driver.gpus[0].device_path)
    return "{} {}:{}".format(node.path, node.major, node.minor) if node is not None else driver.gpus[0].device_path


def _wsl_driver(driver):
    if driver.version_known:
        version = "driver {} (CUDA up to {})".format(driver.version, driver.cuda_version)
    else:
        version = ("driver version unknown (no library in {} is named after it): NVIDIA_REQUIRE_* checks are "
                   "skipped".format(WSL_LIB_DIR))
    return ok("WSL2 driver ({}, libraries in {}): no NVIDIA kernel module in the guest, the Windows driver serves "
              "the GPUs; {}".format(_wsl_node(driver), WSL_LIB_DIR, version),
              wsl=True, version=driver.version if driver.version_known else None,
              cuda=driver.cuda_version if driver.version_known else None)


@check("driver-gpus", GROUP, "GPUs listed by the driver")
def driver_gpus(facts: Facts):
    driver = facts.require_driver()
    if driver.wsl:
        return ok("WSL2 driver ({}): every GPU of the Windows host, through the one node; containers ask for "
                  "all (or 0), nvidia-smi -L lists the GPUs".format(_wsl_node(driver)), wsl=True)
    where = os.path.join(driver.proc_root, "gpus")
    if not driver.gpus:
        return fail(
            "the driver is loaded but lists no GPU in {}".format(where),
            "check `lspci | grep -i nvidia` and `dmesg | grep NVRM`: the GPU may have fallen off the bus or be excluded",
        )
    return ok("{} GPU{}: {}".format(len(driver.gpus), "" if len(driver.gpus) == 1 else "s", driver.describe_gpus()),
              gpus=[{"index": gpu.index, "minor": gpu.minor, "uuid": gpu.uuid, "model": gpu.model} for gpu in driver.gpus])


def proc_devices(facts: Facts, driver) -> Dict[str, int]:
    """``/proc/devices`` character majors by name (the driver root's copy first, like discovery)."""
    from nvdocker_setup.driver.devices import read_proc_devices

    return read_proc_devices(driver.root, facts.ctx.host_path("/proc/devices"))[1]


def expected_nodes(facts: Facts, driver) -> List[Tuple[str, Optional[int], int, bool]]:
    """(path, major or None when unknown, minor, required) of every node the GPUs need."""
    majors = proc_devices(facts, driver)
    nvidia = majors.get("nvidia-frontend", majors.get("nvidia", NVIDIA_MAJOR))
    uvm = majors.get("nvidia-uvm")
    nodes: List[Tuple[str, Optional[int], int, bool]] = [("/dev/nvidiactl", nvidia, CTL_MINOR, True)]
    nodes.extend((gpu.device_path, nvidia, gpu.minor, True) for gpu in driver.gpus)
    nodes.append(("/dev/nvidia-uvm", uvm, 0, True))
    nodes.append(("/dev/nvidia-uvm-tools", uvm, 1, False))
    return nodes


@check("driver-device-nodes", GROUP, "GPU device nodes exist with the right numbers")
def driver_device_nodes(facts: Facts):
    driver = facts.require_driver()
    if driver.wsl:  # discovery found /dev/dxg a character device: there is nothing else to have
        return ok("WSL2 driver: {} under {} (no /dev/nvidia* nodes on WSL2)".format(_wsl_node(driver), driver.dev_root))
    missing: List[str] = []
    wrong: List[str] = []
    optional: List[str] = []
    present: List[str] = []
    for path, major, minor, required in expected_nodes(facts, driver):
        node = driver.device_node(path)
        if node is None:
            (missing if required else optional).append(path)
            continue
        if (major is not None and node.major != major) or node.minor != minor:
            wrong.append("{} is {}:{}, expected {}:{}".format(path, node.major, node.minor,
                                                              major if major is not None else "*", minor))
            continue
        present.append("{} {}:{}".format(path, node.major, node.minor))
    where = driver.dev_root
    if missing or wrong:
        problems = []
        if missing:
            problems.append("missing under {}: {}".format(where, ", ".join(missing)))
        problems.extend(wrong)
        return fail(
            "; ".join(problems) + " (containers fail with \"error gathering device information\" or \"no such file\")",
            NODES_HINT if missing else "remove the wrong nodes and recreate them: `rm {}` then `nvidia-modprobe -u -c=0`".format(
                " ".join(item.split()[0] for item in wrong)),
            missing=missing, wrong=wrong,
        )
    if optional:
        return warn("{} missing under {} (containers that ask for it fail with \"no such file\")".format(
            ", ".join(optional), where), NODES_HINT, missing=optional)
    return ok("{} under {}".format(", ".join(present), where))


def _library_version(driver, name: str) -> Tuple[Optional[str], Optional[str]]:
    """(container path of the versioned file, its version) for a SONAME in the ld cache."""
    for entry in driver.cache_entries():
        if entry.name != name or entry.word_size != 64:
            continue
        located = driver.locate_library(entry.path)
        if located is None:
            return entry.path, None
        base = os.path.basename(located[1])
        stem = name.rsplit(".so.", 1)[0] + ".so."
        version = base[len(stem):] if base.startswith(stem) else None
        return located[1], version
    return None, None


@check("driver-libraries", GROUP, "driver libraries in the ld cache match the kernel module")
def driver_libraries(facts: Facts):
    from nvdocker_setup.driver import GpuSetupError

    driver = facts.require_driver()
    if driver.wsl:
        return _wsl_libraries(driver)
    try:
        driver.cache_entries()
    except GpuSetupError as error:
        return fail("{}: \"load library failed: libnvidia-ml.so.1\"".format(error.message),
                    error.hint or "run ldconfig")
    missing: List[str] = []
    mismatched: List[str] = []
    found: List[str] = []
    for name in REQUIRED_LIBRARIES:
        path, version = _library_version(driver, name)
        if path is None:
            missing.append(name)
        elif version is None:
            missing.append("{} (the cache names {}, which does not exist)".format(name, path))
        elif version != driver.version:
            mismatched.append("{} is {} ({})".format(name, version, path))
        else:
            found.append("{} -> {}".format(name, path))
    if missing:
        return fail(
            "not in {}: {} (\"load library failed: libnvidia-ml.so.1\")".format(driver.ld_cache_path, ", ".join(missing)),
            "install the driver's user-space libraries (e.g. libnvidia-compute-<branch>, libnvidia-ml) and run `ldconfig`",
            missing=missing,
        )
    if mismatched:
        return fail(
            "{} but the kernel module is {}: \"Failed to initialize NVML: Driver/library version mismatch\"".format(
                "; ".join(mismatched), driver.version),
            "reboot so that the kernel module of the installed libraries loads, or reinstall the driver of the running "
            "module ({})".format(driver.version),
            mismatched=mismatched,
        )
    return ok("{} (version {}, as the kernel module)".format("; ".join(found), driver.version))


def _wsl_libraries(driver):
    """WSL2: the files containers get are those in /usr/lib/wsl/lib (no ld cache is read)."""
    present = {container.rpartition("/")[2] for _host, container in driver.wsl_files()}
    missing = [name for name in WSL_REQUIRED if name not in present]
    if missing:
        return fail("WSL2 driver without {} in {} under {} (\"load library failed: libnvidia-ml.so.1\", \"CUDA driver "
                    "version is insufficient\")".format(", ".join(missing), WSL_LIB_DIR, driver.root),
                    "update the NVIDIA driver on Windows (its installer fills {}), then `wsl --shutdown`".format(WSL_LIB_DIR),
                    missing=missing)
    return ok("WSL2 driver: {} in {} (containers get them read-only there; the ld cache check of a native driver "
              "does not apply)".format(", ".join(WSL_REQUIRED), WSL_LIB_DIR))


@check("driver-nvidia-smi", GROUP, "nvidia-smi lists the GPUs")
def driver_nvidia_smi(facts: Facts):
    from nvdocker_setup.driver.capabilities import BINARY_DIRS

    driver = facts.require_driver()
    located = driver.locate(WSL_LIB_DIR + "/nvidia-smi") if driver.wsl else None
    for directory in () if driver.wsl else BINARY_DIRS:
        located = driver.locate(directory + "/nvidia-smi")
        if located is not None:
            break
    if located is None:
        return fail("nvidia-smi is not in {} under {}".format(WSL_LIB_DIR if driver.wsl else ", ".join(BINARY_DIRS), driver.root),
                    "install the driver utilities (e.g. nvidia-utils-<branch>)")
    host_path, shown = located
    if not os.access(host_path, os.X_OK):
        return fail("{} is not executable".format(shown), "chmod 755 {}".format(shown))
    result = None
    try:
        result = facts.ctx.run([host_path, "-L"], timeout=facts.options.command_timeout, env=dict(facts.ctx.env))
    except (OSError, subprocess.SubprocessError) as exc:
        error = str(exc)
    else:
        first = (result.stderr or result.stdout or "").strip().splitlines()[:1]
        error = first[0] if first else "exit status {}".format(result.returncode)
    if result is None or result.returncode != 0:
        report = warn if driver.root != "/" else fail
        return report("{} -L failed: {}".format(shown, error),
                      "run `nvidia-smi` on the host: a failure there is a driver problem (reinstall or reboot)")
    listed = [line for line in result.stdout.splitlines() if line.startswith("GPU ")]
    if driver.wsl:  # one /dev/dxg serves them all: there is no count of the kernel's to compare with
        return ok("{} -L lists {} GPU(s) (WSL2)".format(shown, len(listed)))
    if len(listed) != len(driver.gpus):
        return warn("{} -L lists {} GPU(s), the kernel driver {}".format(shown, len(listed), len(driver.gpus)),
                    "compare `nvidia-smi -L` with /proc/driver/nvidia/gpus; a GPU may be in a bad state (`nvidia-smi -q`)")
    return ok("{} -L lists {} GPU(s)".format(shown, len(listed)))


@check("driver-host-paths", GROUP, "what GPU containers get from the host is root's alone")
def driver_host_paths(facts: Facts):
    """Every host path a container would get (libraries, binaries, data files, firmware, the daemons'
    sockets, the MPS pipe directory) is reached through root's directories and symlinks only and is
    not writable by others: what fails is left out by the runtime and by ``cdi generate``, named here."""
    from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
    from nvdocker_setup.driver.edits import common_edits
    from nvdocker_setup.driver.errors import GpuSetupError

    driver = facts.require_driver()
    try:
        edits = common_edits(driver, ALL_CAPABILITIES, None)
    except GpuSetupError as error:
        raise SkipCheck("the driver's files cannot be listed: {}".format(error.message)) from None
    if driver.refused:
        shown = driver.refused[:8]
        more = len(driver.refused) - len(shown)
        return fail("left out of every GPU container: {}{}".format("; ".join(shown), " (and {} more)".format(more) if more else ""),
                    "make each of them root's and not writable by others (`chown root:root`, `chmod go-w`), or remove "
                    "what a user planted there (a user's /tmp/nvidia-mps: stop that user's MPS daemon and remove it); "
                    "the MPS pipe directory also needs a nosuid,nodev mount (`mount --bind DIR DIR && mount -o "
                    "remount,bind,nosuid,nodev DIR`)",
                    refused=list(driver.refused))
    return ok("{} host paths, each reached through root's directories and links only".format(len(edits.mounts)))


def _root_option(driver) -> str:
    """`` --driver-root DIR`` when the nodes doctor read are under a driver root other than ``/``."""
    if driver.root in ("", "/") or os.path.normpath(driver.dev_root) != os.path.join(os.path.normpath(driver.root), "dev"):
        return ""
    return " --driver-root " + driver.root


def _cgroupfs_option(facts: Facts) -> str:
    if facts.engine_name == "containerd":
        return "the cgroupfs driver (SystemdCgroup = false on every handler, and the kubelet's cgroupDriver: cgroupfs)"
    return "set \"exec-opts\": [\"native.cgroupdriver=cgroupfs\"]"


@check("driver-dev-char-links", GROUP, "/dev/char links for the NVIDIA nodes (systemd cgroup driver)")
def driver_dev_char_links(facts: Facts):
    driver = facts.require_driver()
    if driver.wsl:
        return skip("WSL2 driver: the NVIDIA /dev/char links are for /dev/nvidia* nodes, which WSL2 does not have")
    cgroup_driver, source = facts.cgroup_driver()
    if cgroup_driver != "systemd":
        return skip("cgroup driver is {} ({}): systemd does not re-apply device rules".format(cgroup_driver, source))
    missing: List[str] = []
    linked = 0
    for path, _major, _minor, _required in expected_nodes(facts, driver):
        node = driver.device_node(path)
        if node is None:
            continue
        link = os.path.join(driver.dev_root, "char", "{}:{}".format(node.major, node.minor))
        try:
            same = os.path.samefile(link, node.host_path)
        except OSError:
            same = False
        if not same:
            missing.append("/dev/char/{}:{} -> {}".format(node.major, node.minor, path))
        else:
            linked += 1
    if missing:
        return fail(
            "cgroup driver systemd ({}) and missing {}: after `systemctl daemon-reload` running GPU containers lose "
            "their devices (\"Failed to initialize NVML: Unknown Error\")".format(source, ", ".join(missing)),
            "`nvdocker-setup system create-dev-char-symlinks{}` (the package's udev rule 71-nvdocker-dev-char.rules "
            "makes them again whenever the driver loads); or {}; or use CDI devices".format(
                _root_option(driver), _cgroupfs_option(facts)),
            missing=missing,
        )
    if linked == 0:
        raise SkipCheck("no NVIDIA device node to link (see driver-device-nodes)")
    return ok("cgroup driver systemd; /dev/char links exist for all {} NVIDIA nodes".format(linked))
