"""Tests for the daemon.json reader/writer, on real files (the suite runs as root)."""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest

from nvdocker_setup.adapters import files
from nvdocker_setup.adapters.files import (
    STEPS,
    read_snapshot,
    remove_file,
    remove_stale_temps,
    write_atomically,
)
from nvdocker_setup.errors import ConcurrentModification, ConfigReadError, WriteFailed

CRASH_WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_writer.py")
IS_ROOT = os.geteuid() == 0
OLD = b'{\n  "log-driver": "journald",\n  "data-root": "/srv/docker"\n}\n'
NEW = b'{\n  "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}\n}\n'


def temps_in(directory):
    """Every temp file of ours (any basename) left in ``directory``."""
    return sorted(n for n in os.listdir(directory) if ".nvdocker-" in n and n.endswith(".tmp"))


def dead_pid():
    """A pid that certainly belongs to no process: a child we started and reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def etc(tmp_path):
    directory = tmp_path / "etc" / "docker"
    directory.mkdir(parents=True)
    return directory


@pytest.fixture
def daemon_json(etc):
    path = etc / "daemon.json"
    path.write_bytes(OLD)
    os.chmod(str(path), 0o644)
    return path


# ---------------------------------------------------------------------------------------------
# read_snapshot


def test_read_existing_file(daemon_json):
    os.chmod(str(daemon_json), 0o640)
    snap = read_snapshot(str(daemon_json))
    assert snap.exists
    assert snap.data == OLD
    assert snap.mode == 0o640
    st = os.stat(str(daemon_json))
    assert (snap.uid, snap.gid) == (st.st_uid, st.st_gid)
    assert snap.path == str(daemon_json)
    assert snap.real_path == os.path.realpath(str(daemon_json))


def test_read_missing_file(etc):
    snap = read_snapshot(str(etc / "daemon.json"))
    assert not snap.exists
    assert snap.data == b""
    assert (snap.mode, snap.uid, snap.gid) == (None, None, None)


def test_read_missing_parent_directory(tmp_path):
    snap = read_snapshot(str(tmp_path / "no" / "such" / "daemon.json"))
    assert not snap.exists


def test_dangling_symlink_is_missing_and_points_at_target(etc, tmp_path):
    target = tmp_path / "real" / "daemon.json"
    link = etc / "daemon.json"
    os.symlink(str(target), str(link))
    snap = read_snapshot(str(link))
    assert not snap.exists
    assert snap.real_path == os.path.realpath(str(target))


def test_directory_at_path(etc):
    (etc / "daemon.json").mkdir()
    with pytest.raises(ConfigReadError) as info:
        read_snapshot(str(etc / "daemon.json"))
    assert info.value.reference == "daemon-json-is-directory"
    assert "directory" in info.value.message
    assert info.value.hint


def test_fifo_at_path_is_refused_without_hanging(etc):
    os.mkfifo(str(etc / "daemon.json"))
    with pytest.raises(ConfigReadError) as info:
        read_snapshot(str(etc / "daemon.json"))
    assert info.value.reference == "daemon-json-not-a-file"


def test_parent_is_a_file(etc):
    (etc / "notadir").write_bytes(b"")
    with pytest.raises(ConfigReadError) as info:
        read_snapshot(str(etc / "notadir" / "daemon.json"))
    assert "Not a directory" in info.value.message or "not a directory" in info.value.message


def test_symlink_loop(etc):
    os.symlink("loop-b", str(etc / "loop-a"))
    os.symlink("loop-a", str(etc / "loop-b"))
    with pytest.raises(ConfigReadError):
        read_snapshot(str(etc / "loop-a"))


def _read_as_nobody(path):
    """Run read_snapshot in a forked child that dropped root, return what it raised.

    chmod 000 does not stop root (CAP_DAC_OVERRIDE), so the only honest EACCES as root is to
    stop being root: the child switches to nobody (65534) before reading.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must always leave through os._exit
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_snapshot(path)
                result = {"raised": None}
            except ConfigReadError as exc:
                result = {"raised": "ConfigReadError", "reference": exc.reference,
                          "message": exc.message}
            except BaseException as exc:  # noqa: B902 - report anything to the parent
                result = {"raised": type(exc).__name__, "message": str(exc)}
            os.write(write_end, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        payload = handle.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, payload
    return json.loads(payload.decode())


def test_unreadable_file(daemon_json):
    os.chmod(str(daemon_json), 0o000)
    if IS_ROOT:
        result = _read_as_nobody(str(daemon_json))
        assert result["raised"] == "ConfigReadError", result
        assert result["reference"] == "daemon-json-unreadable"
        assert "permission denied" in result["message"]
    else:
        with pytest.raises(ConfigReadError) as info:
            read_snapshot(str(daemon_json))
        assert info.value.reference == "daemon-json-unreadable"


# ---------------------------------------------------------------------------------------------
# write_atomically: attributes


@pytest.mark.skipif(not IS_ROOT, reason="chown to root:root needs root")
def test_new_file_is_0644_root_owned(etc):
    os.chmod(str(etc), 0o755)
    old_umask = os.umask(0o077)  # the result must not depend on the caller's umask
    try:
        path = etc / "daemon.json"
        write_atomically(read_snapshot(str(path)), NEW)
    finally:
        os.umask(old_umask)
    st = os.stat(str(path))
    assert path.read_bytes() == NEW
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert temps_in(str(etc)) == []


def test_new_file_creates_parent_directory_0755(tmp_path):
    path = tmp_path / "etc" / "docker" / "daemon.json"
    old_umask = os.umask(0o077)
    try:
        write_atomically(read_snapshot(str(path)), NEW)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == NEW
    assert stat.S_IMODE(os.stat(str(path.parent)).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(str(path.parent.parent)).st_mode) == 0o755


@pytest.mark.skipif(not IS_ROOT, reason="chown to another user needs root")
def test_existing_mode_and_owner_are_preserved(daemon_json):
    os.chown(str(daemon_json), 1234, 1234)
    os.chmod(str(daemon_json), 0o640)
    write_atomically(read_snapshot(str(daemon_json)), NEW)
    st = os.stat(str(daemon_json))
    assert daemon_json.read_bytes() == NEW
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 1234)


