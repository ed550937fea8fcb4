"""Read daemon.json once, and replace it so that it is always either the old or the new bytes.

The admin's file is precious: we read a :class:`FileSnapshot`, build the new bytes elsewhere, and
:func:`write_atomically` replaces the file with a same-directory temp file and ``rename(2)``, after
checking that nobody edited the file in the meantime. A crash at any point leaves the old bytes or
the new bytes, never a mix, and at worst a stale temp file that the next run removes.
"""

import errno
import os
import re
import secrets
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from nvdocker_setup.adapters.hostfs import pid_alive
from nvdocker_setup.errors import ConcurrentModification, ConfigReadError, WriteFailed

#: The steps of :func:`write_atomically`, in order; ``step_hook`` is called after each one.
#: With ``in_place=True`` "renamed" marks the in-place write having completed instead.
STEPS = (
    "temp-created",
    "temp-written",
    "temp-synced",
    "attributes-copied",
    "validated",
    "rechecked",
    "renamed",
    "directory-synced",
)

#: With ``in_place=True``, between "rechecked" and "renamed": half the new bytes written over
#: the old ones, then all of them (synced, before the file is cut to length).
IN_PLACE_STEPS = ("in-place-partial", "in-place-written")

#: The steps of :func:`remove_file`, in order.
REMOVE_STEPS = ("rechecked", "unlinked", "directory-synced")

SELINUX_XATTR = "security.selinux"
NEW_FILE_MODE = 0o644
NEW_DIRECTORY_MODE = 0o755
TEMP_MODE = 0o600

_XATTR_IGNORED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA}
_BIND_MOUNT_HINT = (
    "a single file that is bind-mounted (as in containers) cannot be replaced atomically: "
    "mount the directory that holds it instead, or pass --in-place to overwrite it in place "
    "(a backup is kept)"
)

StepHook = Callable[[str], None]


@dataclass(frozen=True)
class FileSnapshot:
    """What the file looked like when we read it; the base every later check compares against."""

    #: The path as given (may be a symlink).
    path: str
    #: ``os.path.realpath`` of ``path``: we edit the symlink's target and never replace the link.
    real_path: str
    exists: bool
    #: ``b""`` when the file is missing.
    data: bytes
    #: ``stat.S_IMODE`` of the file, None when missing.
    mode: Optional[int]
    uid: Optional[int]
    gid: Optional[int]


def _no_hook(step: str) -> None:
    """Default step hook: production code has nothing to inject."""


def _describe(path: str, real_path: str) -> str:
    """Name the file as the admin gave it, plus where the symlink leads."""
    if os.path.abspath(path) == real_path:
        return path
    return "{} (-> {})".format(path, real_path)


