"""Is the runtime binary safe for dockerd, which runs as root, to execute?

dockerd execs whatever ``runtimes.<name>.path`` names, as root, for every container. If a non-root
user can replace that file, or any directory on the way to it, or a symlink followed to reach it,
registering the runtime hands that user root. This module checks exactly that, on real paths (no
root prefix: the binary is judged where dockerd will find it).

Not covered: POSIX ACLs, Linux capabilities on the file and mount options such as ``noexec``.
"""

import os
import stat
from dataclasses import dataclass
from typing import List, Optional, Tuple

from nvdocker_setup.errors import TrustCheckFailed

#: The kernel's limit on symlinks followed while resolving one path (MAXSYMLINKS).
_MAX_SYMLINKS = 40


@dataclass(frozen=True)
class TrustReport:
    """The outcome of :func:`check_runtime_binary`.

    ``problems`` are sentences that name the offending path and the command that fixes it.
    ``exists`` is False for a missing file and for a relative path (which is not looked up here).
    """

    path: str
    exists: bool
    problems: Tuple[str, ...]
    #: The file after resolving every symlink, when it exists.
    resolved: Optional[str] = None
    #: A missing path that a non-root user could create (or redirect) before dockerd runs it.
    hijackable: bool = False

    @property
    def ok(self) -> bool:
        """True when dockerd may run it: it exists and nothing about it is unsafe."""
        return self.exists and not self.problems


class SymlinkLoop(Exception):
    pass


def walk_path(path: str) -> Tuple[str, List[str], List[str]]:
    """Resolve ``path`` component by component, like the kernel.

    Returns (final path, every directory a name was looked up in, every symlink followed): whoever
    can write one of those directories or replace one of those links decides what gets executed.
    Directories are recorded as real paths, so the chains of a link and of its target are covered.
    """
    dirs: List[str] = []
    links: List[str] = []
    pending = [part for part in path.split("/") if part]
    resolved = "/"
    hops = 0
    while pending:
        name = pending.pop(0)
        if name == ".":
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        if resolved not in dirs:
            dirs.append(resolved)
        candidate = os.path.join(resolved, name)
        if os.path.islink(candidate):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise SymlinkLoop(candidate)
            links.append(candidate)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = "/"
            pending = [part for part in target.split("/") if part] + pending
        else:
            resolved = candidate
    return resolved, dirs, links


def _owner_name(uid: int) -> str:
    return "root" if uid == 0 else str(uid)


def _writers(mode: int) -> Optional[Tuple[str, str]]:
    """Return (who, chmod spec) when group or others may write, else None."""
    group = bool(mode & stat.S_IWGRP)
    other = bool(mode & stat.S_IWOTH)
    if group and other:
        return "group and others", "go-w"
    if group:
        return "its group", "g-w"
    if other:
        return "others", "o-w"
    return None


def _check_directory(path: str, trusted: Tuple[int, ...], owner: str) -> List[str]:
    """Owner and writability of a directory on the way to the binary.

    A directory owned by a trusted user with the sticky bit (``/tmp``, mode 1777) is accepted even
    though it is world-writable: in a sticky directory only an entry's owner, the directory's owner
    or root may rename or delete the entry, so others cannot replace root's entries in it. The
    entry itself (next directory, symlink or the binary) is checked for a trusted owner separately.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return ["cannot inspect directory {}: {}; run the check as root".format(path, exc.strerror)]
    problems = []
    if st.st_uid not in trusted:
        problems.append(
            "directory {} is owned by uid {}, not {}, so that user could replace what dockerd "
            "runs; fix: chown {} {}".format(path, st.st_uid, owner, owner, path)
        )
    writers = _writers(st.st_mode)
    sticky_ok = bool(st.st_mode & stat.S_ISVTX) and st.st_uid in trusted
    if writers is not None and not sticky_ok:
        who, spec = writers
        problems.append(
            "directory {} is writable by {} (mode {:04o}), so non-root users could replace "
            "entries in it; fix: chmod {} {}".format(
                path, who, stat.S_IMODE(st.st_mode), spec, path
            )
        )
    return problems


def _check_link(path: str, trusted: Tuple[int, ...], owner: str) -> List[str]:
    """A followed symlink must have a trusted owner: in a sticky directory its owner may swap it."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return ["cannot inspect symlink {}: {}; run the check as root".format(path, exc.strerror)]
    if st.st_uid in trusted:
        return []
    return [
        "symlink {} is owned by uid {}, not {}, so that user could point it elsewhere; "
        "fix: chown -h {} {}".format(path, st.st_uid, owner, owner, path)
    ]


def _check_file(path: str, st: os.stat_result, trusted: Tuple[int, ...], owner: str) -> List[str]:
    if not stat.S_ISREG(st.st_mode):
        return ["{} is not a regular file; point the runtime at the executable itself".format(path)]
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    if not mode & stat.S_IXUSR:
        problems.append(
            "{} is not executable by its owner (mode {:04o}); fix: chmod u+x {}".format(
                path, mode, path
            )
        )
    if st.st_uid not in trusted:
        problems.append(
            "{} is owned by uid {}, not {}, so that user could replace what dockerd runs; "
            "fix: chown {} {}".format(path, st.st_uid, owner, owner, path)
        )
    writers = _writers(st.st_mode)
    if writers is not None:
        who, spec = writers
        problems.append(
            "{} is writable by {} (mode {:04o}), so non-root users could change what dockerd "
            "runs; fix: chmod {} {}".format(path, who, mode, spec, path)
        )
    return problems


