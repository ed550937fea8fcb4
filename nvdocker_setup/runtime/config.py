"""The runtime's settings: ``/etc/nvdocker/runtime.conf``, an INI file any Python 3.9 can read
and the C launcher can scan for ``runtimes`` in a few lines.

::

    [runtime]
    # real OCI runtimes, first found wins (names on PATH or absolute paths)
    runtimes = runc crun
    # where the driver lives, like NVIDIA's `root` (a driver container: /run/nvidia/driver)
    driver-root = /
    # our own log (errors always; decisions too with debug = true); empty: none
    log = /var/log/nvdocker-runtime.log
    debug = false
    # our hook for the ld cache (default: the C launcher itself when it started the create step
    # and root alone could replace it, else this Python running nvdocker_setup/hook)
    hook-path =
    # the host's ldconfig the hook runs against the container root
    ldconfig = /sbin/ldconfig
    # request policy (NVIDIA's accept-nvidia-visible-devices-envvar-when-unprivileged and
    # accept-nvidia-visible-devices-as-volume-mounts): false ignores NVIDIA_VISIBLE_DEVICES in a
    # container without CAP_SYS_ADMIN (unless dockerd's --gpus hook set it)
    accept-envvar-when-unprivileged = true
    # true: devices come from /dev/null mounts at /var/run/nvidia-container-devices/<device>
    # (Kubernetes device plugin, DEVICE_LIST_STRATEGY=volume-mounts); the variable is then ignored
    accept-device-list-as-volume-mounts = false
    # the MPS control daemon's pipe directory (its CUDA_MPS_PIPE_DIRECTORY), given writable to
    # compute containers when root owns it; CUDA_MPS_PIPE_DIRECTORY in the engine's environment
    # overrides it; default /tmp/nvidia-mps
    mps-pipe-directory =
    # true: no NVIDIA_REQUIRE_* check for any container (NVIDIA's disable-require; one image can
    # set NVIDIA_DISABLE_REQUIRE=true instead)
    disable-require = false
    # what our log gets: error, warning, info (a line for each GPU container) or debug (every
    # decision); unset: debug with debug = true, else warning
    log-level =
    # true: device nodes without linux.resources.devices cgroup rules (rootless runtimes cannot set
    # them; NVIDIA's nvidia-container-cli.no-cgroups)
    no-cgroups = false
    # the driver capabilities containers may ask for (a comma list, or all); a request for another
    # is refused, and NVIDIA_DRIVER_CAPABILITIES=all means these
    supported-driver-capabilities = all
    # true: NVIDIA_IMEX_CHANNELS and the IMEX device-list mounts are ignored (NVIDIA's
    # features.ignore-imex-channel-requests)
    ignore-imex-channel-requests = false
    # true: the container's process does not get the groups of the device nodes it is given (by
    # default it does, as with NVIDIA's runtime, so that a non-root user can open /dev/dri/renderD*)
    no-additional-gids-for-device-nodes = false

Format, shared with ``launcher/nvdocker-runtime.c``: ``[section]`` lines, ``key = value`` or
``key: value``, ``#``/``;`` comment lines, indented lines continue the previous value. Keys
before any section belong to ``[runtime]``. A missing default file means defaults; a file named
by ``NVDOCKER_RUNTIME_CONFIG`` must exist. ``NVDOCKER_DRIVER_ROOT`` overrides ``driver-root``:
dockerd's environment reaches the runtime, which is how a test points a private dockerd at a
simulated driver.
"""

from __future__ import annotations

import os
import stat
import sys

from nvdocker_setup.driver.errors import GpuSetupError, quoted

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

    from nvdocker_setup.driver.edits import HookCommand