def _read_fd(fd: int) -> bytes:
    """Read until EOF: one read(2) may return less than the whole file."""
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_snapshot(path: str) -> FileSnapshot:
    """Read ``path`` (following symlinks) and remember its bytes and attributes.

    A missing file, or a dangling symlink, is a valid snapshot with ``exists=False``. Everything
    else that prevents reading becomes a :class:`ConfigReadError`, never a traceback.
    """
    real_path = os.path.realpath(path)
    shown = _describe(path, real_path)
    try:
        # O_NONBLOCK: never hang on a FIFO someone put there; it has no effect on regular files.
        fd = os.open(real_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return FileSnapshot(path, real_path, False, b"", None, None, None)
    except IsADirectoryError:
        raise _is_directory(shown) from None
    except PermissionError as exc:
        raise _unreadable(shown, exc) from None
    except OSError as exc:
        raise _read_failed(shown, exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _is_directory(shown)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigReadError(
                "{} is not a regular file".format(shown),
                hint="daemon.json must be a plain file (a symlink to one is fine)",
                reference="daemon-json-not-a-file",
            )
        data = _read_fd(fd)
    except IsADirectoryError:
        raise _is_directory(shown) from None
    except PermissionError as exc:
        raise _unreadable(shown, exc) from None
    except OSError as exc:
        raise _read_failed(shown, exc) from None
    finally:
        os.close(fd)
    return FileSnapshot(
        path=path,
        real_path=real_path,
        exists=True,
        data=data,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
    )


def _is_directory(shown: str) -> ConfigReadError:
    return ConfigReadError(
        "{} is a directory, not a file".format(shown),
        hint="remove or rename the directory (often created by a bind mount of a missing file), "
        "then re-run",
        reference="daemon-json-is-directory",
    )


def _unreadable(shown: str, exc: OSError) -> ConfigReadError:
    return ConfigReadError(
        "cannot read {}: permission denied".format(shown),
        hint="run nvdocker-setup as root (sudo), or check the file's permissions",
        details=[str(exc)],
        reference="daemon-json-unreadable",
    )


def _read_failed(shown: str, exc: OSError) -> ConfigReadError:
    return ConfigReadError(
        "cannot read {}: {}".format(shown, exc.strerror or exc),
        hint="check that the path and its parent directories are intact",
        details=[str(exc)],
        reference="daemon-json-unreadable",
    )


# --------------------------------------------------------------------------------------------
# Writing


@contextmanager
def _as_write_failed(action: str, path: str) -> Iterator[None]:
    """Turn an OSError from our own I/O into WriteFailed; validators' errors pass untouched."""
    try:
        yield
    except OSError as exc:
        raise _write_failed(action, path, exc) from exc


def _write_failed(action: str, path: str, exc: OSError) -> WriteFailed:
    hints = {
        errno.ENOSPC: "free some disk space, then re-run",
        errno.EDQUOT: "free some disk space (quota exceeded), then re-run",
        errno.EROFS: "the file system is read-only; remount it read-write or edit the file elsewhere",
        errno.EACCES: "run nvdocker-setup as root (sudo)",
        errno.EPERM: "run nvdocker-setup as root (sudo); check for immutable attributes (lsattr)",
    }
    return WriteFailed(
        "cannot {} {}: {}".format(action, path, exc.strerror or exc),
        hint=hints.get(exc.errno or 0, "nothing was changed; fix the cause above and re-run"),
        details=[str(exc)],
    )


def _temp_pattern(basename: str) -> "re.Pattern[str]":
    return re.compile(r"\A\." + re.escape(basename) + r"\.nvdocker-(\d+)-[0-9A-Za-z]+\.tmp\Z")



def remove_stale_temps(directory: str, basename: str) -> List[str]:
    """Delete temp files left by a writer that was killed (its pid is gone); return their names.

    Only our own naming pattern is touched, and only regular files, so nothing of the admin's is.
    """
    pattern = _temp_pattern(basename)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    removed = []
    for name in names:
        match = pattern.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        full = os.path.join(directory, name)
        try:
            if not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            os.unlink(full)
        except OSError:
            continue
        removed.append(name)
    return removed


def _ensure_directory(directory: str) -> None:
    """Create missing parents (0755, like /etc/docker) and make the new entries durable."""
    missing = []
    current = directory
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for path in reversed(missing):
        with _as_write_failed("create directory", path):
            try:
                os.mkdir(path, NEW_DIRECTORY_MODE)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
                continue
            os.chmod(path, NEW_DIRECTORY_MODE)  # mkdir's mode is filtered by the umask
            fsync_directory(os.path.dirname(path))


def fsync_directory(directory: str) -> None:
    """Make a rename/unlink durable; some file systems cannot fsync directories (EINVAL)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _create_temp(directory: str, basename: str) -> Tuple[int, str]:
    """Create a fresh, private temp file next to the target (rename only works within one fs)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        name = ".{}.nvdocker-{}-{}.tmp".format(basename, os.getpid(), secrets.token_hex(6))
        path = os.path.join(directory, name)
        try:
            return os.open(path, flags, TEMP_MODE), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not find a free temp file name", directory)


def _write_all(fd: int, data: bytes) -> None:
    """write(2) may be short; loop until every byte is out."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy_attributes(fd: int, snapshot: FileSnapshot) -> None:
    """Give the temp file the original's owner, mode and SELinux label (a new file: 0644 root)."""
    is_root = os.geteuid() == 0
    if snapshot.exists and snapshot.mode is not None:
        if snapshot.uid is not None and snapshot.gid is not None:
            try:
                os.fchown(fd, snapshot.uid, snapshot.gid)
            except PermissionError:
                if is_root:
                    raise
        # chmod after chown: chown clears set-id bits.
        os.fchmod(fd, snapshot.mode)
        _copy_selinux_label(snapshot.real_path, fd)
    else:
        if is_root:
            os.fchown(fd, 0, 0)
        os.fchmod(fd, NEW_FILE_MODE)
    os.fsync(fd)


def _copy_selinux_label(source: str, fd: int) -> None:
    """Keep dockerd able to read the file on SELinux hosts; a no-op where labels do not exist."""
    if not hasattr(os, "getxattr"):
        return
    try:
        label = os.getxattr(source, SELINUX_XATTR)
    except OSError as exc:
        if exc.errno in _XATTR_IGNORED or exc.errno == errno.ENOENT:
            return
        raise
    try:
        os.setxattr(fd, SELINUX_XATTR, label)
    except OSError as exc:
        if exc.errno not in _XATTR_IGNORED:
            raise


def _current_bytes(real_path: str) -> Optional[bytes]:
    """The target's bytes now; None when missing. Anything not a regular file reads as changed."""
    try:
        fd = os.open(real_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return b"\0<directory>"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b"\0<not a regular file>"
        return _read_fd(fd)
    finally:
        os.close(fd)


def _recheck(snapshot: FileSnapshot, nothing_done: str) -> None:
    """Refuse to overwrite an edit made after our read (by the admin, or another tool)."""
    if os.path.realpath(snapshot.path) != snapshot.real_path:
        changed = True
    else:
        with _as_write_failed("re-read", snapshot.real_path):
            current = _current_bytes(snapshot.real_path)
        if current is None:
            changed = snapshot.exists
        else:
            changed = not snapshot.exists or current != snapshot.data
    if changed:
        raise ConcurrentModification(
            "{} changed while we were editing it; {}".format(
                os.path.basename(snapshot.path) or snapshot.path, nothing_done
            ),
            hint="re-run the command: it will start from the new contents",
            details=["file: {}".format(_describe(snapshot.path, snapshot.real_path))],
        )


def _mount_points() -> List[str]:
    """Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded)."""
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            lines = handle.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def _is_mount_point(path: str) -> bool:
    """True for a bind-mounted single file, which os.path.ismount misses (same device)."""
    if os.path.ismount(path):
        return True
    return os.path.realpath(path) in _mount_points()


def _bind_mounted(path: str, action: str, exc: OSError) -> WriteFailed:
    return WriteFailed(
        "cannot {} {}: it is a mount point (a bind-mounted single file?)".format(action, path),
        hint=_BIND_MOUNT_HINT,
        details=[str(exc)],
        reference="bind-mounted",
    )


def _rename(temp_path: str, target: str) -> None:
    """rename(2) over the target; a bind-mounted file answers EBUSY/EXDEV (or EPERM)."""
    try:
        os.rename(temp_path, target)
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.EXDEV) or (
            exc.errno == errno.EPERM and _is_mount_point(target)
        ):
            raise _bind_mounted(target, "replace", exc) from exc
        raise _write_failed("replace", target, exc) from exc


def _write_in_place(snapshot: FileSnapshot, data: bytes, step_hook: Optional[StepHook] = None) -> None:
    """Overwrite the target's own inode (bind mounts). Not atomic, so never truncating first:
    the whole new content is written over the old from offset 0 and synced, and only then is
    the file cut to the new length. A kill at any point leaves a file at least as long as the
    shorter of the two versions' ends, never an empty or short one; the caller keeps a backup."""
    target = snapshot.real_path
    hook = step_hook or _no_hook
    with _as_write_failed("write", target):
        if snapshot.exists:
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(target, flags, NEW_FILE_MODE)
        try:
            if not snapshot.exists:
                if os.geteuid() == 0:
                    os.fchown(fd, 0, 0)
                os.fchmod(fd, NEW_FILE_MODE)
            try:
                _overwrite(fd, data, hook)
            except OSError:
                if snapshot.exists:  # put the original bytes back the same way, then report
                    try:
                        _overwrite(fd, snapshot.data, _no_hook)
                    except OSError:
                        pass
                raise
        finally:
            os.close(fd)


def _overwrite(fd: int, data: bytes, hook: StepHook) -> None:
    """``data`` over the file from offset 0 in two halves (``in-place-partial`` in between, where
    crash tests kill the writer), synced, then the file cut to its length."""
    view = memoryview(data)
    offset = 0
    for stop in (len(data) // 2, len(data)):
        while offset < stop:
            offset += os.pwrite(fd, view[offset:stop], offset)
        if stop < len(data):
            hook("in-place-partial")
    os.fsync(fd)
    hook("in-place-written")
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def write_atomically(
    snapshot: FileSnapshot,
    new_data: bytes,
    *,
    validate: Optional[Callable[[str], None]] = None,
    in_place: bool = False,
    step_hook: Optional[StepHook] = None,
) -> None:
    """Replace ``snapshot.real_path`` with ``new_data``: old bytes or new bytes, never a mix.

    ``validate(temp_path)`` may veto the candidate by raising (the exception propagates).
    :class:`ConcurrentModification` when the file changed since ``snapshot`` was read;
    :class:`WriteFailed` (reference "bind-mounted") when the file is a mount point, in which case
    ``in_place=True`` overwrites it in place instead (not atomic). The temp file is removed on every
    error path, KeyboardInterrupt included; a SIGKILL leaves one that the next call removes.
    """
    hook = step_hook or _no_hook
    target = snapshot.real_path
    directory, basename = os.path.split(target)
    _ensure_directory(directory)
    remove_stale_temps(directory, basename)

    fd: Optional[int] = None
    temp_path: Optional[str] = None
    renamed = False
    try:
        with _as_write_failed("create a temp file in", directory):
            fd, temp_path = _create_temp(directory, basename)
        hook("temp-created")
        with _as_write_failed("write", temp_path):
            _write_all(fd, new_data)
        hook("temp-written")
        with _as_write_failed("sync", temp_path):
            os.fsync(fd)
        hook("temp-synced")
        with _as_write_failed("copy owner, mode and label to", temp_path):
            _copy_attributes(fd, snapshot)
            os.close(fd)
            fd = None
        hook("attributes-copied")
        if validate is not None:
            validate(temp_path)
        hook("validated")
        _recheck(snapshot, "nothing was written")
        hook("rechecked")
        if in_place:
            _write_in_place(snapshot, new_data, hook)
        else:
            _rename(temp_path, target)
            renamed = True
        hook("renamed")
        with _as_write_failed("sync directory", directory):
            fsync_directory(directory)
        hook("directory-synced")
    finally:
        if fd is not None:
            os.close(fd)
        if temp_path is not None and not renamed:
            try:
                os.unlink(temp_path)
            except OSError:
                pass


def remove_file(snapshot: FileSnapshot, *, step_hook: Optional[StepHook] = None) -> None:
    """Delete the file we created at install, unless someone changed it since ``snapshot``."""
    hook = step_hook or _no_hook
    target = snapshot.real_path
    _recheck(snapshot, "nothing was removed")
    hook("rechecked")
    if not snapshot.exists:
        return
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.EBUSY or (exc.errno == errno.EPERM and _is_mount_point(target)):
            raise _bind_mounted(target, "remove", exc) from exc
        raise _write_failed("remove", target, exc) from exc
    hook("unlinked")
    directory = os.path.dirname(target)
    with _as_write_failed("sync directory", directory):
        fsync_directory(directory)
    hook("directory-synced")