def test_existing_mode_preserved_for_unusual_mode(daemon_json):
    os.chmod(str(daemon_json), 0o600)
    write_atomically(read_snapshot(str(daemon_json)), NEW)
    assert stat.S_IMODE(os.stat(str(daemon_json)).st_mode) == 0o600


def test_selinux_label_copied_when_supported(daemon_json, monkeypatch):
    """Real labels need an SELinux host; check the copy with recorded xattr calls instead."""
    set_calls = []
    real_getxattr = getattr(os, "getxattr", None)

    def fake_getxattr(path, name, *args, **kwargs):
        if name == files.SELINUX_XATTR and path == os.path.realpath(str(daemon_json)):
            return b"system_u:object_r:container_config_t:s0\x00"
        return real_getxattr(path, name, *args, **kwargs)

    monkeypatch.setattr(os, "getxattr", fake_getxattr, raising=False)
    monkeypatch.setattr(os, "setxattr", lambda fd, name, value, *a, **k: set_calls.append(
        (name, value)), raising=False)
    write_atomically(read_snapshot(str(daemon_json)), NEW)
    assert set_calls == [(files.SELINUX_XATTR, b"system_u:object_r:container_config_t:s0\x00")]


def test_selinux_unsupported_is_ignored(daemon_json, monkeypatch):
    def unsupported(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "getxattr", lambda *a, **k: b"label", raising=False)
    monkeypatch.setattr(os, "setxattr", unsupported, raising=False)
    write_atomically(read_snapshot(str(daemon_json)), NEW)
    assert daemon_json.read_bytes() == NEW


