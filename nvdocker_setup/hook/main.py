"""nvdocker-runtime-hook: OCI hooks for GPU containers, reading the container state on stdin.

``update-ldcache [--ldconfig PATH] [--rootfs DIR] --folder DIR...``
    Our ``createContainer`` hook. It runs after the driver files are mounted and before
    pivot_root, in the container's mount namespace: it adds the injected library folders to the
    container's ``/etc/ld.so.conf.d`` and runs the host's ``ldconfig -r <rootfs>``, which
    rebuilds the container's ld cache and creates the SONAME links (``libcuda.so.1``). The
    runtime passes ``--rootfs``; from a CDI spec it comes from the state on stdin.

``prestart`` (installed as ``nvidia-container-runtime-hook``)
    dockerd registers ``docker run --gpus`` only when a program of that name is on its PATH, and
    adds it as a prestart hook. Our runtime removes that hook and injects by itself; when another
    runtime (runc) runs it instead, we hand over to NVIDIA's ``nvidia-container-cli`` if it is
    installed, else fail saying how to fix it.

``poststart``, ``poststop``: nothing to do (NVIDIA's hook accepts them too).

Standard library only, and not even ``json`` or ``subprocess`` on the runtime's path: the hook
runs on every GPU container start, and an interpreter start alone is ~10 ms.
"""

from __future__ import annotations

import os
import sys

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Dict, List, Optional, Sequence, Tuple

PROGRAM = "nvdocker-runtime-hook"
LD_CONF_NAME = "00-nvdocker.conf"
CLI_NAME = "nvidia-container-cli"
_CLI_SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
FIX_HINT = (
    "make nvdocker's runtime handle GPU containers: `nvdocker-setup install --default-runtime` "
    "(then restart dockerd), or run this container with --runtime=nvidia"
)


# -- container state and spec -------------------------------------------------------------------

def read_state(stream) -> Dict[str, Any]:
    """The OCI state runc writes to a hook's stdin."""
    try:
        state = jsonio.loads(stream.read())
    except ValueError as exc:
        raise GpuSetupError("the container state on stdin is not JSON: {}".format(exc)) from None
    if not isinstance(state, dict):
        raise GpuSetupError("the container state on stdin is not a JSON object")
    return state


