"""The state directory (install records, backups, the lock) is trusted only when it is safe.

Root acts on what it finds there: uninstall writes recorded entries back into daemon.json,
restore writes a backup's bytes over a config file. Whoever can write the state directory could
steer those writes, so before anything is read from it or written to it:

- the directory itself (and ``backups/``) must be a real directory, not a symlink, owned by root
  or by the invoking user (rootless Docker), and writable by nobody else;
- every directory above it must be owned by such a user, and not writable by others unless it
  is sticky (``/tmp``): otherwise someone could rename our directory away and plant another;
- every file read from it is opened with ``O_NOFOLLOW`` and must be a regular file with a
  trusted owner that nobody else may write;
- files are written as private temp files (``O_EXCL|O_NOFOLLOW``, mode 0600) renamed into
  place: a symlink planted under a file's name is replaced, never followed.

A violation is a :class:`StateUntrusted` that names the path and the command that fixes it;
nothing is read, written or created then.
"""

import errno
import os
import re
import secrets
import stat
from typing import Iterable, Optional, Tuple

from nvdocker_setup.adapters.files import fsync_directory
from nvdocker_setup.errors import TrustCheckFailed, WriteFailed

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
#: state.json and manifest.json are small; anything bigger is not ours.
MAX_STATE_FILE = 16 << 20


class StateUntrusted(TrustCheckFailed):
    """The state directory, or a file in it, could have been written by someone other than root."""

    reference = "state-untrusted"


class StateDamaged(TrustCheckFailed):
    """A file in the state directory does not hold what we write there: nothing acts on it."""

    reference = "state-damaged"


def trusted_uids(euid: Optional[int] = None) -> Tuple[int, ...]:
    """Root, and the invoking user (a rootless daemon's records belong to that user)."""
    return tuple(sorted({0, os.geteuid() if euid is None else euid}))


def _owner(uids: Tuple[int, ...]) -> str:
    return " or ".join("root" if uid == 0 else "uid {}".format(uid) for uid in uids)


def _untrusted(message: str, fix: str) -> StateUntrusted:
    return StateUntrusted(
        message,
        hint="nvdocker-setup keeps install records and backups only where no other user can change "
        "them; fix: {} (or choose another --state-dir)".format(fix),
    )


def _check_ancestor(path: str, uids: Tuple[int, ...]) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _untrusted("cannot inspect {}: {}".format(path, exc.strerror or exc), "run as root") from None
    if st.st_uid not in uids:
        raise _untrusted(
            "{} (above the state directory) is owned by uid {}, not {}".format(path, st.st_uid, _owner(uids)),
            "chown root {}".format(path),
        )
    writable = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not st.st_mode & stat.S_ISVTX:
        raise _untrusted(
            "{} (above the state directory) is writable by other users (mode {:04o}), so they could "
            "replace the state directory".format(path, stat.S_IMODE(st.st_mode)),
            "chmod go-w {}".format(path),
        )


def _check_own_directory(path: str, st: os.stat_result, uids: Tuple[int, ...]) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _untrusted(
            "{} is a symlink; the state directory must be a real directory".format(path),
            "rm {} (or point --state-dir at the real directory)".format(path),
        )
    if not stat.S_ISDIR(st.st_mode):
        raise _untrusted("{} is not a directory".format(path), "move it away")
    if st.st_uid not in uids:
        raise _untrusted(
            "{} is owned by uid {}, not {}".format(path, st.st_uid, _owner(uids)),
            "chown -R root: {}".format(path),
        )
    if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise _untrusted(
            "{} is writable by other users (mode {:04o})".format(path, stat.S_IMODE(st.st_mode)),
            "chmod go-w {}".format(path),
        )


def _walk(path: str, uids: Tuple[int, ...]) -> str:
    """Resolve ``path``'s parent like the kernel does, checking as we go: every directory a name
    is looked up in must pass :func:`_check_ancestor`, and every symlink followed must be owned
    by a trusted user (in a sticky ``/tmp`` anyone may own a link, and point it elsewhere later).
    Returns the real parent directory; missing components are left to the caller."""
    from nvdocker_setup.adapters.trust import SymlinkLoop, walk_path

    try:
        parent, dirs, links = walk_path(os.path.dirname(path))
    except SymlinkLoop as loop:
        raise _untrusted("too many levels of symbolic links at {}".format(loop), "fix the path") from None
    for directory in dirs + [parent]:
        if os.path.isdir(directory):
            _check_ancestor(directory, uids)
    for link in links:
        try:
            owner = os.lstat(link).st_uid
        except OSError as exc:
            raise _untrusted("cannot inspect {}: {}".format(link, exc.strerror or exc), "run as root") from None
        if owner not in uids:
            raise _untrusted(
                "{} (on the way to the state directory) is a symlink owned by uid {}, who could point it "
                "elsewhere".format(link, owner),
                "give --state-dir a path without that link",
            )
    return parent