def test_symlink_target_is_rewritten_and_link_kept(etc, tmp_path):
    real_dir = tmp_path / "config"
    real_dir.mkdir()
    target = real_dir / "daemon.json"
    target.write_bytes(OLD)
    os.chmod(str(target), 0o640)
    link = etc / "daemon.json"
    os.symlink(os.path.relpath(str(target), str(etc)), str(link))

    write_atomically(read_snapshot(str(link)), NEW)

    assert os.path.islink(str(link))
    assert os.readlink(str(link)) == os.path.relpath(str(target), str(etc))
    assert target.read_bytes() == NEW
    assert stat.S_IMODE(os.stat(str(target)).st_mode) == 0o640
    assert temps_in(str(etc)) == [] and temps_in(str(real_dir)) == []


def test_dangling_symlink_creates_target(etc, tmp_path):
    target = tmp_path / "config" / "daemon.json"
    link = etc / "daemon.json"
    os.symlink(str(target), str(link))
    write_atomically(read_snapshot(str(link)), NEW)
    assert os.path.islink(str(link))
    assert target.read_bytes() == NEW


def test_empty_and_large_contents(daemon_json):
    write_atomically(read_snapshot(str(daemon_json)), b"")
    assert daemon_json.read_bytes() == b""
    big = os.urandom(3 * 1024 * 1024 + 17)
    write_atomically(read_snapshot(str(daemon_json)), big)
    assert daemon_json.read_bytes() == big


# ---------------------------------------------------------------------------------------------
# write_atomically: validation, concurrency, cleanup


def test_validate_sees_temp_with_new_bytes_and_final_mode(daemon_json):
    seen = {}

    def validate(temp_path):
        seen["dir"] = os.path.dirname(temp_path)
        seen["name"] = os.path.basename(temp_path)
        with open(temp_path, "rb") as handle:
            seen["data"] = handle.read()
        seen["mode"] = stat.S_IMODE(os.stat(temp_path).st_mode)

    os.chmod(str(daemon_json), 0o640)
    write_atomically(read_snapshot(str(daemon_json)), NEW, validate=validate)
    assert seen["dir"] == str(daemon_json.parent)
    assert seen["name"].startswith(".daemon.json.nvdocker-{}-".format(os.getpid()))
    assert seen["name"].endswith(".tmp")
    assert seen["data"] == NEW
    assert seen["mode"] == 0o640


class Rejected(Exception):
    pass


def reject(temp_path):
    raise Rejected(temp_path)


def test_validate_raising_leaves_file_untouched_and_no_temp(daemon_json):
    before = os.stat(str(daemon_json))
    with pytest.raises(Rejected):
        write_atomically(read_snapshot(str(daemon_json)), NEW, validate=reject)
    assert daemon_json.read_bytes() == OLD
    assert os.stat(str(daemon_json)).st_ino == before.st_ino
    assert temps_in(str(daemon_json.parent)) == []


def test_validate_raising_oserror_is_not_rewrapped(daemon_json):
    def validate(temp_path):
        raise FileNotFoundError(errno.ENOENT, "dockerd", "dockerd")

    with pytest.raises(FileNotFoundError):
        write_atomically(read_snapshot(str(daemon_json)), NEW, validate=validate)
    assert temps_in(str(daemon_json.parent)) == []


@pytest.mark.parametrize("step", STEPS[:6])
def test_keyboard_interrupt_before_rename_removes_temp(daemon_json, step):
    def hook(name):
        if name == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(read_snapshot(str(daemon_json)), NEW, step_hook=hook)
    assert daemon_json.read_bytes() == OLD
    assert temps_in(str(daemon_json.parent)) == []


def test_steps_are_reported_in_order(daemon_json):
    steps = []
    write_atomically(read_snapshot(str(daemon_json)), NEW, step_hook=steps.append)
    assert tuple(steps) == STEPS


def test_concurrent_modification_is_detected(daemon_json):
    concurrent = b'{"edited": "by the admin"}\n'

    def hook(step):
        if step == "temp-synced":
            daemon_json.write_bytes(concurrent)

    with pytest.raises(ConcurrentModification) as info:
        write_atomically(read_snapshot(str(daemon_json)), NEW, step_hook=hook)
    assert "changed while we were editing it; nothing was written" in info.value.message
    assert info.value.hint
    assert daemon_json.read_bytes() == concurrent
    assert temps_in(str(daemon_json.parent)) == []


