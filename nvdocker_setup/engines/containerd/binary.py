"""The installed containerd binary: which one, which version, and its own config parser
(``containerd --config FILE config dump``), used as the validator of every candidate file."""

import os
import re
import subprocess
from dataclasses import dataclass
from typing import List, Optional, Tuple

from nvdocker_setup.adapters.hostproc import same_file
from nvdocker_setup.adapters.trust import check_runtime_binary
from nvdocker_setup.context import Context
from nvdocker_setup.engines.containerd.locate import system_containerds

VERSION_TIMEOUT = 10.0
DUMP_TIMEOUT = 20.0
_VERSION = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)")


def find_binary(ctx: Context) -> Optional[str]:
    """The containerd the context names, else the running system containerd's executable (what will
    read the file), else containerd on PATH.

    Root runs this binary (``--version``, ``config dump``), so the running one's is used only when
    it is the host's daemon (:func:`system_containerds`), the host path its ``exe`` link names is
    the very file the daemon runs (same device and inode as ``/proc/<pid>/exe``) and that path
    passes the runtime binary's trust check (root's, no directory on the way writable by others
    unless sticky, no foreign symlink). ``/proc/<pid>/exe`` itself is never executed: the pid may be
    reused by another process between this look-up and the run."""
    if ctx.containerd_binary:
        return ctx.containerd_binary
    for proc in system_containerds(ctx):
        link = ctx.host_path("/proc/{}/exe".format(proc.pid))
        try:
            exe = os.readlink(link)
        except OSError:
            continue
        if not os.path.isabs(exe) or exe.endswith(" (deleted)"):
            continue  # upgraded under it: the new binary on PATH is what restarts
        path = ctx.host_path(exe)
        if same_file(link, path) and check_runtime_binary(path).ok:
            return path
    return ctx.which("containerd")


def parse_version(text: str) -> Optional[Tuple[int, int, int]]:
    """``containerd github.com/containerd/containerd/v2 2.1.9+unknown`` -> (2, 1, 9)."""
    for word in text.split()[1:]:
        match = _VERSION.match(word)
        if match:
            return int(match.group(1)), int(match.group(2)), int(match.group(3))
    return None


@dataclass(frozen=True)
class Installed:
    """The containerd that will read the file (path None: none found here)."""

    path: Optional[str]
    version: Optional[Tuple[int, int, int]]

    @property
    def shown(self) -> str:
        if self.version is None:
            return "containerd (version unknown)"
        return "containerd {}".format(".".join(str(part) for part in self.version))

    @property
    def schema_version(self) -> int:
        """The config version this containerd writes for a new file: 3 from containerd 2.0, else 2."""
        return 3 if self.version is not None and self.version[0] >= 2 else 2

    @property
    def has_cdi(self) -> Optional[bool]:
        """containerd's CRI reads CDI specs from 1.7 (None: the version is unknown)."""
        return None if self.version is None else self.version >= (1, 7, 0)

    @property
    def merges_imports(self) -> Optional[bool]:
        """containerd 2.1 merges an imported file into the tables it names; older ones replace whole
        top-level plugin tables with the imported ones."""
        return None if self.version is None else self.version >= (2, 1, 0)


def installed(ctx: Context) -> Installed:
    path = find_binary(ctx)
    if path is None:
        return Installed(None, None)
    try:
        completed = ctx.run([path, "--version"], timeout=VERSION_TIMEOUT, env=_clean_env(ctx))
    except (OSError, subprocess.SubprocessError):
        return Installed(path, None)
    return Installed(path, parse_version(completed.stdout or "") if completed.returncode == 0 else None)


def _clean_env(ctx: Context) -> dict:
    return {"PATH": ctx.env.get("PATH", os.defpath), "LC_ALL": "C"}


@dataclass(frozen=True)
class Dump:
    ran: bool
    ok: bool
    output: str

    @property
    def messages(self) -> List[str]:
        return [line for line in self.output.splitlines() if line.strip()][-20:]


def config_dump(ctx: Context, binary: Optional[str], path: str) -> Dump:
    """``containerd --config PATH config dump``: the merged config containerd would run with (imports
    included), parsed by containerd's own code. ``ran`` False: no containerd here to ask."""
    if binary is None:
        return Dump(False, False, "")
    try:
        completed = ctx.run([binary, "--config", path, "config", "dump"], timeout=DUMP_TIMEOUT, env=_clean_env(ctx))
    except (OSError, subprocess.SubprocessError) as exc:
        return Dump(False, False, str(exc))
    output = (completed.stdout or "") if completed.returncode == 0 else (completed.stderr or completed.stdout or "")
    return Dump(True, completed.returncode == 0, output)
