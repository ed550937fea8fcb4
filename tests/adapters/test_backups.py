"""Tests for the backup store, on a real temp directory with a fixed clock."""

import datetime
import hashlib
import json
import os
import stat

import pytest

from nvdocker_setup.adapters.backups import MANIFEST, Backup, BackupStore
from nvdocker_setup.adapters.files import read_snapshot
from nvdocker_setup.errors import NotFound, NvdockerError, UsageError

UTC = datetime.timezone.utc
ORIGINAL = b'{\n  "log-driver": "journald" ,\n  "debug": true\n}\n'  # odd spacing kept verbatim


class Clock:
    """Returns the same instant until moved, to prove same-microsecond backups still sort."""

    def __init__(self, start=datetime.datetime(2026, 11, 28, 13, 30, 0, 123456, tzinfo=UTC)):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, **kwargs):
        self.now += datetime.timedelta(**kwargs)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    return BackupStore(str(tmp_path / "state" / "backups"), keep=3, clock=clock)


@pytest.fixture
def daemon_json(tmp_path):
    path = tmp_path / "etc" / "daemon.json"
    path.parent.mkdir()
    path.write_bytes(ORIGINAL)
    os.chmod(str(path), 0o640)
    return path


def test_save_and_read_round_trip(store, daemon_json):
    snap = read_snapshot(str(daemon_json))
    backup = store.save(snap, "install nvidia")

    assert backup.name == "20261128T133000.123456Z-0001"
    assert backup.created == "2026-11-28T13:30:00.123456+00:00"
    assert backup.source == os.path.realpath(str(daemon_json))
    assert backup.existed
    assert backup.sha256 == hashlib.sha256(ORIGINAL).hexdigest()
    assert backup.size == len(ORIGINAL)
    assert backup.mode == 0o640
    assert (backup.uid, backup.gid) == (snap.uid, snap.gid)
    assert backup.reason == "install nvidia"
    assert backup.file == os.path.join(store.directory, backup.name + ".json")

    assert store.read(backup) == ORIGINAL
    with open(backup.file, "rb") as handle:
        assert handle.read() == ORIGINAL
    assert stat.S_IMODE(os.stat(backup.file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700

    assert store.list() == [backup]
    assert store.get(backup.name) == backup
    assert store.latest() == backup
    assert store.latest(str(daemon_json)) == backup


def test_manifest_is_a_json_list_and_private(store, daemon_json):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    with open(store.manifest_path) as handle:
        records = json.load(handle)
    assert isinstance(records, list) and len(records) == 1
    assert records[0]["name"] == backup.name
    assert records[0]["mode"] == 0o640
    assert stat.S_IMODE(os.stat(store.manifest_path).st_mode) == 0o600
    assert [n for n in os.listdir(store.directory) if n.endswith(".tmp")] == []


def test_absent_file_backup(store, tmp_path):
    snap = read_snapshot(str(tmp_path / "etc" / "daemon.json"))
    backup = store.save(snap, "install nvidia")
    assert not backup.existed
    assert backup.file is None
    assert (backup.sha256, backup.size, backup.mode, backup.uid, backup.gid) == (None,) * 5
    assert store.read(backup) == b""
    assert store.latest() == backup
    assert os.listdir(store.directory) == [MANIFEST]


def test_names_sort_by_time_then_sequence(store, daemon_json, clock):
    snap = read_snapshot(str(daemon_json))
    first = store.save(snap, "one")
    second = store.save(snap, "two")  # same microsecond
    clock.advance(seconds=1)
    third = store.save(snap, "three")
    names = [first.name, second.name, third.name]
    assert names == sorted(names)
    assert first.name.endswith("-0001") and second.name.endswith("-0002")
    assert third.name == "20261128T133001.123456Z-0003"
    assert [b.name for b in store.list()] == names
    assert store.latest() == third


def test_sequence_keeps_order_when_clock_steps_back(store, daemon_json, clock):
    snap = read_snapshot(str(daemon_json))
    store.save(snap, "one")
    clock.advance(hours=-1)  # NTP correction
    later = store.save(snap, "two")
    assert later.name.endswith("-0002")
    assert store.latest() == later
    assert [b.reason for b in store.list()] == ["one", "two"]


def test_naive_and_non_utc_clocks_are_recorded_in_utc(tmp_path, daemon_json):
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    store = BackupStore(str(tmp_path / "b1"),
                        clock=lambda: datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=plus_two))
    backup = store.save(read_snapshot(str(daemon_json)), "x")
    assert backup.name.startswith("20260102T010405.000000Z-")
    assert backup.created == "2026-01-02T01:04:05.000000+00:00"
    naive = BackupStore(str(tmp_path / "b2"), clock=lambda: datetime.datetime(2026, 1, 2, 3, 4, 5))
    assert naive.save(read_snapshot(str(daemon_json)), "x").name.startswith("20260102T030405")


def test_rotation_keeps_newest_per_source(store, daemon_json, tmp_path, clock):
    other = tmp_path / "other.json"
    other.write_bytes(b"{}")
    other_backup = store.save(read_snapshot(str(other)), "other")
    saved = []
    for index in range(5):
        clock.advance(seconds=1)
        daemon_json.write_bytes(ORIGINAL + str(index).encode())
        saved.append(store.save(read_snapshot(str(daemon_json)), "change {}".format(index)))

    kept = store.list(str(daemon_json))
    assert kept == saved[-3:]
    assert store.list(str(other)) == [other_backup]  # another source is not rotated away
    for gone in saved[:2]:
        assert not os.path.exists(gone.file)
        with pytest.raises(NotFound):
            store.get(gone.name)
    for backup in kept:
        assert store.read(backup) == ORIGINAL + backup.reason[-1:].encode()
    copies = sorted(n for n in os.listdir(store.directory) if n != MANIFEST)
    assert copies == sorted(os.path.basename(b.file) for b in store.list())


def test_sequence_survives_rotation(store, daemon_json):
    snap = read_snapshot(str(daemon_json))
    for _ in range(5):
        last = store.save(snap, "again")
    assert last.name.endswith("-0005")
    assert store.save(snap, "again").name.endswith("-0006")


def test_list_filters_by_source_through_symlinks(store, daemon_json, tmp_path):
    link = tmp_path / "link.json"
    os.symlink(str(daemon_json), str(link))
    backup = store.save(read_snapshot(str(link)), "via link")
    assert backup.source == os.path.realpath(str(daemon_json))
    assert store.list(str(link)) == [backup]
    assert store.list(str(tmp_path / "elsewhere.json")) == []


def test_get_by_unique_prefix(store, daemon_json, clock):
    snap = read_snapshot(str(daemon_json))
    first = store.save(snap, "one")
    clock.advance(days=1)
    second = store.save(snap, "two")
    assert store.get("20261129") == second
    assert store.get("20261128T13") == first
    assert store.get(first.name) == first
    with pytest.raises(UsageError) as info:
        store.get("2026")
    assert info.value.reference == "backup-ambiguous"
    assert set(info.value.details) == {first.name, second.name}
    with pytest.raises(NotFound):
        store.get("1999")
    with pytest.raises(NotFound):
        store.get("")


def test_empty_store(tmp_path):
    store = BackupStore(str(tmp_path / "never-created"))
    assert store.list() == []
    with pytest.raises(NotFound) as info:
        store.latest()
    assert info.value.hint
    with pytest.raises(NotFound):
        store.get("2026")
    assert not os.path.exists(str(tmp_path / "never-created"))


def test_empty_manifest_means_no_backups(store):
    os.makedirs(store.directory)
    with open(store.manifest_path, "w") as handle:
        handle.write("  \n")
    assert store.list() == []


def test_sha_mismatch_is_detected(store, daemon_json):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    with open(backup.file, "r+b") as handle:
        handle.write(b"[")  # same size, different bytes
    with pytest.raises(NotFound) as info:
        store.read(backup)
    assert info.value.reference == "backup-corrupt"
    assert "sha256" in info.value.message


def test_missing_copy_is_detected(store, daemon_json):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    os.unlink(backup.file)
    with pytest.raises(NotFound) as info:
        store.read(backup)
    assert info.value.reference == "backup-missing"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"name": "x"}',
        b"[1, 2]",
        b'[{"name": "x"}]',
        b"\xff\xfe",
    ],
)
def test_corrupt_manifest_is_a_clear_error(store, daemon_json, content):
    store.save(read_snapshot(str(daemon_json)), "install nvidia")
    with open(store.manifest_path, "wb") as handle:
        handle.write(content)
    with pytest.raises(NvdockerError) as info:
        store.list()
    assert info.value.reference == "backup-manifest-corrupt"
    assert store.manifest_path in info.value.message
    with pytest.raises(NvdockerError):
        store.save(read_snapshot(str(daemon_json)), "again")  # never silently drop records
    with open(store.manifest_path, "rb") as handle:
        assert handle.read() == content


def test_manifest_record_with_wrong_types_is_corrupt(store, daemon_json):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    with open(store.manifest_path) as handle:
        records = json.load(handle)
    records[0]["size"] = True
    with open(store.manifest_path, "w") as handle:
        json.dump(records, handle)
    with pytest.raises(NvdockerError) as info:
        store.get(backup.name)
    assert info.value.reference == "backup-manifest-corrupt"


def test_manifest_cannot_point_outside_the_store(store, daemon_json, tmp_path):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    with open(store.manifest_path) as handle:
        records = json.load(handle)
    records[0]["file"] = "/etc/shadow"
    with open(store.manifest_path, "w") as handle:
        json.dump(records, handle)
    assert store.get(backup.name).file == backup.file


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(UsageError):
        BackupStore(str(tmp_path), keep=0)


def test_backup_is_frozen(store, daemon_json):
    backup = store.save(read_snapshot(str(daemon_json)), "install nvidia")
    assert isinstance(backup, Backup)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        backup.name = "other"  # type: ignore[misc]