def test_concurrent_creation_is_detected(etc):
    path = etc / "daemon.json"
    snap = read_snapshot(str(path))
    path.write_bytes(b"{}\n")
    with pytest.raises(ConcurrentModification):
        write_atomically(snap, NEW)
    assert path.read_bytes() == b"{}\n"
    assert temps_in(str(etc)) == []


def test_concurrent_deletion_is_detected(daemon_json):
    snap = read_snapshot(str(daemon_json))
    daemon_json.unlink()
    with pytest.raises(ConcurrentModification):
        write_atomically(snap, NEW)
    assert not daemon_json.exists()


def test_symlink_retargeted_is_a_concurrent_modification(etc, tmp_path):
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    first.write_bytes(OLD)
    second.write_bytes(OLD)
    link = etc / "daemon.json"
    os.symlink(str(first), str(link))
    snap = read_snapshot(str(link))
    os.unlink(str(link))
    os.symlink(str(second), str(link))
    with pytest.raises(ConcurrentModification):
        write_atomically(snap, NEW)
    assert first.read_bytes() == OLD and second.read_bytes() == OLD


def test_unwritable_directory_is_write_failed(daemon_json, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files, "_create_temp", refuse)
    with pytest.raises(WriteFailed) as info:
        write_atomically(read_snapshot(str(daemon_json)), NEW)
    assert info.value.reference == "write-failed"
    assert "Read-only file system" in info.value.message
    assert str(daemon_json.parent) in info.value.message
    assert daemon_json.read_bytes() == OLD


def test_rename_ebusy_is_bind_mounted(daemon_json, monkeypatch):
    def busy(src, dst):
        raise OSError(errno.EBUSY, "Device or resource busy", src)

    monkeypatch.setattr(os, "rename", busy)
    with pytest.raises(WriteFailed) as info:
        write_atomically(read_snapshot(str(daemon_json)), NEW)
    monkeypatch.undo()
    assert info.value.reference == "bind-mounted"
    assert "--in-place" in info.value.hint
    assert daemon_json.read_bytes() == OLD
    assert temps_in(str(daemon_json.parent)) == []


def test_in_place_write_keeps_inode(daemon_json):
    os.chmod(str(daemon_json), 0o640)
    inode = os.stat(str(daemon_json)).st_ino
    steps = []
    write_atomically(read_snapshot(str(daemon_json)), NEW, in_place=True, step_hook=steps.append)
    assert daemon_json.read_bytes() == NEW
    st = os.stat(str(daemon_json))
    assert st.st_ino == inode
    assert stat.S_IMODE(st.st_mode) == 0o640
    renamed = STEPS.index("renamed")
    assert tuple(steps) == STEPS[:renamed] + files.IN_PLACE_STEPS + STEPS[renamed:]
    assert temps_in(str(daemon_json.parent)) == []


def test_in_place_still_validates_and_rechecks(daemon_json):
    with pytest.raises(Rejected):
        write_atomically(read_snapshot(str(daemon_json)), NEW, in_place=True, validate=reject)
    assert daemon_json.read_bytes() == OLD
    snap = read_snapshot(str(daemon_json))
    daemon_json.write_bytes(b"{}")
    with pytest.raises(ConcurrentModification):
        write_atomically(snap, NEW, in_place=True)
    assert daemon_json.read_bytes() == b"{}"
    assert temps_in(str(daemon_json.parent)) == []


def test_in_place_creates_missing_file(etc):
    path = etc / "daemon.json"
    write_atomically(read_snapshot(str(path)), NEW, in_place=True)
    assert path.read_bytes() == NEW
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644