DEFAULT_CONFIG_PATH = "/etc/nvdocker/runtime.conf"
CONFIG_ENV = "NVDOCKER_RUNTIME_CONFIG"
DRIVER_ROOT_ENV = "NVDOCKER_DRIVER_ROOT"
MPS_PIPE_DIR_KEY = "mps-pipe-directory"
#: The MPS variable as the admin sets it for the engine (dockerd's or containerd's environment reaches
#: the runtime; the container's never does).
MPS_PIPE_DIR_ENV = "CUDA_MPS_PIPE_DIRECTORY"
SECTION = "runtime"
DEFAULT_RUNTIMES = ("runc", "crun")
#: Searched when the environment has no PATH (containerd's shim usually passes one).
# (a literal: the nvdocker-toolkit package ships the runtime without nvdocker_setup.defaults;
# tests/test_probes.py keeps it equal to defaults.SYSTEMD_DEFAULT_PATH and the launcher's)
DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ENVVAR_UNPRIVILEGED_KEY = "accept-envvar-when-unprivileged"
VOLUME_MOUNTS_KEY = "accept-device-list-as-volume-mounts"
#: NVIDIA's ``disable-require``: true skips every NVIDIA_REQUIRE_* check, as the image's
#: NVIDIA_DISABLE_REQUIRE does for one container.
DISABLE_REQUIRE_KEY = "disable-require"
LOG_LEVEL_KEY = "log-level"
#: Our log's levels, least to most verbose: errors are always written (when there is a log).
LOG_LEVELS = ("error", "warning", "info", "debug")
DEFAULT_LOG_LEVEL = "warning"
#: True: injected device nodes get no ``linux.resources.devices`` rule (NVIDIA's ``no-cgroups``).
NO_CGROUPS_KEY = "no-cgroups"
SUPPORTED_CAPABILITIES_KEY = "supported-driver-capabilities"
IGNORE_IMEX_KEY = "ignore-imex-channel-requests"
#: NVIDIA's feature flag of the same name: true keeps the process's groups as the image set them.
NO_ADDITIONAL_GIDS_KEY = "no-additional-gids-for-device-nodes"
#: Every key the runtime reads from ``[runtime]`` (``nvdocker-setup config`` edits these; others
#: in the file are tolerated and ignored).
KEYS = ("runtimes", "driver-root", "log", LOG_LEVEL_KEY, "debug", "hook-path", "ldconfig", ENVVAR_UNPRIVILEGED_KEY,
        VOLUME_MOUNTS_KEY, MPS_PIPE_DIR_KEY, DISABLE_REQUIRE_KEY, NO_CGROUPS_KEY, SUPPORTED_CAPABILITIES_KEY,
        IGNORE_IMEX_KEY, NO_ADDITIONAL_GIDS_KEY)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def parse_ini(text: str, source: str = "config") -> Dict[str, Dict[str, str]]:
    """Sections of keys (lower case) to values, per the format in the module docstring."""
    sections: Dict[str, Dict[str, str]] = {SECTION: {}}
    current = sections[SECTION]
    last_key: Optional[str] = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            last_key = None
            continue
        if raw[0] in " \t" and last_key is not None:
            current[last_key] = (current[last_key] + " " + stripped).strip()
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip().lower(), {})
            last_key = None
            continue
        cut = min((i for i in (stripped.find("="), stripped.find(":")) if i > 0), default=-1)
        if cut < 0:
            raise GpuSetupError(
                "{} line {}: expected 'key = value', got {!r}".format(source, number, stripped),
                hint="fix the runtime configuration file",
            )
        last_key = stripped[:cut].strip().lower()
        current[last_key] = stripped[cut + 1:].strip()
    return sections


