"""nvdocker-runtime: an OCI runtime that gives a container the GPUs it asked for, then runs the
real runtime (runc by default).

dockerd's shim calls this for every container operation. ``create`` is the only one we act on:
find the bundle, decide what the spec requests, edit it, write it back atomically, exec the
real runtime with the identical argv. Everything else is exec'd straight away. The C launcher
(``launcher/nvdocker-runtime.c``) does the passthrough without starting Python at all and comes
here only for a ``create`` that may request GPUs; this module also works on its own.

Failures before the exec are written as a JSON line to runc's ``--log`` file (containerd reads
the last error from there, so ``docker run`` shows our message), to our own log and to stderr,
in that order, and the exit status is 1. The message is bounded (values from the container are
cut, see :func:`nvdocker_setup.driver.errors.quoted`) and stderr is written without blocking:
containerd's shim reads our stderr pipe only after we exit, so a write larger than the pipe
buffer would block forever and wedge ``docker run``. Standard library only: this is on the hot
path of every container.
"""

from __future__ import annotations

import os
import sys
import time

from nvdocker_setup.driver.errors import GpuSetupError, shorten
from nvdocker_setup.runtime import args as runtime_args
from nvdocker_setup.runtime import config as runtime_config

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import List, Optional, Sequence, Tuple, Union

    from nvdocker_setup.driver.discovery import Driver
    from nvdocker_setup.driver.model import ContainerEdits
    from nvdocker_setup.runtime.args import RuntimeArgs
    from nvdocker_setup.runtime.config import RuntimeConfig
    from nvdocker_setup.runtime.request import GpuRequest

PROGRAM = "nvdocker-runtime"
#: How the C launcher hands over the real runtime it already resolved (first argument, removed).
REAL_RUNTIME_FLAG = "--nvdocker-real-runtime="
#: The C launcher's own path when it is trusted: it is also our ld cache hook
#: (launcher/ldcache-hook.c, started as "nvdocker-ldcache"), which saves an interpreter start.
NATIVE_HOOK_FLAG = "--nvdocker-hook="
#: The longest error message we write anywhere: far below a pipe buffer (64 KiB, 4 KiB atomic).
MAX_MESSAGE_CHARS = 2000


class Log:
    """Our own log file (``log`` in runtime.conf): errors always, then up to ``log-level``
    (:data:`~nvdocker_setup.runtime.config.LOG_LEVELS`; ``True`` is debug, ``False`` warning)."""

    def __init__(self, path: Optional[str], level: Union[bool, str]) -> None:
        self.path = path
        if isinstance(level, bool):
            level = "debug" if level else runtime_config.DEFAULT_LOG_LEVEL
        self.rank = runtime_config.LOG_LEVELS.index(level)
        self.debug_enabled = bool(path) and level == "debug"
        self.started = time.perf_counter()

    def write(self, level: str, message: str) -> None:
        if not self.path or (level in runtime_config.LOG_LEVELS and runtime_config.LOG_LEVELS.index(level) > self.rank):
            return
        line = "{} {} pid={} +{:.1f}ms {}\n".format(
            _timestamp(), level, os.getpid(), (time.perf_counter() - self.started) * 1000, message
        )
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            pass  # a log we cannot write must not stop containers

    def info(self, message: str) -> None:
        self.write("info", message)

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.write("debug", message)


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".{:06d}Z".format(int(now % 1 * 1e6))


def runc_log_line(message: str, log_format: Optional[str]) -> str:
    """One error line in the format runc writes to ``--log`` (json by default for containerd)."""
    if log_format == "text":
        return 'time="{}" level=error msg="{}"\n'.format(_timestamp(), message.replace("\\", "\\\\").replace('"', '\\"'))
    from nvdocker_setup.runtime import jsonio

    return jsonio.dumps({"level": "error", "msg": message, "time": _timestamp()}) + "\n"