def _nearest_existing(path: str) -> str:
    current = path
    while not os.path.lexists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def _creation_hazards(
    final: str, dirs: List[str], links: List[str], trusted: Tuple[int, ...], owner: str
) -> List[str]:
    """Who could make a missing runtime path exist: an untrusted owner or writer of an existing
    directory on the way, or of a followed symlink, or *any* non-trusted writer of the nearest
    existing ancestor, sticky or not (a sticky ``/tmp`` protects root's entries from being
    replaced, not names that do not exist yet from being created)."""
    hazards: List[str] = []
    for directory in dirs:
        if os.path.isdir(directory):
            hazards.extend(_check_directory(directory, trusted, owner))
    for link in links:
        hazards.extend(_check_link(link, trusted, owner))
    ancestor = _nearest_existing(final)
    try:
        st = os.stat(ancestor)
    except OSError as exc:
        return hazards + ["cannot inspect {}: {}; run the check as root".format(ancestor, exc.strerror)]
    writers = _writers(st.st_mode)
    if stat.S_ISDIR(st.st_mode) and writers is not None:
        who, spec = writers
        # a shared directory (sticky: /tmp, /var/tmp) is meant to be writable: the fix is elsewhere
        fix = ("install the runtime in a root-only directory such as /usr/local/bin instead (a shared directory "
               "like {} must stay writable)".format(ancestor) if st.st_mode & stat.S_ISVTX else
               "install the runtime first, or choose a root-only directory (fix: chmod {} {})".format(spec, ancestor))
        hazards.append(
            "{} does not exist yet and {} is writable by {} (mode {:04o}), so a non-root user could "
            "create it and dockerd would run their program as root; {}".format(
                final, ancestor, who, stat.S_IMODE(st.st_mode), fix
            )
        )
    return list(dict.fromkeys(hazards))  # without repeats, in order


def check_runtime_binary(path: str, *, expected_owner: int = 0) -> TrustReport:
    """Check that ``path`` is an absolute, executable regular file that no untrusted user controls.

    Trusted owners are root and ``expected_owner`` (root by default; a rootless daemon's user when
    it runs as that user). Every directory searched while resolving the path, including the chains
    of each symlink and of the final target, must be trusted-owned and not group- or
    world-writable (sticky trusted-owned directories excepted, see :func:`_check_directory`).
    """
    owner = _owner_name(expected_owner)
    trusted = tuple(sorted({0, expected_owner}))
    if not os.path.isabs(path):
        return TrustReport(
            path,
            False,
            (
                "runtime path {!r} is relative; dockerd resolves relative runtime paths on its "
                "own PATH, which this check cannot see; use an absolute path".format(path),
            ),
        )
    try:
        final, dirs, links = walk_path(path)
    except SymlinkLoop as loop:
        return TrustReport(
            path,
            False,
            ("{} cannot be resolved: too many levels of symbolic links at {}".format(path, loop),),
        )
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if links:
            problem = "{} is a symlink to {}, which does not exist; fix the link or the path"
            problem = problem.format(path, final)
        else:
            problem = "{} does not exist; install the runtime there or pass its real path".format(
                path
            )
        hazards = _creation_hazards(final, dirs, links, trusted, owner)
        return TrustReport(path, False, (problem,) + tuple(hazards), hijackable=bool(hazards))
    except OSError as exc:
        problem = "cannot inspect {}: {}; run the check as root".format(path, exc.strerror)
        return TrustReport(path, False, (problem,))
    problems: List[str] = []
    for directory in dirs:
        problems.extend(_check_directory(directory, trusted, owner))
    for link in links:
        problems.extend(_check_link(link, trusted, owner))
    problems.extend(_check_file(final, st, trusted, owner))
    return TrustReport(path, True, tuple(problems), resolved=final)


def require_trusted_runtime(path: str, *, expected_owner: int = 0) -> TrustReport:
    """Like :func:`check_runtime_binary`, but raise :class:`TrustCheckFailed` unless it is ok."""
    report = check_runtime_binary(path, expected_owner=expected_owner)
    if report.ok:
        return report
    if not report.exists:
        message = "runtime binary {} cannot be used".format(path)
    else:
        message = "runtime binary {} is not safe for dockerd to run".format(path)
    raise TrustCheckFailed(
        message,
        details=report.problems,
        hint="Fix the listed paths (or pass the runtime's real, root-owned path) and re-run.",
    )


def is_python_entry_point(path: str) -> bool:
    """Whether ``path`` is a Python script (a pip/pipx console script) rather than the packages'
    C launcher: such a runtime starts an interpreter for every runc call dockerd makes (state,
    start, delete ...), ~9 ms each here (benchmarks/runtime_overhead.py) against ~0.4 ms."""
    try:
        with open(os.path.realpath(path), "rb") as handle:
            first = handle.read(256).split(b"\n", 1)[0]
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first