def _make_directories(real_parent: str, name: str, uids: Tuple[int, ...]) -> None:
    """Create the missing directories down to ``real_parent/name`` one at a time (0755 above,
    0700 for the last), re-checking each parent first and setting modes through a descriptor
    opened without following symlinks, never by path."""
    missing = []
    current = real_parent
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory, mode in [(d, 0o755) for d in reversed(missing)] + [(os.path.join(real_parent, name), DIRECTORY_MODE)]:
        _check_ancestor(os.path.dirname(directory), uids)
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # judged below like any existing directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)  # mkdir's mode is filtered by the umask
        finally:
            os.close(fd)


def check_directory(path: str, uids: Iterable[int], *, create: bool) -> bool:
    """Check ``path`` (and everything on the way to it) as described above; create it (0700)
    when missing and ``create``. Returns whether the directory exists afterwards."""
    uids = tuple(uids)
    path = os.path.abspath(path)
    for attempt in (1, 2):
        real_parent = _walk(path, uids)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise _untrusted("cannot inspect {}: {}".format(path, exc.strerror or exc), "run as root") from None
        if st is not None:
            _check_own_directory(path, st, uids)
            return True
        if not create or attempt == 2:
            if create:
                raise _untrusted("{} vanished while it was being created".format(path), "run the command again")
            return False
        try:
            _make_directories(real_parent, os.path.basename(path), uids)
        except OSError as exc:
            raise WriteFailed(
                "cannot create the state directory {}: {}".format(path, exc.strerror or exc),
                hint="run nvdocker-setup as root (sudo), or choose another --state-dir",
                reference="state-dir-unwritable",
            ) from None
    return True  # not reached


def check_state_dir(state_dir: str, uids: Iterable[int], *, create: bool) -> bool:
    """The state directory and its ``backups/``; see :func:`check_directory`."""
    uids = tuple(uids)
    if not check_directory(state_dir, uids, create=create):
        return False
    check_directory(os.path.join(state_dir, "backups"), uids, create=False)
    return True


def read_private(path: str, uids: Iterable[int], limit: int = MAX_STATE_FILE) -> Optional[bytes]:
    """The bytes of a file in the state directory (None when missing), refusing a symlink, a
    non-regular file, an untrusted owner, a group/world-writable mode and absurd sizes."""
    uids = tuple(uids)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _untrusted("{} is a symlink; refusing to follow it".format(path), "rm {}".format(path)) from None
        raise _untrusted("cannot open {}: {}".format(path, exc.strerror or exc), "run as root") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _untrusted("{} is not a regular file".format(path), "move it away")
        if st.st_uid not in uids:
            raise _untrusted(
                "{} is owned by uid {}, not {}".format(path, st.st_uid, _owner(uids)), "chown root: {}".format(path)
            )
        if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
            raise _untrusted(
                "{} is writable by other users (mode {:04o})".format(path, stat.S_IMODE(st.st_mode)),
                "chmod go-w {}".format(path),
            )
        if st.st_size > limit:
            raise _untrusted("{} is {} bytes, more than a state file can be".format(path, st.st_size), "move it away")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise _untrusted("{} grew past {} bytes while being read".format(path, limit), "move it away")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_private(path: str, data: bytes, reference: str = "state-write-failed") -> None:
    """Replace ``path`` with ``data`` (mode 0600): a private temp file in the same directory,
    fsynced, renamed over the name (a symlink there is replaced, never followed), directory
    fsynced. Whole or absent after a crash."""
    directory = os.path.dirname(path)
    temp = os.path.join(
        directory, ".{}.{}-{}.tmp".format(os.path.basename(path), os.getpid(), secrets.token_hex(6))
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    renamed = False
    try:
        fd = os.open(temp, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        renamed = True
        fsync_directory(directory)
    except OSError as exc:
        raise WriteFailed(
            "cannot write {}: {}".format(path, exc.strerror or exc),
            hint="check free space and permissions of the state directory",
            details=[str(exc)],
            reference=reference,
        ) from exc
    finally:
        if not renamed:
            try:
                os.unlink(temp)
            except OSError:
                pass


_TEMP = re.compile(r"\A\..+\.([0-9]{1,10})-[0-9a-f]{12}\.tmp\Z")


def remove_stale_temps(directory: str) -> int:
    """Delete the temp files of :func:`write_private` whose writer is gone (SIGKILL, power cut);
    only our naming pattern, only regular files. Call it under the lock. Returns how many."""
    from nvdocker_setup.adapters.hostfs import pid_alive

    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    removed = 0
    for name in names:
        match = _TEMP.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed += 1
        except OSError:
            continue
    return removed