def write_stderr_nonblocking(text: str) -> None:
    """Write ``text`` to fd 2 without ever blocking: O_NONBLOCK for the one write (EAGAIN, a full
    pipe nobody reads yet, loses the message, which is in --log already), then back as it was."""
    data = text.encode("utf-8", "backslashreplace")
    try:
        blocking = os.get_blocking(2)
    except OSError:
        return  # no stderr
    try:
        if blocking:
            os.set_blocking(2, False)
        os.write(2, data)
    except OSError:
        pass
    finally:
        if blocking:
            try:
                os.set_blocking(2, True)
            except OSError:
                pass


def report_error(error: GpuSetupError, parsed: RuntimeArgs, log: Log) -> None:
    message = shorten("{}: {}".format(PROGRAM, error), MAX_MESSAGE_CHARS)
    if parsed.log:  # first: containerd shows what it finds here
        try:
            with open(parsed.log, "a", encoding="utf-8") as handle:
                handle.write(runc_log_line(message, parsed.log_format))
        except OSError:
            pass
    log.write("error", message)
    write_stderr_nonblocking(message + "\n")


def prepare_bundle(parsed: RuntimeArgs, config: RuntimeConfig, log: Log) -> None:
    """Edit the bundle's spec for the GPUs it requests; leave it byte for byte alone otherwise."""
    from nvdocker_setup.runtime import request, spec

    path = spec.spec_path(parsed.bundle or os.getcwd())
    _data, value = spec.read_spec(path)
    notes: List[str] = []
    wanted = request.resolve(value, config.accept_envvar_unprivileged, config.accept_volume_mounts, notes,
                             ignore_imex=config.ignore_imex_channels)
    for note in notes:
        log.debug("create {}: {}".format(parsed.container_id, note))
    if wanted is None:
        log.debug("create {}: no GPU request, spec untouched".format(parsed.container_id))
        return
    request.remove_nvidia_hooks(value, wanted.hook_indexes)
    request.remove_device_list_mounts(value, wanted.mount_indexes)
    if wanted.wants_driver or wanted.imex_channels is not None or wanted.mig_config is not None \
            or wanted.mig_monitor is not None:
        refused: List[str] = []
        edits = edits_for(wanted, config, spec.rootfs_of(os.path.dirname(path), value), refused)
        for item in refused[:32]:  # bounded: one line each, the container still starts without them
            log.write("warning", "create {}: left out {} (a host path must be root's alone; `nvdocker-setup doctor` "
                      "names it too)".format(parsed.container_id, item[:400]))
        _apply_edits(value, edits, config.no_cgroups, not config.no_additional_gids)
        log.info(
            "create {}: {}; {} device nodes, {} mounts, {} hooks".format(
                parsed.container_id, wanted.describe(), len(edits.device_nodes), len(edits.mounts), len(edits.hooks)
            )
        )
    else:
        log.debug("create {}: removed dockerd's --gpus hook or the device-list mounts, no device requested".format(
            parsed.container_id))
    spec.write_atomically(path, spec.encode(value))


def device_node_groups(value: dict, edits: ContainerEdits) -> None:
    """Add to the process's ``additionalGids`` the group of every injected device node that its
    group may open and others may not (``/dev/dri/renderD*``, group render, 0660), as NVIDIA's
    runtime does: a non-root user in the container can then use it. The nodes' numbers come from
    the host's own nodes (root's, trusted); nothing of the image decides them."""
    groups = []
    for node in edits.device_nodes:
        mode = node.file_mode or 0
        if node.gid and mode & 0o060 and not mode & 0o006 and node.gid not in groups:
            groups.append(node.gid)
    process = value.get("process")
    if not groups or not isinstance(process, dict):
        return
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    if not isinstance(user, dict):
        return
    present = user.get("additionalGids")
    present = list(present) if isinstance(present, list) else []
    user["additionalGids"] = present + [gid for gid in groups if gid not in present]


