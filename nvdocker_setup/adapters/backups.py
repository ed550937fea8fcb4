"""Backups of daemon.json taken before every change, so any edit can be undone byte for byte.

Each backup is a private copy ``<name>.json`` plus a record in ``manifest.json`` (a JSON list)
that keeps what the copy cannot: whether the file existed at all, its original mode and owner,
its sha256 and why it was taken. Copies are written before the manifest that names them, and the
manifest is replaced atomically, so a crash never leaves a record without its copy.
"""

import datetime
import errno
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional

from nvdocker_setup.adapters import statedir
from nvdocker_setup.adapters.files import FileSnapshot
from nvdocker_setup.errors import NotFound, NvdockerError, UsageError, WriteFailed

MANIFEST = "manifest.json"
DIRECTORY_MODE = 0o700
COPY_MODE = 0o600

_NAME = re.compile(r"\A([0-9]{8}T[0-9]{6}\.[0-9]{6}Z)-([0-9]{1,12})\Z")
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
#: Largest uid/gid the kernel hands out ((uid_t)-1 means "no change" and is refused).
_MAX_ID = 2 ** 32 - 2


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError("{} is not JSON".format(name))


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class Backup:
    """One stored version of daemon.json, or the record that it did not exist."""

    #: UTC time + store-wide sequence, e.g. "20261128T133000.123456Z-0001": sorts by age.
    name: str
    #: ISO-8601 UTC.
    created: str
    #: The daemon.json that was backed up (its real path).
    source: str
    #: False: the file did not exist, so restoring this backup means removing the file.
    existed: bool
    sha256: Optional[str]
    size: Optional[int]
    mode: Optional[int]
    uid: Optional[int]
    gid: Optional[int]
    #: e.g. "install nvidia", "uninstall nvidia", "restore 2026...".
    reason: str
    #: Absolute path of the stored copy; None when ``existed`` is False.
    file: Optional[str]

    @property
    def sequence(self) -> int:
        """Store-wide creation counter: orders backups even if the clock stepped back."""
        match = _NAME.match(self.name)
        return int(match.group(2)) if match else 0


_FIELD_TYPES: Dict[str, Any] = {
    "name": str,
    "created": str,
    "source": str,
    "existed": bool,
    "sha256": (str, type(None)),
    "size": (int, type(None)),
    "mode": (int, type(None)),
    "uid": (int, type(None)),
    "gid": (int, type(None)),
    "reason": str,
    "file": (str, type(None)),
}