def load_bundle(state: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``(bundle, spec)``; ``bundlePath`` is what Docker before 17.06 wrote."""
    bundle = state.get("bundle") or state.get("bundlePath")
    if not isinstance(bundle, str) or not bundle:
        raise GpuSetupError("the container state has no bundle")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as handle:
            spec = jsonio.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise GpuSetupError("cannot read the container spec {}: {}".format(path, exc)) from None
    return bundle, spec


def rootfs_of(bundle: str, spec: Dict[str, Any]) -> str:
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise GpuSetupError("the container spec has no root.path")
    return os.path.normpath(os.path.join(bundle, path))


# -- processes and files, cheaply -----------------------------------------------------------------

def run(argv: Sequence[str]) -> int:
    """Run a program with our stdout/stderr (runc shows them when a hook fails); its status.
    posix_spawn (vfork underneath) instead of subprocess: no extra imports, no page copying."""
    try:
        pid = os.posix_spawn(argv[0], list(argv), {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except OSError as exc:
        raise GpuSetupError("cannot run {}: {}".format(argv[0], exc.strerror or exc)) from None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _open_directory_in(parent_fd: int, name: str) -> int:
    """Open (creating if missing) directory ``name`` under ``parent_fd`` without following a
    symlink: an image's ``/etc`` pointing at a host path must never make us write there."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)


def write_ld_conf_in(rootfs: str, folders: Sequence[str]) -> bool:
    """Write ``/etc/ld.so.conf.d/00-nvdocker.conf`` inside ``rootfs`` so that a later ldconfig in
    the container keeps the driver libraries; False when the image's ``/etc`` or
    ``/etc/ld.so.conf.d`` is a symlink (the hook's ldconfig run still indexes them)."""
    text = "# written by {} for the NVIDIA driver libraries\n{}".format(PROGRAM, "".join(f + "\n" for f in folders))
    opened = [os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for name in ("etc", "ld.so.conf.d"):
            try:
                opened.append(_open_directory_in(opened[-1], name))
            except OSError as exc:
                if name == "etc" and not os.path.isdir(os.path.join(rootfs, "etc")):
                    raise GpuSetupError("cannot create /etc in the container: {}".format(exc)) from None
                return False  # a symlinked directory: leave it alone
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(LD_CONF_NAME, flags, 0o644, dir_fd=opened[-1])
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        raise GpuSetupError("cannot write /etc/ld.so.conf.d/{} in the container: {}".format(LD_CONF_NAME, exc)) from None
    finally:
        for fd in opened:
            os.close(fd)


# -- update-ldcache ------------------------------------------------------------------------------

def parse_options(argv: Sequence[str], repeated: Sequence[str], single: Sequence[str]) -> Dict[str, Any]:
    """``--name value`` / ``--name=value`` options; ``repeated`` ones collect into lists."""
    options: Dict[str, Any] = {name: [] for name in repeated}
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, sep, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or (name not in repeated and name not in single):
            raise GpuSetupError("unexpected argument {!r}".format(arg))
        if not sep:
            if index + 1 >= len(argv):
                raise GpuSetupError("{} needs a value".format(arg))
            value = argv[index + 1]
            index += 1
        index += 1
        if name in repeated:
            options[name].append(value)
        else:
            options[name] = value
    return options


def update_ldcache(argv: Sequence[str], stdin) -> int:
    options = parse_options(argv, repeated=("folder",), single=("ldconfig", "rootfs"))
    folders: List[str] = options["folder"]
    for folder in folders:
        if not folder.startswith("/") or ".." in folder.split("/"):
            raise GpuSetupError("--folder must be an absolute path inside the container, got {!r}".format(folder))
    ldconfig = options.get("ldconfig") or "/sbin/ldconfig"
    rootfs = options.get("rootfs")
    if rootfs is None:
        bundle, spec = load_bundle(read_state(stdin))
        rootfs = rootfs_of(bundle, spec)
    if not folders:
        return 0
    write_ld_conf_in(rootfs, folders)
    status = run([ldconfig, "-r", rootfs] + list(folders))
    if status != 0:
        raise GpuSetupError(
            "{} -r {} failed with status {}".format(ldconfig, rootfs, status),
            hint="the container's ld cache could not be refreshed; see ldconfig's message above",
        )
    return 0


# -- prestart: the --gpus hook under a runtime other than ours -------------------------------------

def find_nvidia_cli(environ: Dict[str, str]) -> Optional[str]:
    directories = [d for d in environ.get("PATH", "").split(os.pathsep) if d] + list(_CLI_SEARCH)
    for directory in directories:
        candidate = os.path.join(directory, CLI_NAME)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvidia_cli_argv(cli: str, spec: Dict[str, Any], pid: int, rootfs: str, driver_root: str, ldconfig: str) -> Optional[List[str]]:
    """The ``nvidia-container-cli configure`` command NVIDIA's hook would run; None: no request."""
    from nvdocker_setup.driver import requirements
    from nvdocker_setup.driver.capabilities import parse_capabilities
    from nvdocker_setup.runtime.request import DRIVER_CAPABILITIES, VISIBLE_DEVICES, environment, parse_visible_devices

    env = environment(spec)
    devices = parse_visible_devices(env[VISIBLE_DEVICES]) if VISIBLE_DEVICES in env else None
    if devices is None:
        return None
    argv = [cli]
    if driver_root not in ("", "/"):
        argv.append("--root={}".format(driver_root))
    argv += ["--load-kmods", "configure", "--ldconfig=@{}".format(ldconfig)]
    if devices:
        argv.append("--device={}".format(",".join(devices)))
    argv += ["--{}".format(capability) for capability in parse_capabilities(env.get(DRIVER_CAPABILITIES))]
    if not requirements.disabled(env):
        argv += ["--require={}".format(value) for _, value in requirements.requirement_values(env)]
    argv += ["--pid={}".format(pid), rootfs]
    return argv


def prestart(stdin, environ: Dict[str, str]) -> int:
    from nvdocker_setup.runtime.config import load

    state = read_state(stdin)
    bundle, spec = load_bundle(state)
    cli = find_nvidia_cli(environ)
    config = load(environ)
    argv = nvidia_cli_argv(cli or CLI_NAME, spec, int(state.get("pid") or 0), rootfs_of(bundle, spec), config.driver_root, config.ldconfig)
    if argv is None:
        return 0  # not a GPU container (NVIDIA_VISIBLE_DEVICES unset, empty or void)
    if cli is None:
        raise GpuSetupError(
            "this container asks for GPUs (docker run --gpus, or NVIDIA_VISIBLE_DEVICES) but its runtime does not "
            "inject them, and NVIDIA's {} is not installed to do it from this hook".format(CLI_NAME),
            hint=FIX_HINT,
        )
    os.execv(cli, argv)
    return 1  # not reached


# -- entry ---------------------------------------------------------------------------------------

USAGE = "usage: {} [-debug] [-config FILE] update-ldcache|prestart|poststart|poststop [options]".format(PROGRAM)


def split_command(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """Skip NVIDIA's global flags (``-debug``, ``-config FILE``); the subcommand and its args."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        name = argv[index].lstrip("-")
        index += 2 if name == "config" else 1
    if index >= len(argv):
        return None, []
    return argv[index], list(argv[index + 1:])


def exit_now(status: int) -> None:
    """Flush and leave without interpreter teardown (a few ms of a container start)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Optional[List[str]] = None) -> int:
    command, rest = split_command(sys.argv[1:] if argv is None else argv)
    try:
        if command == "update-ldcache":
            return update_ldcache(rest, sys.stdin)
        if command == "prestart":
            return prestart(sys.stdin, dict(os.environ))
        if command in ("poststart", "poststop"):
            return 0
        sys.stderr.write(USAGE + "\n")
        return 2
    except GpuSetupError as error:
        sys.stderr.write("{}: {}\n".format(PROGRAM, error))
        return 1