def _boolean(value: str, key: str, source: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise GpuSetupError("{}: {} must be true or false, got {!r}".format(source, key, value))


class RuntimeConfig:
    """Settings after defaults, the file and the environment are applied."""

    __slots__ = ("path", "runtimes", "driver_root", "log", "debug", "hook_path", "ldconfig",
                 "accept_envvar_unprivileged", "accept_volume_mounts", "mps_pipe_dir", "native_hook", "disable_require",
                 "log_level", "no_cgroups", "supported_capabilities", "ignore_imex_channels",
                 "no_additional_gids")

    def __init__(
        self,
        path: Optional[str] = None,
        runtimes: Sequence[str] = DEFAULT_RUNTIMES,
        driver_root: str = "/",
        log: Optional[str] = None,
        debug: bool = False,
        hook_path: Optional[str] = None,
        ldconfig: Optional[str] = None,
        accept_envvar_unprivileged: bool = True,
        accept_volume_mounts: bool = False,
        mps_pipe_dir: Optional[str] = None,
        disable_require: bool = False,
        log_level: Optional[str] = None,
        no_cgroups: bool = False,
        supported_capabilities: Optional[Sequence[str]] = None,
        ignore_imex_channels: bool = False,
        no_additional_gids: bool = False,
    ) -> None:
        self.path = path
        self.runtimes: List[str] = list(runtimes)
        self.driver_root = driver_root
        self.log = log
        self.debug = debug
        self.hook_path = hook_path
        self.ldconfig = ldconfig or default_ldconfig()
        self.accept_envvar_unprivileged = accept_envvar_unprivileged
        self.accept_volume_mounts = accept_volume_mounts
        self.mps_pipe_dir = mps_pipe_dir
        self.disable_require = disable_require
        #: One of LOG_LEVELS: ``log-level``, else debug with ``debug = true``, else warning.
        self.log_level = log_level or ("debug" if debug else DEFAULT_LOG_LEVEL)
        self.no_cgroups = no_cgroups
        #: The driver capabilities a container may ask for; None: every one.
        self.supported_capabilities: Optional[Tuple[str, ...]] = (
            None if supported_capabilities is None else tuple(supported_capabilities))
        self.ignore_imex_channels = ignore_imex_channels
        self.no_additional_gids = no_additional_gids
        #: The C launcher's path when it started us and is trusted (runtime/main.py
        #: NATIVE_HOOK_FLAG): the same binary, started as NATIVE_HOOK_NAME, is the ld cache hook.
        self.native_hook: Optional[str] = None

    def hook_command(self) -> HookCommand:
        """How the container's ``createContainer`` hook starts our hook program."""
        from nvdocker_setup.driver.edits import HookCommand

        if self.hook_path:
            return HookCommand(self.hook_path, [os.path.basename(self.hook_path)], self.ldconfig)
        if self.native_hook:
            return HookCommand(self.native_hook, [NATIVE_HOOK_NAME], self.ldconfig)
        return HookCommand(sys.executable, [sys.executable, "-I", "-S", hook_script()], self.ldconfig)

    def driver_capabilities(self, value: Optional[str]) -> Tuple[str, ...]:
        """``NVIDIA_DRIVER_CAPABILITIES`` under ``supported-driver-capabilities``: ``all`` is every
        supported one, the default (unset, empty) those of it that are supported, and an explicit
        request for another is refused naming the allowed ones (NVIDIA's runtime drops it silently,
        and the container then misses libraries without a word)."""
        from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES, parse_capabilities

        requested = parse_capabilities(value)
        allowed = self.supported_capabilities
        if allowed is None:
            return requested
        names = [item.strip().lower() for item in (value or "").split(",") if item.strip()]
        if not names or "all" in names:
            return tuple(name for name in (ALL_CAPABILITIES if names else requested) if name in allowed)
        refused = [name for name in requested if name not in allowed]
        if refused:
            raise GpuSetupError(
                "NVIDIA_DRIVER_CAPABILITIES={} asks for {}, which this host does not give ({} = {})".format(
                    quoted(value, 120), ", ".join(refused), SUPPORTED_CAPABILITIES_KEY, ",".join(allowed) or "none"),
                hint="ask for {} or all".format(", ".join(allowed)) if allowed else "ask for none",
            )
        return requested


#: argv[0] under which the C launcher is the ld cache hook (launcher/launcher.h LDCACHE_HOOK_NAME).
NATIVE_HOOK_NAME = "nvdocker-ldcache"


def hook_script() -> str:
    """Our hook's ``__main__.py``, runnable by path with ``python3 -I -S`` (stdlib only)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "hook", "__main__.py")


def default_ldconfig() -> str:
    """Ubuntu's wrapper script /sbin/ldconfig execs ldconfig.real; use the real one when present."""
    return "/sbin/ldconfig.real" if os.path.exists("/sbin/ldconfig.real") else "/sbin/ldconfig"


def load(environ: Mapping[str, str] = os.environ) -> RuntimeConfig:
    """Defaults, then the config file, then ``NVDOCKER_DRIVER_ROOT``."""
    explicit = environ.get(CONFIG_ENV) or None
    source = explicit or DEFAULT_CONFIG_PATH
    path: Optional[str] = source  # None: no file was read
    values: Dict[str, str] = {}
    try:
        with open(source, "r", encoding="utf-8") as handle:
            _check_owner(source, os.fstat(handle.fileno()))
            values = parse_ini(handle.read(), source).get(SECTION, {})
    except FileNotFoundError:
        if explicit:
            raise GpuSetupError(
                "{}={} does not exist".format(CONFIG_ENV, explicit), hint="point it at a runtime.conf or unset it"
            ) from None
        path = None
    except OSError as exc:
        raise GpuSetupError("cannot read {}: {}".format(source, exc.strerror or exc)) from None
    config = from_values(values, source, path)
    if environ.get(DRIVER_ROOT_ENV):
        config.driver_root = environ[DRIVER_ROOT_ENV]
    if environ.get(MPS_PIPE_DIR_ENV):
        config.mps_pipe_dir = checked_mps_pipe_dir(environ[MPS_PIPE_DIR_ENV], MPS_PIPE_DIR_ENV)
    return config


def from_values(values: Mapping[str, str], source: str = "config", path: Optional[str] = None) -> RuntimeConfig:
    """The settings of a ``[runtime]`` section (keys lower case, as :func:`parse_ini` gives them),
    checked; the environment plays no part (:func:`load` applies it after). ``nvdocker-setup config``
    checks an edited file with this before writing it."""
    runtimes = values.get("runtimes", "").replace(",", " ").split()
    log_level = values.get(LOG_LEVEL_KEY, "").strip().lower() or None
    if log_level is not None and log_level not in LOG_LEVELS:
        raise GpuSetupError("{}: {} must be one of {}, got {!r}".format(
            source, LOG_LEVEL_KEY, ", ".join(LOG_LEVELS), values[LOG_LEVEL_KEY]))
    config = RuntimeConfig(
        path=path,
        runtimes=runtimes or DEFAULT_RUNTIMES,
        driver_root=values.get("driver-root") or "/",
        log=values.get("log") or None,
        debug=_boolean(values.get("debug", ""), "debug", source),
        hook_path=values.get("hook-path") or None,
        ldconfig=values.get("ldconfig") or None,
        accept_envvar_unprivileged=_boolean(
            values.get(ENVVAR_UNPRIVILEGED_KEY, "true"), ENVVAR_UNPRIVILEGED_KEY, source),
        accept_volume_mounts=_boolean(values.get(VOLUME_MOUNTS_KEY, ""), VOLUME_MOUNTS_KEY, source),
        disable_require=_boolean(values.get(DISABLE_REQUIRE_KEY, ""), DISABLE_REQUIRE_KEY, source),
        log_level=log_level,
        no_cgroups=_boolean(values.get(NO_CGROUPS_KEY, ""), NO_CGROUPS_KEY, source),
        supported_capabilities=parse_supported_capabilities(values.get(SUPPORTED_CAPABILITIES_KEY, ""), source),
        ignore_imex_channels=_boolean(values.get(IGNORE_IMEX_KEY, ""), IGNORE_IMEX_KEY, source),
        no_additional_gids=_boolean(values.get(NO_ADDITIONAL_GIDS_KEY, ""), NO_ADDITIONAL_GIDS_KEY, source),
    )
    if values.get(MPS_PIPE_DIR_KEY):
        config.mps_pipe_dir = checked_mps_pipe_dir(values[MPS_PIPE_DIR_KEY], source)
    if config.hook_path and not os.path.isabs(config.hook_path):
        raise GpuSetupError("{}: hook-path must be absolute, got {!r}".format(source, config.hook_path))
    return config


def parse_supported_capabilities(value: str, source: str = "config") -> Optional[Tuple[str, ...]]:
    """``supported-driver-capabilities``: None (empty or ``all``: every capability) or the listed
    ones, each a capability this runtime knows."""
    names = [item.strip().lower() for item in value.split(",") if item.strip()]
    if not names or "all" in names:
        return None
    from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES

    unknown = [name for name in names if name not in ALL_CAPABILITIES]
    if unknown:
        raise GpuSetupError("{}: {} names an unknown driver capability {!r}".format(
            source, SUPPORTED_CAPABILITIES_KEY, unknown[0][:60]),
            hint="use a comma list of {}, or all".format(", ".join(ALL_CAPABILITIES)))
    return tuple(name for name in ALL_CAPABILITIES if name in names)


def check_trusted(path: str) -> None:
    """What :func:`load` checks of the file at ``path`` before reading it (as root: root's alone);
    ``nvdocker-setup config`` refuses to edit a file the runtime would refuse."""
    _check_owner(path, os.stat(path))


def _check_owner(source: str, info: os.stat_result) -> None:
    """The settings decide what root mounts into containers: as root, only a file that root owns and
    nobody else can write, reached through root's directories, counts (else every GPU start is
    refused with the fix, rather than run on a user's settings)."""
    if os.geteuid() != 0:
        return
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3):
        return  # /dev/null: no settings at all
    problem = None
    if info.st_uid != 0 or info.st_mode & 0o022:
        problem = "it is owned by uid {} with mode {:04o}".format(info.st_uid, info.st_mode & 0o7777)
    else:
        from nvdocker_setup.driver.discovery import resolve_trusted

        _found, problem = resolve_trusted("/", source)
    if problem is not None:
        raise GpuSetupError("{} is not root's alone: {}".format(source, problem),
                            hint="chown root:root and chmod go-w it (and the directories above it)")


