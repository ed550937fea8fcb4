"""What every engine's install and uninstall share: the request, the install record, the plan.

A plan holds the new document and an :class:`InstallRecord`, the memory of what install changed.
Uninstall reads that record and undoes exactly those changes, and only while they are still ours:
an entry whose path the admin changed since, or a default runtime they switched, is left alone.
"""

import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from nvdocker_setup.core.jsondoc import JsonDocument
from nvdocker_setup.errors import UsageError

#: Runtimes whose place as default we may take without --force: they are Docker's own.
DOCKER_DEFAULT_RUNTIMES = ("runc", "io.containerd.runc.v2")



@dataclass(frozen=True)
class InstallRequest:
    runtime_name: str
    runtime_path: str
    runtime_args: Tuple[str, ...] = ()
    set_default: bool = False
    enable_cdi: bool = False
    #: Replace another tool's runtimes.<name> entry, or a default runtime other than Docker's own.
    force: bool = False
    #: Accept a runtime binary that is missing (also as the default), unsafe, or creatable by a non-root user.
    allow_unsafe_runtime: bool = False
    #: Write mode: None (the engine's default), "in-place" (edit the config file), "drop-in" (a file of ours
    #: that the config file imports; engines without drop-ins refuse it).
    write_mode: Optional[str] = None
    #: The drop-in file (None: the engine's default place).
    drop_in_path: Optional[str] = None


@dataclass(frozen=True)
class ExtraFile:
    """A second file an install wrote besides the config file (a drop-in), kept in the config file's record:
    the same undo facts as the record's own (``original_backup``: its bytes before, ``history_sha256``:
    every version our installs wrote)."""

    path: str
    file_existed: bool = False
    original_backup: Optional[str] = None
    installed_sha256: Optional[str] = None
    history_sha256: Tuple[str, ...] = ()
    #: The directory install created for it (uninstall removes it when empty again).
    created_dir: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["history_sha256"] = list(self.history_sha256)
        return data

    def with_written(self, sha256: str) -> "ExtraFile":
        history = tuple(h for h in self.history_sha256 if h != sha256) + (sha256,)
        return replace(self, installed_sha256=sha256, history_sha256=history[-HISTORY_LIMIT:])

    def written_hashes(self) -> Tuple[str, ...]:
        return self.history_sha256 + ((self.installed_sha256,) if self.installed_sha256 else ())

    @classmethod
    def from_dict(cls, data: Any) -> "ExtraFile":
        if not isinstance(data, dict) or set(data) - _EXTRA_FIELDS.keys():
            raise ValueError("an extra file is not an object of known fields")
        for key, kinds in _EXTRA_FIELDS.items():
            if key in data and not isinstance(data[key], kinds):
                raise ValueError("extra file {!r} has the wrong type".format(key))
        path = data.get("path")
        if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path or len(path) > 4096:
            raise ValueError("an extra file's path is not an absolute path")
        created = data.get("created_dir")
        if created is not None and (not os.path.isabs(created) or os.path.dirname(path) != created):
            raise ValueError("an extra file's created_dir is not its directory")
        if data.get("original_backup") is not None and not _BACKUP_NAME.match(data["original_backup"]):
            raise ValueError("an extra file's 'original_backup' is not a backup name")
        hashes = list(data.get("history_sha256") or ()) + [data.get("installed_sha256") or "0" * 64]
        if not all(isinstance(h, str) and _SHA256.match(h) for h in hashes):
            raise ValueError("an extra file's sha256 is not a sha256")
        values = {key: data[key] for key in _EXTRA_FIELDS if key in data}
        values["history_sha256"] = tuple(values.get("history_sha256") or ())[-HISTORY_LIMIT:]
        return cls(**values)


