"""Tests for the flock-based lock, with a real second process where contention matters."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from nvdocker_setup.adapters.lock import FileLock, lock_holder
from nvdocker_setup.errors import LockBusy

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOLDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from nvdocker_setup.adapters.lock import FileLock
    with FileLock(sys.argv[1], timeout=5):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the parent closes our stdin
    """
)


class FakeTime:
    """A clock that only moves when the lock sleeps, so retry tests take no real time."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def lock_path(tmp_path):
    return str(tmp_path / "state" / "lock")


@pytest.fixture
def holder(lock_path):
    """A child process that holds the lock until told to exit."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, lock_path, PROJECT_ROOT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = child.stdout.readline()
        assert line == b"locked\n", child.stderr.read().decode(errors="replace")
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_contention_with_another_process(lock_path, holder):
    assert lock_holder(lock_path) == holder.pid
    with pytest.raises(LockBusy) as info:
        FileLock(lock_path, timeout=0.2).acquire()
    assert "another nvdocker-setup (pid {}) is editing".format(holder.pid) in info.value.message
    assert info.value.hint == "wait for it to finish, or raise --lock-timeout"
    assert info.value.reference == "lock-busy"

    holder.stdin.close()  # the child leaves its with-block and exits
    assert holder.wait(timeout=10) == 0
    with FileLock(lock_path, timeout=5) as lock:
        assert lock.held
        assert lock_holder(lock_path) == os.getpid()


def test_killed_holder_releases_the_lock(lock_path, holder):
    holder.kill()
    holder.wait()
    with FileLock(lock_path, timeout=5):
        assert lock_holder(lock_path) == os.getpid()


def test_waiting_parent_gets_the_lock_when_holder_exits(lock_path, holder):
    lock = FileLock(lock_path, timeout=30, poll_interval=0.01)
    holder.stdin.close()
    lock.acquire()
    try:
        assert lock_holder(lock_path) == os.getpid()
    finally:
        lock.release()


def test_timeout_zero_tries_exactly_once(lock_path):
    fake = FakeTime()
    with FileLock(lock_path):
        with pytest.raises(LockBusy) as info:
            FileLock(lock_path, timeout=0, clock=fake.clock, sleep=fake.sleep).acquire()
    assert fake.sleeps == []
    assert "(pid {})".format(os.getpid()) in info.value.message


def test_timeout_polls_until_deadline(lock_path):
    fake = FakeTime()
    with FileLock(lock_path):
        lock = FileLock(lock_path, timeout=0.875, poll_interval=0.25, clock=fake.clock,
                        sleep=fake.sleep)
        with pytest.raises(LockBusy):
            lock.acquire()
    assert fake.sleeps == [0.25, 0.25, 0.25, 0.125]  # binary fractions: exact
    assert not lock.held


def test_lock_released_after_with_block(lock_path):
    with FileLock(lock_path) as lock:
        assert lock.held
    assert not lock.held
    assert os.path.exists(lock_path)  # never deleted: flock needs one stable inode
    with FileLock(lock_path, timeout=0):
        pass


def test_lock_released_when_block_raises(lock_path):
    with pytest.raises(ZeroDivisionError):
        with FileLock(lock_path):
            raise ZeroDivisionError("inside the block")
    with FileLock(lock_path, timeout=0):
        pass


def test_pid_cleared_on_release(lock_path):
    with FileLock(lock_path):
        with open(lock_path) as handle:
            assert handle.read() == "{}\n".format(os.getpid())
    assert lock_holder(lock_path) is None


def test_unknown_pid_is_said(lock_path):
    with FileLock(lock_path):
        with open(lock_path, "w"):
            pass  # truncate: e.g. the holder has locked but not written its pid yet
        with pytest.raises(LockBusy) as info:
            FileLock(lock_path, timeout=0).acquire()
    assert "pid unknown" in info.value.message


def test_creates_private_parent_and_file(tmp_path):
    path = tmp_path / "a" / "b" / "lock"
    old_umask = os.umask(0)
    try:
        with FileLock(str(path)):
            pass
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600


def test_release_is_idempotent_and_not_reentrant(lock_path):
    lock = FileLock(lock_path)
    lock.release()
    lock.acquire()
    with pytest.raises(RuntimeError):
        lock.acquire()
    lock.release()
    lock.release()


def test_lock_holder_without_file_or_garbage(tmp_path):
    assert lock_holder(str(tmp_path / "missing")) is None
    (tmp_path / "garbage").write_text("not a pid\n")
    assert lock_holder(str(tmp_path / "garbage")) is None
    (tmp_path / "pid").write_text("4242\n")
    assert lock_holder(str(tmp_path / "pid")) == 4242