def _apply_edits(value: dict, edits: ContainerEdits, no_cgroups: bool, groups: bool = True) -> None:
    """The edits into the spec; with ``no-cgroups`` (runtime.conf) the device nodes come without their
    ``linux.resources.devices`` rules, which a rootless runtime cannot apply (NVIDIA's no-cgroups);
    unless ``no-additional-gids-for-device-nodes``, the process gets the nodes' groups."""
    from nvdocker_setup.runtime import spec

    if groups:
        device_node_groups(value, edits)

    linux = value.get("linux")
    resources = linux.get("resources") if isinstance(linux, dict) else None
    had_resources = isinstance(linux, dict) and "resources" in linux
    had_rules = isinstance(resources, dict) and "devices" in resources
    rules = resources.get("devices") if isinstance(resources, dict) else None
    kept = len(rules) if isinstance(rules, list) else None
    spec.apply_edits(value, edits)
    if not no_cgroups or not edits.device_nodes:
        return
    resources = value["linux"]["resources"]
    if kept is not None:
        del resources["devices"][kept:]
    elif had_rules:
        resources["devices"] = rules  # null, as it was
    else:
        del resources["devices"]
        if not resources and not had_resources:
            del value["linux"]["resources"]


def edits_for(wanted: GpuRequest, config: RuntimeConfig, rootfs: Optional[str] = None,
              refused: Optional[List[str]] = None) -> ContainerEdits:
    """Discover the driver and turn the request into :class:`ContainerEdits`; the host paths left
    out because they failed the trust check are added to ``refused``."""
    from nvdocker_setup.driver.discovery import discover
    from nvdocker_setup.driver.model import ContainerEdits

    driver = discover(config.driver_root, config.mps_pipe_dir)
    edits = ContainerEdits()
    if wanted.wants_driver:
        edits = _device_edits(wanted, config, driver, rootfs)
    extra = []
    if wanted.mig_config is not None:
        extra.append(driver.mig.access_edits("config", wanted.mig_config))
    if wanted.mig_monitor is not None:
        extra.append(driver.mig.access_edits("monitor", wanted.mig_monitor))
    if wanted.imex_channels is not None:
        extra.append(driver.mig.imex_edits(wanted.imex_channels))
    if wanted.wants_driver:
        extra += _gated_edits(wanted, driver)
    if refused is not None:
        refused.extend(driver.refused)
    return edits.merged(*extra)


def _gated_edits(wanted: GpuRequest, driver: Driver) -> List[ContainerEdits]:
    """NVIDIA's opt-in devices (GDS, MOFED, NVSwitch, GDRCopy) the image enabled, for a GPU request."""
    from nvdocker_setup.driver.discovery import GATED_DEVICES
    from nvdocker_setup.driver.model import ContainerEdits

    return [ContainerEdits(device_nodes=driver.gated_device_nodes(feature))
            for feature in GATED_DEVICES if wanted.env.get(feature, "").strip().lower() == "enabled"]


def _check_requirements(wanted: GpuRequest, driver: Driver) -> None:
    """NVIDIA_REQUIRE_* (imported only for an image that sets one)."""
    from nvdocker_setup.driver import requirements

    if not requirements.disabled(wanted.env) and requirements.requirement_values(wanted.env):
        requirements.check(wanted.env, requirements.Facts(driver.version, driver.cuda_version, _models(driver, wanted)))