def checked_mps_pipe_dir(value: str, source: str) -> str:
    """An MPS pipe directory as given: absolute and normalized (no ``.``, ``..`` or ``//``), at most
    4,096 characters; anything else is refused rather than guessed at."""
    if (len(value) > 4096 or not value.startswith("/") or value != os.path.normpath(value) or value == "/"
            or "\0" in value or value.startswith("//")):
        raise GpuSetupError("{}: the MPS pipe directory must be an absolute, normalized path, got {!r}".format(
            source, value[:200]), hint="set {} (or {}) to the directory nvidia-cuda-mps-control uses".format(
            MPS_PIPE_DIR_KEY, MPS_PIPE_DIR_ENV))
    return value


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _roots_alone(path: str) -> bool:
    """As root, a runtime we exec for every container must be a file nobody else could replace (the
    launcher's trusted_path, the driver's resolve_trusted)."""
    if os.geteuid() != 0:
        return True
    from nvdocker_setup.driver.discovery import resolve_trusted

    found, problem = resolve_trusted("/", os.path.abspath(path))
    return found is not None and problem is None


def find_real_runtime(config: RuntimeConfig, environ: Mapping[str, str] = os.environ, exclude: Sequence[str] = ()) -> str:
    """The first of ``config.runtimes`` that exists; ``exclude`` (ourselves) never counts, so a
    configuration that names this program cannot make it exec itself forever."""
    excluded = {os.path.realpath(path) for path in exclude if path}
    search = (environ.get("PATH") or DEFAULT_SEARCH_PATH).split(os.pathsep)
    for name in config.runtimes:
        candidates = [name] if "/" in name else [os.path.join(directory or ".", name) for directory in search]
        for candidate in candidates:
            if _executable(candidate) and os.path.realpath(candidate) not in excluded and _roots_alone(candidate):
                return candidate
    raise GpuSetupError(
        "no OCI runtime found to run the container (tried {})".format(", ".join(config.runtimes)),
        hint="install runc, or list the real runtime under runtimes in {}".format(config.path or DEFAULT_CONFIG_PATH),
    )
