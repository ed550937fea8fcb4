"""Small, forgiving reads of host state (/proc, /etc) shared by the adapters and doctor.

A host file that is missing or unreadable is an answer ("unknown"), not an error, for the code
that inspects hosts; these helpers say so with None instead of raising.
"""

import os
from typing import Dict, Optional


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def read_bytes(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def process_environ(proc_root: str, pid: int) -> Optional[Dict[str, str]]:
    """The environment of process ``pid`` from ``<proc_root>/<pid>/environ`` (None: unreadable).
    The one parser of that file: values are decoded leniently, later duplicates win."""
    raw = read_bytes(os.path.join(proc_root, str(pid), "environ"))
    if raw is None:
        return None
    environ: Dict[str, str] = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            key, value = item.split(b"=", 1)
            environ[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return environ


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (EPERM means it exists but is not ours)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True