def _device_edits(wanted: GpuRequest, config: RuntimeConfig, driver: Driver, rootfs: Optional[str]) -> ContainerEdits:
    from nvdocker_setup.driver.edits import common_edits, drm_links, gpu_edits
    from nvdocker_setup.driver.model import ContainerEdits
    from nvdocker_setup.runtime.request import DRIVER_CAPABILITIES, VISIBLE_DEVICES

    capabilities = config.driver_capabilities(wanted.env.get(DRIVER_CAPABILITIES))
    if wanted.all_devices:
        if not driver.gpus:
            raise GpuSetupError(
                "{}=all but no NVIDIA GPU was found under {}".format(VISIBLE_DEVICES, driver.proc_root),
                hint="check nvidia-smi -L on the host",
            )
        # as NVIDIA's all: every GPU and every MIG device (the MIG module only where a GPU has MIG on)
        gpus = list(driver.gpus)
        devices = [driver.mig.edits(device) for device in driver.mig.devices()] if driver.may_have_mig() else []
    else:
        from nvdocker_setup.driver.mig import is_mig_selector

        gpus, devices = [], []
        for selector in wanted.devices:
            if is_mig_selector(selector):
                devices.append(driver.mig.edits(driver.mig.find(selector)))
            else:
                gpus.append(driver.find_gpu(selector))
    if not config.disable_require and any(name.startswith("NVIDIA_REQUIRE_") for name in wanted.env):
        _check_requirements(wanted, driver)
    hook = config.hook_command()
    per_gpu = [gpu_edits(driver, gpu, capabilities) for gpu in gpus]
    # every GPU's /dev/dri/by-path links in one hook run
    links = [link for gpu, edits in zip(gpus, per_gpu)
             for link in drm_links(gpu, [node for node in edits.device_nodes if node.path.startswith("/dev/dri/")])]
    if links:
        per_gpu.append(ContainerEdits(hooks=[hook.dri_link_hook(links, rootfs)]))
    return common_edits(driver, capabilities, hook, rootfs).merged(*(per_gpu + devices))


def _models(driver: Driver, wanted: GpuRequest) -> List[Tuple[str, Optional[str]]]:
    """(brand, arch) of each GPU the request gets (a MIG device counts as its parent GPU)."""
    from nvdocker_setup.driver.gpu_models import arch_of, brand_of
    from nvdocker_setup.driver.mig import is_mig_selector

    if wanted.all_devices:
        gpus = list(driver.gpus)
    else:
        gpus = []
        for selector in wanted.devices:
            gpus.append(driver.mig.find(selector).gpu if is_mig_selector(selector) else driver.find_gpu(selector))
    return [(brand_of(gpu.model), arch_of(gpu.model)) for gpu in gpus]


def exec_runtime(real_runtime: str, argv: Sequence[str]) -> None:
    """Replace this process with the real runtime: its exit status and signals are the caller's."""
    try:
        os.execv(real_runtime, [real_runtime] + list(argv))
    except OSError as exc:
        raise GpuSetupError("cannot execute {}: {}".format(real_runtime, exc.strerror or exc)) from None


def main(argv: Optional[List[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    real_runtime = native_hook = None
    if arguments and arguments[0].startswith(REAL_RUNTIME_FLAG):
        real_runtime = arguments.pop(0)[len(REAL_RUNTIME_FLAG):]
    if arguments and arguments[0].startswith(NATIVE_HOOK_FLAG):
        native_hook = arguments.pop(0)[len(NATIVE_HOOK_FLAG):] or None
    parsed = runtime_args.parse(arguments)
    log = Log(None, False)
    try:
        try:
            config = runtime_config.load(os.environ)
        except GpuSetupError:
            if parsed.is_create:
                raise
            config = runtime_config.RuntimeConfig()  # never block delete/kill over a config typo
        log = Log(config.log, config.log_level)
        config.native_hook = native_hook
        if real_runtime is None:
            real_runtime = runtime_config.find_real_runtime(config, os.environ, exclude=[sys.argv[0]])
        if parsed.is_create:
            prepare_bundle(parsed, config, log)
        exec_runtime(real_runtime, arguments)
    except GpuSetupError as error:
        report_error(error, parsed, log)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug, or input we did not foresee: never a traceback
        if os.environ.get("NVDOCKER_DEBUG") == "1":
            raise
        report_error(GpuSetupError(
            "internal error: {}: {}".format(type(exc).__name__, shorten(str(exc), 300)),
            hint="set NVDOCKER_DEBUG=1 in dockerd's environment for a traceback, and report it",
        ), parsed, log)
        return 1
    return 0  # not reached: exec_runtime replaced the process
