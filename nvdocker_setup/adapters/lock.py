"""One nvdocker-setup at a time: an flock(2) on a lock file in the state directory.

flock is tied to the open file description, so the kernel releases it when the holder exits,
even on SIGKILL; there is no stale-lock cleanup to get wrong. The holder writes its pid into the
file only so that the "busy" message can name it. The file itself is never deleted: a process
blocked on the old inode would otherwise lock a file that nobody else opens.
"""

import errno
import fcntl
import os
import stat
import time
from types import TracebackType
from typing import Callable, Iterable, Optional, Type

from nvdocker_setup.errors import LockBusy, WriteFailed

LOCK_FILE_MODE = 0o600
LOCK_DIRECTORY_MODE = 0o700


def lock_holder(path: str) -> Optional[int]:
    """The pid written in the lock file by its current (or a killed) holder, if any."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


class FileLock:
    """Exclusive, non-reentrant lock on ``path``, given up after ``timeout`` seconds.

    ``timeout=0`` tries exactly once. ``clock`` and ``sleep`` are injectable so tests can
    exercise the retry loop without waiting.
    """

    def __init__(
        self,
        path: str,
        timeout: float = 10.0,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        what: str = "the Docker configuration",
        trusted_uids: Optional[Iterable[int]] = None,
    ) -> None:
        self.path = path
        self.timeout = max(0.0, float(timeout))
        self.poll_interval = max(0.001, float(poll_interval))
        self.what = what
        self._clock = clock
        self._sleep = sleep
        self._fd: Optional[int] = None
        #: When given, the lock file must be a regular file with one link, owned by one of these.
        self.trusted_uids = tuple(trusted_uids) if trusted_uids is not None else None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.release()

    def _open(self) -> int:
        """Open (creating if needed) the lock file; the state dir is private, hence 0700."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, LOCK_DIRECTORY_MODE, exist_ok=True)
                os.chmod(directory, LOCK_DIRECTORY_MODE)  # makedirs' mode is filtered by umask
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
            fd = os.open(self.path, flags, LOCK_FILE_MODE)
        except OSError as exc:
            raise WriteFailed(
                "cannot open the lock file {}: {}".format(self.path, exc.strerror or exc),
                hint="run nvdocker-setup as root (sudo), or choose another --state-dir",
                details=[str(exc)],
                reference="lock-unwritable",
            ) from exc
        if self.trusted_uids is not None:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid not in self.trusted_uids:
                os.close(fd)
                from nvdocker_setup.adapters.statedir import StateUntrusted

                raise StateUntrusted(
                    "the lock file {} is not a private regular file of ours (owner uid {}, {} links)".format(
                        self.path, st.st_uid, st.st_nlink
                    ),
                    hint="remove it (rm {}); nvdocker-setup creates a new one".format(self.path),
                )
        return fd

    def acquire(self) -> None:
        """Take the lock, polling until ``timeout``; :class:`LockBusy` if it stays held."""
        if self._fd is not None:
            raise RuntimeError("FileLock({!r}) is already held".format(self.path))
        fd = self._open()
        try:
            deadline = self._clock() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise self._busy()
                self._sleep(min(self.poll_interval, remaining))
            self._record_pid(fd)
        except BaseException:
            os.close(fd)  # closing the descriptor also drops a lock taken just before
            raise
        self._fd = fd

    def _record_pid(self, fd: int) -> None:
        """Write our pid so a waiting process can say who holds the lock."""
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, "{}\n".format(os.getpid()).encode("ascii"), 0)
            os.fsync(fd)
        except OSError as exc:
            raise WriteFailed(
                "cannot write the lock file {}: {}".format(self.path, exc.strerror or exc),
                hint="check free space and permissions of the state directory",
                details=[str(exc)],
                reference="lock-unwritable",
            ) from exc

    def _busy(self) -> LockBusy:
        pid = lock_holder(self.path)
        who = "pid {}".format(pid) if pid is not None else "pid unknown"
        return LockBusy(
            "another nvdocker-setup ({}) is editing {}".format(who, self.what),
            hint="wait for it to finish, or raise --lock-timeout",
            details=["lock file: {}".format(self.path)],
        )

    def release(self) -> None:
        """Give the lock up (idempotent). The pid is cleared first, so it never names us after."""
        fd = self._fd
        if fd is None:
            return
        self._fd = None
        try:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
