"""The guard that keeps the suite off the host's own container engines (issue #18).

Every real-engine test runs binaries that the repo's own scripts fetch into the test cache
(Debian's docker.io, containerd, runc, podman... unpacked under ``cache_root()``; CRI-O and crictl
from ``../shared/engines``). A test that resolves ``runc`` or ``dockerd`` on the host's PATH passes
on a machine where an earlier run installed them and fails on a new one. So the whole session runs
under an audit hook (:func:`install`): every process the test process starts (``subprocess``,
``os.exec*``, ``os.posix_spawn``) is resolved the way the kernel will find it, and one whose name is
an engine binary's and whose real path is in a system directory (``/usr``, ``/bin``, ``/sbin``,
``/opt``, ``/snap``) fails the test that started it, and the session at its end.

Processes started by those processes (dockerd's runc, say) are not seen here; the tests hand them
absolute paths into the cache (``tests/support/sandbox.py`` ``engine_binary``).
"""

import os
import shutil
import sys
from typing import Any, List, Mapping, Optional, Sequence

#: The names of the engines' binaries (and their helpers) that only the test cache may provide.
ENGINE_BINARIES = frozenset({
    "runc", "crun", "dockerd", "docker", "docker-init", "docker-proxy", "containerd", "ctr",
    "containerd-shim", "containerd-shim-runc-v1", "containerd-shim-runc-v2", "podman", "conmon",
    "netavark", "aardvark-dns", "crio", "crictl", "pinns", "rootlesskit", "dockerd-rootless.sh",
    "slirp4netns",
})
#: Where a distribution or a vendor installs them.
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/opt/", "/snap/")


class HostEngineBinary(RuntimeError):
    """A test ran a container engine binary that the host has installed, not the test cache's."""


violations: List[str] = []


def offending(path: str) -> bool:
    """Whether running ``path`` (an absolute, resolved path) is running a host-installed engine."""
    return os.path.basename(path) in ENGINE_BINARIES and path.startswith(SYSTEM_PREFIXES)


def resolve(program: str, env: Optional[Mapping[str, str]]) -> Optional[str]:
    """``program`` as execvpe would find it with ``env`` (this process's environment when None)."""
    if "/" in program:
        found: Optional[str] = program
    else:
        path = (env if env is not None else os.environ).get("PATH", os.defpath)
        found = shutil.which(program, path=path)
    if found is None or not os.path.exists(found):
        return None
    return os.path.realpath(found)


def check(program: Any, env: Optional[Mapping[str, str]]) -> None:
    if isinstance(program, bytes):
        program = os.fsdecode(program)
    if not isinstance(program, str) or not program or os.path.basename(program) not in ENGINE_BINARIES:
        return
    resolved = resolve(program, env)
    if resolved is not None and offending(resolved):
        message = ("the test ran {} ({}), the host's own; tests run the engines the repo fetches into the "
                   "test cache (tests/support/sandbox.py engine_binary)".format(program, resolved))
        violations.append(message)
        raise HostEngineBinary(message)


def _argv0(args: Any) -> Any:
    if isinstance(args, (str, bytes)):
        return None  # a shell line or a single program name with shell=True: the shell's business
    if isinstance(args, Sequence) and args:
        return os.fspath(args[0]) if isinstance(args[0], os.PathLike) else args[0]
    return None


def _hook(event: str, args: tuple) -> None:
    if event == "subprocess.Popen":
        executable, argv, _cwd, env = args
        program = executable if executable is not None else _argv0(argv)
        check(os.fspath(program) if isinstance(program, os.PathLike) else program, env)
    elif event == "os.exec":
        path, _argv, env = args
        check(os.fspath(path) if isinstance(path, os.PathLike) else path, env)
    elif event == "os.posix_spawn":
        path, _argv, env = args
        check(os.fspath(path) if isinstance(path, os.PathLike) else path, env)


_installed = False


def install() -> None:
    """Audit every process start of this interpreter from now on (once; hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