class BackupStore:
    """The backups directory: save, list, find and read backups; rotate old ones away.

    Not safe for concurrent writers on its own: callers hold the :class:`FileLock`.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 10,
        clock: Callable[[], datetime.datetime] = _utc_now,
        trusted_uids: Optional[Iterable[int]] = None,
    ) -> None:
        if keep < 1:
            raise UsageError(
                "cannot keep {} backups: at least one is needed to undo a change".format(keep),
                hint="pass a positive number of backups to keep",
            )
        self.directory = os.path.abspath(directory)
        self.keep = keep
        self._clock = clock
        self.trusted_uids = tuple(trusted_uids) if trusted_uids is not None else statedir.trusted_uids()

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.directory, MANIFEST)

    # ---------------------------------------------------------------------------------------
    # Reading

    def _corrupt(self, why: str) -> NvdockerError:
        return statedir.StateDamaged(
            "the backup manifest {} is corrupt: {}".format(self.manifest_path, why),
            hint="inspect or repair it by hand; the copies next to it are intact "
            "(nothing was deleted)",
            reference="backup-manifest-corrupt",
        )

    def _load(self) -> List[Backup]:
        """All records, in creation order; missing or empty manifest = none, garbage = error."""
        if not statedir.check_directory(self.directory, self.trusted_uids, create=False):
            return []
        try:
            raw = statedir.read_private(self.manifest_path, self.trusted_uids)
        except OSError as exc:
            raise NvdockerError(
                "cannot read the backup manifest {}: {}".format(
                    self.manifest_path, exc.strerror or exc
                ),
                hint="run nvdocker-setup as root (sudo)",
                details=[str(exc)],
                reference="backup-manifest-unreadable",
            ) from exc
        if raw is None or not raw.strip():
            return []
        try:
            records = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except RecursionError:
            raise self._corrupt("nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._corrupt("not valid JSON ({})".format(exc)) from exc
        if not isinstance(records, list):
            raise self._corrupt("expected a JSON list of backups")
        backups = []
        seen = set()
        for index, record in enumerate(records):
            backup = self._parse(index, record)
            if backup.name in seen:
                raise self._corrupt("backup {} is listed twice".format(backup.name))
            seen.add(backup.name)
            backups.append(backup)
        backups.sort(key=lambda b: (b.sequence, b.name))
        return backups

    def _parse(self, index: int, record: Any) -> Backup:
        """Check one record's shape; the copy's path is re-based into this directory."""
        if not isinstance(record, dict):
            raise self._corrupt("entry {} is not an object".format(index))
        values = {}
        for key, kinds in _FIELD_TYPES.items():
            if key not in record:
                raise self._corrupt("entry {} has no {!r}".format(index, key))
            value = record[key]
            if isinstance(value, bool) and kinds is not bool:
                raise self._corrupt("entry {} has a bad {!r}".format(index, key))
            if not isinstance(value, kinds):
                raise self._corrupt("entry {} has a bad {!r}".format(index, key))
            values[key] = value
        if not _NAME.match(values["name"]):
            raise self._corrupt("entry {} has a bad name {!r}".format(index, values["name"][:80]))
        for key in ("created", "source", "reason", "sha256", "file"):
            text = values[key]
            if isinstance(text, str) and (len(text) > 4096 or "\0" in text or _has_surrogate(text)):
                raise self._corrupt("entry {} has a bad {!r}".format(index, key))
        if not os.path.isabs(values["source"]):
            raise self._corrupt("entry {} has a relative source".format(index))
        if values["sha256"] is not None and not _SHA256.match(values["sha256"]):
            raise self._corrupt("entry {} has a bad 'sha256'".format(index))
        for key, top in (("uid", _MAX_ID), ("gid", _MAX_ID), ("mode", 0o7777), ("size", 2 ** 62)):
            if values[key] is not None and not 0 <= values[key] <= top:
                raise self._corrupt("entry {} has an out-of-range {!r}".format(index, key))
        if values["existed"] and (values["file"] is None or values["sha256"] is None):
            raise self._corrupt("entry {} has no copy".format(index))
        if values["file"] is not None:
            # Never follow a manifest outside the store (and survive the store being moved).
            values["file"] = os.path.join(self.directory, values["name"] + ".json")
        return Backup(**values)

    def list(self, source: Optional[str] = None) -> List[Backup]:
        """Backups, oldest first; only those of ``source`` when given."""
        backups = self._load()
        if source is None:
            return backups
        wanted = {source, os.path.realpath(source)}
        return [b for b in backups if b.source in wanted]

    def get(self, name: str) -> Backup:
        """The backup called ``name``, or the only one whose name starts with it."""
        backups = self._load()
        for backup in backups:
            if backup.name == name:
                return backup
        matches = [b for b in backups if name and b.name.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                "backup name {!r} is ambiguous: {} backups start with it".format(
                    name, len(matches)
                ),
                hint="give more of the name (see `nvdocker-setup backups`)",
                details=[b.name for b in matches],
                reference="backup-ambiguous",
            )
        raise NotFound(
            "no backup named {!r} in {}".format(name, self.directory),
            hint="list the available backups with `nvdocker-setup backups`",
            reference="backup-not-found",
        )

    def latest(self, source: Optional[str] = None) -> Backup:
        """The most recent backup (of ``source``); :class:`NotFound` when there is none."""
        backups = self.list(source)
        if not backups:
            raise NotFound(
                "no backups{} in {}".format(
                    " of {}".format(source) if source else "", self.directory
                ),
                hint="backups are taken automatically before each change",
                reference="backup-not-found",
            )
        return backups[-1]

    def read(self, backup: Backup) -> bytes:
        """The backed-up bytes, verified against the recorded sha256 (b"" if it did not exist)."""
        if not backup.existed:
            return b""
        if backup.file is None:
            raise NotFound(
                "backup {} has no stored copy".format(backup.name),
                reference="backup-corrupt",
            )
        try:
            data = statedir.read_private(backup.file, self.trusted_uids)
        except OSError as exc:
            raise NotFound(
                "cannot read the copy of backup {}: {}".format(backup.name, exc.strerror or exc),
                hint="run nvdocker-setup as root (sudo)",
                details=[str(exc)],
                reference="backup-unreadable",
            ) from exc
        if data is None:
            raise NotFound(
                "the copy of backup {} is missing: {}".format(backup.name, backup.file),
                hint="choose another backup (see `nvdocker-setup backups`)",
                reference="backup-missing",
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != backup.sha256 or (backup.size is not None and len(data) != backup.size):
            raise NotFound(
                "backup {} is corrupt: its copy does not match the recorded sha256".format(
                    backup.name
                ),
                hint="choose another backup (see `nvdocker-setup backups`); refusing to restore "
                "damaged bytes",
                details=[
                    "file: {}".format(backup.file),
                    "expected sha256 {}, found {}".format(backup.sha256, digest),
                ],
                reference="backup-corrupt",
            )
        return data

    # ---------------------------------------------------------------------------------------
    # Writing

    def _now(self) -> datetime.datetime:
        now = self._clock()
        if now.tzinfo is None:  # a naive clock is taken to be UTC already
            return now.replace(tzinfo=datetime.timezone.utc)
        return now.astimezone(datetime.timezone.utc)

    def save(self, snapshot: FileSnapshot, reason: str, protect: Iterable[str] = ()) -> Backup:
        """Store ``snapshot`` (or the fact that the file was missing) and rotate old backups.

        Rotation keeps the newest ``keep`` backups of the same file, and never deletes one named
        in ``protect`` (the backups install records depend on to undo exactly)."""
        existing = self._load()
        self._ensure_directory()
        now = self._now()
        sequence = max((b.sequence for b in existing), default=0) + 1
        name = "{}-{:04d}".format(now.strftime("%Y%m%dT%H%M%S.%fZ"), sequence)
        copy_path = os.path.join(self.directory, name + ".json") if snapshot.exists else None
        backup = Backup(
            name=name,
            created=now.isoformat(timespec="microseconds"),
            source=snapshot.real_path,
            existed=snapshot.exists,
            sha256=hashlib.sha256(snapshot.data).hexdigest() if snapshot.exists else None,
            size=len(snapshot.data) if snapshot.exists else None,
            mode=snapshot.mode,
            uid=snapshot.uid,
            gid=snapshot.gid,
            reason=reason,
            file=copy_path,
        )
        if copy_path is not None:
            self._write_private(copy_path, snapshot.data)

        records = existing + [backup]
        protected = set(protect)
        same_source = [b for b in records if b.source == backup.source and b.name not in protected]
        doomed = same_source[: max(0, len(same_source) - self.keep)]
        doomed_names = {b.name for b in doomed}
        kept = [b for b in records if b.name not in doomed_names]
        manifest = json.dumps([asdict(b) for b in kept], indent=2, sort_keys=True) + "\n"
        self._write_private(self.manifest_path, manifest.encode("utf-8"))
        # Only now that no record names them may the old copies go.
        for old in doomed:
            if old.file is not None:
                try:
                    os.unlink(old.file)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise self._write_failed("remove old backup", old.file, exc) from exc
        if doomed:
            self._fsync_directory()
        return backup

    def discard(self, backup: Backup) -> None:
        """Forget a backup just taken for a write that then failed, so that failed attempts do
        not push real backups out of the rotation. Its record goes first, then its copy."""
        records = [b for b in self._load() if b.name != backup.name]
        manifest = json.dumps([asdict(b) for b in records], indent=2, sort_keys=True) + "\n"
        self._write_private(self.manifest_path, manifest.encode("utf-8"))
        if backup.file is not None:
            try:
                os.unlink(backup.file)
            except OSError:
                pass

    def _write_failed(self, action: str, path: str, exc: OSError) -> WriteFailed:
        return WriteFailed(
            "cannot {} {}: {}".format(action, path, exc.strerror or exc),
            hint="check free space and permissions of the state directory; "
            "daemon.json was not changed",
            details=[str(exc)],
            reference="backup-failed",
        )

    def _ensure_directory(self) -> None:
        """Backups may hold secrets (registry mirrors, TLS paths): a private, trusted directory."""
        statedir.check_directory(os.path.dirname(self.directory), self.trusted_uids, create=True)
        statedir.check_directory(self.directory, self.trusted_uids, create=True)

    def _fsync_directory(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise self._write_failed("sync", self.directory, exc) from exc

    def _write_private(self, path: str, data: bytes) -> None:
        """Write ``path`` (mode 0600) via temp + fsync + rename, so it is whole or absent."""
        statedir.write_private(path, data, reference="backup-failed")

    def __repr__(self) -> str:
        return "BackupStore({!r}, keep={})".format(self.directory, self.keep)

