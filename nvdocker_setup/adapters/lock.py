"""One nvdocker-setup at a time: an flock(2) on a lock file in the state directory.

flock is tied to the open file description, so the kernel releases it when the holder exits,
even on SIGKILL; there is no stale-lock cleanup to get wrong. The holder writes its pid into the
file only so that the "busy" message can name it. The file itself is never deleted: a process
blocked on the old inode would otherwise lock a file that nobody else opens.
"""

import errno
import fcntl
import os
import time
from types import TracebackType
from typing import Callable, Optional, Type

from nvdocker_setup.errors import LockBusy, WriteFailed

LOCK_FILE_MODE = 0o600
LOCK_DIRECTORY_MODE = 0o700


def lock_holder(path: str) -> Optional[int]:
    """The pid written in the lock file by its current (or a killed) holder, if any."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(64).decode("ascii", "replace").strip()
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
    ) -> None:
        self.path = path
        self.timeout = max(0.0, float(timeout))
        self.poll_interval = max(0.001, float(poll_interval))
        self.what = what
        self._clock = clock
        self._sleep = sleep
        self._fd: Optional[int] = None

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
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(self.path, flags, LOCK_FILE_MODE)
        except OSError as exc:
            raise WriteFailed(
                "cannot open the lock file {}: {}".format(self.path, exc.strerror or exc),
                hint="run nvdocker-setup as root (sudo), or choose another --state-dir",
                details=[str(exc)],
                reference="lock-unwritable",
            ) from exc

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
