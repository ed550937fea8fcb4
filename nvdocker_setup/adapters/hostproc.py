"""Is a process the host's own, and may root act on what it names?

A process inside a container shares the host's ``/proc``: its ``comm`` may be ``dockerd`` or
``containerd``, it may run as uid 0, and its argv and ``/proc/<pid>/exe`` text name paths in *its*
file system, not the host's. Only a process in the host's mount and pid namespaces (those of PID 1)
whose root is ``/`` is a daemon of this host; everything else is ignored wherever a daemon is chosen.

Paths a host daemon names (its ``--config``) are still checked before root edits them: a file, its
directories and every symlink on the way must be root's (or the caller's own), with no directory
writable by others unless sticky, and a missing file must not be creatable by another user.
"""

import errno
import os
import stat
from typing import List, Optional, Sequence, Tuple

from nvdocker_setup.adapters.trust import SymlinkLoop, walk_path

#: The namespaces a host daemon shares with PID 1.
NAMESPACES = ("mnt", "pid")


def _link(path: str) -> Optional[str]:
    """The link text, None when it is not there (a vanished process); PermissionError propagates."""
    try:
        return os.readlink(path)
    except PermissionError:
        raise
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError(exc.errno, exc.strerror, path) from None
        return None


def host_reference(proc: str) -> Optional[Tuple[str, str]]:
    """The link texts of the host's mount and pid namespaces: PID 1's, or, where PID 1's cannot be
    read (a root without ``CAP_SYS_PTRACE`` and a non-dumpable init), this process's own, seen in the
    same ``/proc`` (the tool then manages the daemons of the namespaces it runs in). None: neither."""
    for pid in (1, os.getpid()):
        try:
            links = tuple(_link(os.path.join(proc, str(pid), "ns", name)) for name in NAMESPACES)
        except PermissionError:
            continue
        if None not in links:
            return links[0], links[1]  # type: ignore[return-value]
    return None


def in_host_namespaces(proc: str, pid: int, reference: Optional[Tuple[str, str]],
                       mount: bool = True) -> Optional[bool]:
    """Whether ``pid`` (under the ``/proc`` at ``proc``) shares the ``reference`` (PID 1's) pid and,
    with ``mount``, mount namespace and has ``/`` as its root (a rootless dockerd has a mount
    namespace of its own, made by RootlessKit, but the host's pids and root). None: the links
    cannot be read by this caller."""
    if reference is None:
        return None
    try:
        for name, expected in zip(NAMESPACES, reference):
            if name == "mnt" and not mount:
                continue
            if _link(os.path.join(proc, str(pid), "ns", name)) != expected:
                return False
        return _link(os.path.join(proc, str(pid), "root")) == "/"
    except PermissionError:
        return None


def same_file(a: str, b: str) -> bool:
    """Whether two paths (``/proc/<pid>/exe`` and a host path) are the very same file."""
    try:
        first, second = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _writers(mode: int) -> Optional[str]:
    if mode & stat.S_IWGRP and mode & stat.S_IWOTH:
        return "its group and others"
    if mode & stat.S_IWGRP:
        return "its group"
    if mode & stat.S_IWOTH:
        return "others"
    return None


def config_path_problems(path: str, trusted: Sequence[int] = (0,)) -> List[str]:
    """Why root must not edit ``path`` (a real path, already mapped under the context's root), a
    daemon's config file: empty when it, every directory looked up on the way and every symlink
    followed are owned by a ``trusted`` uid, no such directory is writable by group or others
    unless sticky, the file is a regular file writable by its owner only, and (missing) its nearest
    existing directory is writable by no one else."""
    owners = tuple(trusted)
    if not os.path.isabs(path):
        return ["{} is not an absolute path".format(path)]
    try:
        final, dirs, links = walk_path(path)
    except SymlinkLoop as loop:
        return ["{}: too many levels of symbolic links at {}".format(path, loop)]
    except OSError as exc:
        return ["cannot resolve {}: {}".format(path, exc.strerror)]
    problems: List[str] = []
    for directory in dirs:
        try:
            st = os.stat(directory)
        except OSError:
            continue  # a missing directory: judged below through the nearest existing one
        if st.st_uid not in owners:
            problems.append("directory {} is owned by uid {}, not root".format(directory, st.st_uid))
        who = _writers(st.st_mode)
        if who is not None and not (st.st_mode & stat.S_ISVTX and st.st_uid in owners):
            problems.append("directory {} is writable by {} (mode {:04o})".format(
                directory, who, stat.S_IMODE(st.st_mode)))
    for link in links:
        try:
            owner = os.lstat(link).st_uid
        except OSError as exc:
            problems.append("cannot inspect symlink {}: {}".format(link, exc.strerror))
            continue
        if owner not in owners:
            problems.append("symlink {} is owned by uid {}, not root".format(link, owner))
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        ancestor = final
        while not os.path.lexists(ancestor) and os.path.dirname(ancestor) != ancestor:
            ancestor = os.path.dirname(ancestor)
        try:
            parent = os.stat(ancestor)
        except OSError as exc:
            return problems + ["cannot inspect {}: {}".format(ancestor, exc.strerror)]
        who = _writers(parent.st_mode)
        if parent.st_uid not in owners or who is not None:
            problems.append("{} does not exist and {} (uid {}, mode {:04o}) lets another user create it".format(
                final, ancestor, parent.st_uid, stat.S_IMODE(parent.st_mode)))
        return list(dict.fromkeys(problems))
    except OSError as exc:
        return problems + ["cannot inspect {}: {}".format(final, exc.strerror)]
    if not stat.S_ISREG(st.st_mode):
        problems.append("{} is not a regular file".format(final))
    else:
        if st.st_uid not in owners:
            problems.append("{} is owned by uid {}, not root".format(final, st.st_uid))
        who = _writers(st.st_mode)
        if who is not None:
            problems.append("{} is writable by {} (mode {:04o})".format(final, who, stat.S_IMODE(st.st_mode)))
    return list(dict.fromkeys(problems))


def trusted_uids(euid: int) -> Tuple[int, ...]:
    """Root, and the caller itself when it is not root (it acts with its own rights)."""
    return tuple(sorted({0, euid}))