@dataclass(frozen=True)
class InstallRecord:
    """What install changed, kept in the state file so that uninstall can undo exactly that.

    Values describe the file as it was before the *first* install that touched them; a later
    install (say, adding --default-runtime) only adds to the record.
    """

    runtime_name: str
    entry: Dict[str, Any]
    #: The engine whose config this record describes (records written before engines existed: docker).
    engine: str = "docker"
    file_existed: bool = True
    #: The entry under our name before we replaced it (None: there was none).
    previous_entry: Optional[Dict[str, Any]] = None
    runtimes_created: bool = False
    default_changed: bool = False
    previous_default: Optional[str] = None
    cdi_changed: bool = False
    previous_cdi: Optional[Any] = None
    features_created: bool = False
    #: Backup taken before the first change and sha256 of the file after the last one:
    #: when the file still has that hash, uninstall restores the backup byte for byte.
    original_backup: Optional[str] = None
    installed_sha256: Optional[str] = None
    #: sha256 of every version of the file our installs wrote (oldest first, at most
    #: HISTORY_LIMIT): the file still being one of them means nobody else changed it since.
    history_sha256: Tuple[str, ...] = ()
    #: Tables install created on the way to its entry (an engine's own dotted paths, outermost
    #: first): uninstall removes those that are empty again.
    created_tables: Tuple[str, ...] = ()
    #: Other files this install wrote (a drop-in), written before this file on install and after it
    #: on uninstall; each undone exactly like this one.
    extra_files: Tuple[ExtraFile, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["history_sha256"] = list(self.history_sha256)
        data["created_tables"] = list(self.created_tables)
        if self.extra_files:
            data["extra_files"] = [extra.to_dict() for extra in self.extra_files]
        else:
            data.pop("extra_files")
        return data

    def extra(self, path: str) -> Optional[ExtraFile]:
        for extra in self.extra_files:
            if extra.path == path:
                return extra
        return None

    def with_written(self, sha256: str) -> "InstallRecord":
        """This record after a write that left the file with ``sha256``."""
        history = tuple(h for h in self.history_sha256 if h != sha256) + (sha256,)
        return replace(self, installed_sha256=sha256, history_sha256=history[-HISTORY_LIMIT:])

    def written_hashes(self) -> Tuple[str, ...]:
        return self.history_sha256 + ((self.installed_sha256,) if self.installed_sha256 else ())

    @classmethod
    def from_dict(cls, data: Any) -> "InstallRecord":
        """A record read back from the state file, checked like user input: ``ValueError``
        names the first field that is not what install writes."""
        if not isinstance(data, dict):
            raise ValueError("a record is not an object")
        for key, kinds in _RECORD_FIELDS.items():
            if key not in data:
                if key in _REQUIRED_FIELDS:
                    raise ValueError("a record has no {!r}".format(key))
                continue
            value = data[key]
            if not isinstance(value, kinds):
                raise ValueError("{!r} has the wrong type".format(key))
        bad = _bad_value(data)
        if bad is not None:
            raise ValueError(bad)
        problem = runtime_name_problem(data["runtime_name"])
        if problem is not None:
            raise ValueError(problem)
        engine = data.get("engine", "docker")
        if engine not in RECORD_ENGINES:
            raise ValueError("'engine' is not one of {}".format(", ".join(RECORD_ENGINES)))
        for key in ("entry", "previous_entry"):
            entry = data.get(key)
            if entry is None:
                continue
            if key == "previous_entry" and isinstance(entry, dict) and entry_binary(engine, entry) is None:
                continue  # someone else's entry naming no binary: dockerd's runtimeType, a kata or plain runc handler
            if not isinstance(entry_binary(engine, entry), str):
                raise ValueError("{!r} names no runtime binary".format(key))
        if data.get("previous_default") is not None and runtime_name_problem(data["previous_default"]) and (
            data["previous_default"] not in DOCKER_DEFAULT_RUNTIMES
        ):
            raise ValueError("'previous_default' is not a runtime name")
        if data.get("original_backup") is not None and not _BACKUP_NAME.match(data["original_backup"]):
            raise ValueError("'original_backup' is not a backup name")
        hashes = list(data.get("history_sha256") or ()) + [data.get("installed_sha256") or "0" * 64]
        if not all(isinstance(h, str) and _SHA256.match(h) for h in hashes):
            raise ValueError("a recorded sha256 is not a sha256")
        values = {key: data[key] for key in _RECORD_FIELDS if key in data}
        values["history_sha256"] = tuple(values.get("history_sha256") or ())[-HISTORY_LIMIT:]
        values["created_tables"] = tuple(values.get("created_tables") or ())
        if not all(isinstance(t, str) and t for t in values["created_tables"]):
            raise ValueError("'created_tables' holds something that is not a table path")
        extras = values.get("extra_files") or ()
        if len(extras) > 4:
            raise ValueError("'extra_files' names too many files")
        values["extra_files"] = tuple(ExtraFile.from_dict(extra) for extra in extras)
        return cls(**values)


#: Engines a record may belong to.
RECORD_ENGINES = ("docker", "containerd")


def entry_binary(engine: str, entry: Any) -> Any:
    """The runtime binary a recorded entry runs (not checked: the caller checks the type):
    dockerd's ``path``, containerd's ``options.BinaryName``."""
    if not isinstance(entry, dict):
        return None
    if engine == "containerd":
        options = entry.get("options")
        return options.get("BinaryName") if isinstance(options, dict) else None
    return entry.get("path")


HISTORY_LIMIT = 16
#: How deep a recorded runtime entry may nest (dockerd's own entries nest two levels).
_MAX_RECORD_DEPTH = 8


def _bad_value(value: Any, depth: int = 0) -> Optional[str]:
    """Why a value read back from the state file cannot be trusted as JSON we wrote (None: fine):
    no NUL or lone surrogate in any string, no NaN or infinity, bounded nesting and sizes."""
    if depth > _MAX_RECORD_DEPTH:
        return "nested too deeply"
    if isinstance(value, str):
        if len(value) > 4096 or "\0" in value:
            return "a string is too long or holds a NUL"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string is not valid Unicode"
        return None
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return "a number is not finite"
    if isinstance(value, dict):
        if len(value) > 256:
            return "an object is too large"
        for key, item in value.items():
            problem = _bad_value(key, depth + 1) or _bad_value(item, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        if len(value) > 256:
            return "a list is too long"
        for item in value:
            problem = _bad_value(item, depth + 1)
            if problem:
                return problem
    return None
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_BACKUP_NAME = re.compile(r"\A[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9]{1,12}\Z")
_RECORD_FIELDS: Dict[str, Any] = {
    "runtime_name": (str,),
    "entry": (dict,),
    "file_existed": (bool,),
    "previous_entry": (dict, type(None)),
    "runtimes_created": (bool,),
    "default_changed": (bool,),
    "previous_default": (str, type(None)),
    "cdi_changed": (bool,),
    "previous_cdi": (bool, str, int, float, type(None)),
    "features_created": (bool,),
    "original_backup": (str, type(None)),
    "installed_sha256": (str, type(None)),
    "history_sha256": (list,),
    "engine": (str,),
    "created_tables": (list,),
    "extra_files": (list,),
}
_EXTRA_FIELDS: Dict[str, Any] = {
    "path": (str,),
    "file_existed": (bool,),
    "original_backup": (str, type(None)),
    "installed_sha256": (str, type(None)),
    "history_sha256": (list,),
    "created_dir": (str, type(None)),
}
_REQUIRED_FIELDS = ("runtime_name", "entry")


@dataclass
class Plan:
    """A computed change: the new document, what it does in words, and the updated record."""

    before: JsonDocument
    after: JsonDocument
    changes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    record: Optional[InstallRecord] = None
    #: Other files the plan writes (a drop-in): written before the config file, undone with it.
    extra: List["FileChange"] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.after.text != self.before.text


@dataclass
class FileChange:
    """A second file of a plan: ``snapshot`` is the file as read under the lock, ``after`` the document
    to write (None: remove the file)."""

    snapshot: Any  # adapters.files.FileSnapshot (core does no I/O)
    before: Any
    after: Any

    @property
    def new_data(self) -> Optional[bytes]:
        return self.after.encode() if self.after is not None else None

    @property
    def changed(self) -> bool:
        if self.after is None:
            return bool(self.snapshot.exists)
        return not self.snapshot.exists or self.new_data != self.snapshot.data


#: What dockerd and containerd both accept as a runtime (handler) name, and what Kubernetes
#: allows a RuntimeClass handler to be (a DNS label, plus '_' and '.' that dockerd allows).
_RUNTIME_NAME = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?\Z")
#: Names dockerd gives a meaning of its own: its built-in runtime, and containerd shim names
#: (dockerd 23+ runs ``io.containerd.<x>.v<n>`` as a shim directly).
RESERVED_RUNTIME_NAMES = ("runc",)
RESERVED_RUNTIME_PREFIXES = ("io.containerd.",)


def runtime_name_problem(name: Any) -> Optional[str]:
    """Why ``name`` cannot be a runtime name (None: it can). Shared by user input and state."""
    if not isinstance(name, str) or not name:
        return "the runtime name must be a non-empty string"
    shown = name if len(name) <= 80 else name[:80] + "... ({} characters)".format(len(name))
    if name in RESERVED_RUNTIME_NAMES:
        return "the runtime name {!r} is reserved by dockerd".format(name)
    if name.lower().startswith(RESERVED_RUNTIME_PREFIXES):
        return "the runtime name {!r} is a containerd shim name, which dockerd runs as a shim".format(shown)
    if not _RUNTIME_NAME.match(name):
        return (
            "invalid runtime name {!r}: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit".format(shown)
        )
    return None


def validate_runtime_name(name: str) -> None:
    problem = runtime_name_problem(name)
    if problem is not None:
        raise UsageError(problem, hint="choose another --runtime-name, e.g. nvidia")


def validate_request(request: InstallRequest) -> None:
    """Refuse requests that are wrong whatever the file says."""
    validate_runtime_name(request.runtime_name)
    if not os.path.isabs(request.runtime_path):
        raise UsageError(
            "the runtime path must be absolute, got {!r}".format(request.runtime_path),
            hint="dockerd resolves bare names on its own PATH, which differs between hosts",
        )