@pytest.fixture
def bind_mounted(tmp_path):
    """etc/docker/daemon.json bind-mounted from host.json, as `docker run -v FILE:FILE` does."""
    if not IS_ROOT:
        pytest.skip("bind mounts need root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount are not installed")
    host = tmp_path / "host.json"
    host.write_bytes(OLD)
    etc = tmp_path / "etc"
    etc.mkdir()
    target = etc / "daemon.json"
    target.write_bytes(b"")
    done = subprocess.run(["mount", "--bind", str(host), str(target)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        pytest.skip("mount --bind was refused here: {}".format(
            done.stdout.decode(errors="replace").strip()))
    try:
        yield host, target
    finally:
        if subprocess.run(["umount", str(target)]).returncode != 0:
            subprocess.run(["umount", "-l", str(target)])


def test_real_bind_mount_needs_in_place(bind_mounted):
    host, target = bind_mounted
    assert files._is_mount_point(str(target))
    snap = read_snapshot(str(target))
    assert snap.data == OLD
    with pytest.raises(WriteFailed) as info:
        write_atomically(snap, NEW)
    assert info.value.reference == "bind-mounted"
    assert "--in-place" in info.value.hint
    assert host.read_bytes() == OLD
    assert temps_in(str(target.parent)) == []

    write_atomically(snap, NEW, in_place=True)
    assert target.read_bytes() == NEW
    assert host.read_bytes() == NEW  # written through the mount to the host's file
    assert temps_in(str(target.parent)) == []


def test_real_bind_mount_cannot_be_removed(bind_mounted):
    host, target = bind_mounted
    with pytest.raises(WriteFailed) as info:
        remove_file(read_snapshot(str(target)))
    assert info.value.reference == "bind-mounted"
    assert host.read_bytes() == OLD


# ---------------------------------------------------------------------------------------------
# stale temps


def test_remove_stale_temps_only_removes_dead_writers(etc):
    dead = dead_pid()
    stale = ".daemon.json.nvdocker-{}-abc123.tmp".format(dead)
    alive_mine = ".daemon.json.nvdocker-{}-def456.tmp".format(os.getpid())
    alive_init = ".daemon.json.nvdocker-1-0a0b0c.tmp"
    other_file = ".other.json.nvdocker-{}-abc123.tmp".format(dead)
    admin_file = "daemon.json.nvdocker-{}-abc123.tmp.bak".format(dead)
    for name in (stale, alive_mine, alive_init, other_file, admin_file):
        (etc / name).write_bytes(b"x")
    os.mkdir(str(etc / ".daemon.json.nvdocker-{}-dir.tmp".format(dead)))

    assert remove_stale_temps(str(etc), "daemon.json") == [stale]
    left = set(os.listdir(str(etc)))
    assert stale not in left
    assert {alive_mine, alive_init, other_file, admin_file} <= left
    assert remove_stale_temps(str(etc), "daemon.json") == []


def test_remove_stale_temps_missing_directory(tmp_path):
    assert remove_stale_temps(str(tmp_path / "nope"), "daemon.json") == []


def test_write_removes_stale_temps_first(daemon_json):
    stale = daemon_json.parent / ".daemon.json.nvdocker-{}-abc.tmp".format(dead_pid())
    stale.write_bytes(b"half")
    write_atomically(read_snapshot(str(daemon_json)), NEW)
    assert not stale.exists()
    assert daemon_json.read_bytes() == NEW


# ---------------------------------------------------------------------------------------------
# remove_file


def test_remove_file(daemon_json):
    steps = []
    remove_file(read_snapshot(str(daemon_json)), step_hook=steps.append)
    assert not daemon_json.exists()
    assert tuple(steps) == files.REMOVE_STEPS


def test_remove_file_refuses_changed_file(daemon_json):
    snap = read_snapshot(str(daemon_json))
    daemon_json.write_bytes(b"{}\n")
    with pytest.raises(ConcurrentModification) as info:
        remove_file(snap)
    assert "nothing was removed" in info.value.message
    assert daemon_json.read_bytes() == b"{}\n"


def test_remove_file_of_missing_file_is_a_no_op(etc):
    remove_file(read_snapshot(str(etc / "daemon.json")))
    assert not (etc / "daemon.json").exists()


def test_remove_file_through_symlink_removes_target_only(etc, tmp_path):
    target = tmp_path / "real.json"
    target.write_bytes(OLD)
    link = etc / "daemon.json"
    os.symlink(str(target), str(link))
    remove_file(read_snapshot(str(link)))
    assert not target.exists()
    assert os.path.islink(str(link))


# ---------------------------------------------------------------------------------------------
# fault injection: SIGKILL after every step


def _crash(path, step, tmp_path):
    new_file = tmp_path / "new-bytes"
    new_file.write_bytes(NEW_BIG)
    child = subprocess.run(
        [sys.executable, CRASH_WRITER, str(path), step, str(new_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")


#: Big enough that a torn write would show (several write(2) calls' worth of page cache).
OLD_BIG = OLD + b" " * (256 * 1024) + b"\n"
NEW_BIG = NEW + b"\t" * (300 * 1024) + b"\n"


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_existing_file(daemon_json, tmp_path, step):
    daemon_json.write_bytes(OLD_BIG)
    os.chmod(str(daemon_json), 0o640)
    _crash(daemon_json, step, tmp_path)

    expected = NEW_BIG if STEPS.index(step) >= STEPS.index("renamed") else OLD_BIG
    assert daemon_json.read_bytes() == expected
    assert stat.S_IMODE(os.stat(str(daemon_json)).st_mode) == 0o640
    if STEPS.index(step) < STEPS.index("renamed"):
        assert len(temps_in(str(daemon_json.parent))) == 1  # what SIGKILL leaves behind

    final = b'{"after": "crash"}\n'
    write_atomically(read_snapshot(str(daemon_json)), final)
    assert daemon_json.read_bytes() == final
    assert stat.S_IMODE(os.stat(str(daemon_json)).st_mode) == 0o640
    assert temps_in(str(daemon_json.parent)) == []


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_missing_file(etc, tmp_path, step):
    path = etc / "daemon.json"
    _crash(path, step, tmp_path)

    if STEPS.index(step) >= STEPS.index("renamed"):
        assert path.read_bytes() == NEW_BIG
        assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o644
    else:
        assert not os.path.lexists(str(path))

    final = b'{"after": "crash"}\n'
    write_atomically(read_snapshot(str(path)), final)
    assert path.read_bytes() == final
    assert temps_in(str(etc)) == []


def _crash_in_place(path, step, data, tmp_path):
    new_file = tmp_path / "new-bytes"
    new_file.write_bytes(data)
    child = subprocess.run(
        [sys.executable, CRASH_WRITER, str(path), step, str(new_file), "--in-place"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")


@pytest.mark.parametrize("step", files.IN_PLACE_STEPS)
@pytest.mark.parametrize("shrinks", [True, False], ids=["new-shorter", "new-longer"])
def test_sigkill_during_in_place_write_never_leaves_a_short_file(daemon_json, tmp_path, step, shrinks):
    old, new = (NEW_BIG, OLD) if shrinks else (OLD, NEW_BIG)
    daemon_json.write_bytes(old)
    inode = os.stat(str(daemon_json)).st_ino
    _crash_in_place(daemon_json, step, new, tmp_path)

    left = daemon_json.read_bytes()
    assert os.stat(str(daemon_json)).st_ino == inode
    # Never truncated first: the file is at least as long as the old one (the kill came before
    # the cut to length), its head is the new bytes written so far, its tail the old bytes.
    assert len(left) == max(len(old), len(new) if step == "in-place-written" else len(new) // 2)
    written = len(new) if step == "in-place-written" else len(new) // 2
    assert left[:written] == new[:written]
    assert left[written:] == old[written:]


def test_in_place_write_error_puts_the_original_bytes_back(daemon_json, monkeypatch):
    daemon_json.write_bytes(OLD_BIG)
    real_pwrite = os.pwrite
    calls = []

    def failing_pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) == 2:  # the second half of the new bytes: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(WriteFailed):
        write_atomically(read_snapshot(str(daemon_json)), NEW_BIG, in_place=True)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    assert daemon_json.read_bytes() == OLD_BIG
