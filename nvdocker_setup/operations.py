"""The verbs as transactions: locate, lock, read, plan, validate, back up, write, record.

Each function takes the injected :class:`Context`, returns a result object and raises only
:class:`~nvdocker_setup.errors.NvdockerError` subclasses for expected failures. Rendering is
the CLI's job.
"""

import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from nvdocker_setup import engines
from nvdocker_setup.adapters import statedir
from nvdocker_setup.adapters.backups import Backup, BackupStore
from nvdocker_setup.adapters.files import FileSnapshot, read_snapshot, remove_file, remove_stale_temps, write_atomically
from nvdocker_setup.adapters.locate import ConfigLocation
from nvdocker_setup.adapters.lock import FileLock
from nvdocker_setup.adapters.state import StateStore
from nvdocker_setup.adapters.trust import check_runtime_binary, is_python_entry_point
from nvdocker_setup.context import Context
from nvdocker_setup.core.diff import unified_diff
from nvdocker_setup.core.plan import ExtraFile, InstallRequest, Plan, entry_binary
from nvdocker_setup.defaults import DEFAULT_RUNTIME_NAME, RUNTIME_BINARY
from nvdocker_setup.errors import (
    ConfigReadError,
    NotFound,
    NvdockerError,
    TrustCheckFailed,
    UsageError,
)

if TYPE_CHECKING:
    from nvdocker_setup.apply import ApplyOptions
    from nvdocker_setup.engines.base import Engine



def default_runtime_path(ctx: Context) -> str:
    """Our runtime shim: where it is on PATH, else where the package installs it."""
    return ctx.which(RUNTIME_BINARY) or "/usr/bin/" + RUNTIME_BINARY


@dataclass
class Result:
    """What a verb did (or, with --dry-run, would do). ``to_dict`` is the --json output."""

    action: str
    config: str
    config_rule: str
    changed: bool = False
    dry_run: bool = False
    backup: Optional[str] = None
    diff: str = ""
    changes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notices: List[str] = field(default_factory=list)
    runtime_name: Optional[str] = None
    #: What was done to the running daemon (an ApplyReport), None when not asked to apply.
    apply: Optional[Any] = None
    engine: str = engines.DEFAULT_ENGINE
    #: Every file written or removed (with --dry-run: that would be), the config file first.
    files: List[str] = field(default_factory=list)
    #: The backup of each of them ({path: backup file}); ``backup`` is the config file's.
    backups: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["apply"] = self.apply.to_dict() if self.apply is not None else None
        # changed: the file was written. would_change: a real run writes (or wrote) it; with --dry-run
        # that is whether the diff is not empty, while changed stays false.
        data["would_change"] = self.changed or (self.dry_run and bool(self.diff))
        return data


@dataclass(frozen=True)
class _Target:
    location: ConfigLocation
    path: str  # the path to open on this host (root-mapped for discovered locations)


def _target(ctx: Context, engine: "Engine", explicit: Optional[str]) -> _Target:
    location = engine.locate(ctx, explicit)
    if location.rule in ("option", "env"):
        path = os.path.abspath(location.path)
    else:
        path = ctx.host_path(location.path)
    return _Target(location, path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load_or_explain(ctx: Context, engine: "Engine", snapshot: FileSnapshot, notices: List[str]):
    """The engine's document, and when the file cannot be parsed, name the backup that can bring it back."""
    try:
        return engine.load(ctx, snapshot, notices)
    except ConfigReadError as error:
        try:
            latest = _backups(ctx).latest(snapshot.real_path) if statedir.check_state_dir(
                ctx.state_dir, _uids(ctx), create=False) else None
        except NvdockerError:
            latest = None
        if latest is not None and latest.existed:
            error.details.append("the newest backup of this file is {} ({})".format(latest.name, latest.reason))
            error.hint = "{}; or put the backup back: nvdocker-setup restore {}".format(
                (error.hint or "fix the file").rstrip("."), latest.name)
        raise


def _trust(ctx: Context, engine: "Engine", request: InstallRequest, warnings: List[str]) -> None:
    # root always counts as a trusted owner; a rootless daemon also runs its own user's binaries
    report = check_runtime_binary(request.runtime_path, expected_owner=ctx.euid)
    if report.ok:
        if is_python_entry_point(request.runtime_path):
            warnings.append(
                "runtime {} is a Python script (a pip/pipx console script): {} starts an interpreter for every "
                "runc call of every container (state, start, delete ...), about 9 ms each against 0.4 ms for the "
                "packages' C launcher (benchmarks/runtime_overhead.py); install the nvdocker-toolkit package, or build "
                "the launcher with scripts/build-launcher.sh, and pass its path".format(request.runtime_path, engine.daemon_name)
            )
        return
    if report.hijackable and not request.allow_unsafe_runtime:
        raise TrustCheckFailed(
            "runtime {} does not exist, and a non-root user could create it before {} runs it as root".format(
                request.runtime_path, engine.daemon_name
            ),
            details=list(report.problems),
            reference="runtime-hijackable",
            hint="install the runtime first (package nvdocker-toolkit) or use a root-only directory; "
            "--allow-unsafe-runtime accepts the risk",
        )
    if not report.exists:
        if request.set_default and not request.allow_unsafe_runtime:
            raise TrustCheckFailed(
                "runtime {} does not exist; making it the default would break every container on this host".format(
                    request.runtime_path
                ),
                details=list(report.problems),
                reference="runtime-missing",
                hint="install the runtime first (package nvdocker-toolkit), or pass --allow-unsafe-runtime",
            )
        warnings.append("runtime {} does not exist yet; containers using it will fail until it is installed".format(request.runtime_path))
        return
    if not request.allow_unsafe_runtime:
        raise TrustCheckFailed(
            "runtime {} is not safe for {} to run as root".format(request.runtime_path, engine.daemon_name),
            details=list(report.problems),
            hint="fix the ownership and permissions shown, or pass --allow-unsafe-runtime",
        )
    warnings.extend(report.problems)


def _recorded_entry_problems(ctx: Context, engine: "Engine", record: Any) -> List[str]:
    """Why the ``previous_entry`` of a record read back from the state file must not go back into
    the config (empty: it may). State is checked like user input: the entry must be exactly what
    the original backup (the file before our first install, checksummed) holds under that name,
    and its path must be as safe for dockerd to run as a runtime we would install ourselves."""
    entry = record.previous_entry
    if not isinstance(entry, dict):
        return ["it is not a JSON object"]
    store = _backups(ctx)
    try:
        backup = store.get(record.original_backup) if record.original_backup else None
        data = store.read(backup) if backup is not None and backup.existed else None
        before = engine.parse(data, backup.source).value if backup is not None and data is not None else {}
    except NvdockerError as error:
        return ["the backup that would show it cannot be read ({})".format(error.message)]
    if backup is None:
        return ["no backup shows what the entry was"]
    if engine.entry(before, record.runtime_name) != entry:
        return ["backup {} does not hold that entry".format(backup.name)]
    path = entry_binary(engine.name, entry)
    if path is None or (engine.name == "containerd" and path == ""):
        return []  # the backup's own entry, naming no binary (dockerd's runtimeType; a shim's own, runc)
    if not isinstance(path, str) or not os.path.isabs(path):
        return ["its path {!r} is not an absolute path".format(path)]
    report = check_runtime_binary(path, expected_owner=ctx.euid)
    if report.hijackable or (report.exists and report.problems):
        return list(report.problems)
    return []


def _uids(ctx: Context) -> Tuple[int, ...]:
    return statedir.trusted_uids(ctx.euid)


def _backups(ctx: Context) -> BackupStore:
    return BackupStore(ctx.backups_dir, clock=ctx.clock, trusted_uids=_uids(ctx))


def _state(ctx: Context) -> StateStore:
    return StateStore(ctx.state_path, trusted_uids=_uids(ctx))


def _write_config(
    ctx: Context, engine: "Engine", snapshot: FileSnapshot, new_data: Optional[bytes], warnings: List[str],
    in_place: bool, validate: bool,
) -> None:
    """Write ``new_data`` over the config (None: remove the file)."""
    if new_data is None:
        remove_file(snapshot)
    else:
        validator = engine.validator(ctx, snapshot, warnings) if validate else None
        write_atomically(snapshot, new_data, validate=validator, in_place=in_place)


def _same(snapshot: FileSnapshot, new_data: Optional[bytes]) -> bool:
    """Whether writing ``new_data`` (None: removing the file) would change nothing."""
    return (not snapshot.exists) if new_data is None else (snapshot.exists and new_data == snapshot.data)


def _outcome(snapshot: FileSnapshot, new_data: Optional[bytes]) -> str:
    """After an error: "old" (the config still has the bytes we read), "new" (the change landed
    anyway: the error came after the rename) or "unknown" (neither, or it cannot be read: a torn
    in-place write)."""
    try:
        current = read_snapshot(snapshot.path)
    except NvdockerError:
        return "unknown"
    if _same(current, snapshot.data if snapshot.exists else None):
        return "old"
    if _same(current, new_data):
        return "new"
    return "unknown"


def _commit(
    ctx: Context,
    engine: "Engine",
    state: StateStore,
    snapshot: FileSnapshot,
    new_data: Optional[bytes],
    reason: str,
    warnings: List[str],
    in_place: bool,
    update_state: Callable[[Optional[Backup]], None],
    record_first: bool,
    validate: bool = True,
) -> Backup:
    """Back up the current file, write ``new_data`` (None: remove the file) and update the records.

    ``record_first`` (install): the record is durable *before* the config changes, so that a kill
    at any step leaves a record uninstall can undo from (a record whose change never landed is
    recognised by the file still having the backed-up bytes). Otherwise (uninstall) the record
    goes only after the change landed. A write that fails leaves neither a record of it nor its
    backup (failed attempts must not rotate real backups away); the old bytes are still there,
    since the write is atomic.
    """
    store = _backups(ctx)
    previous = state.snapshot()
    backup = store.save(snapshot, reason, protect=state.referenced_backups())
    try:
        if record_first:
            update_state(backup)
            state.save()
        _write_config(ctx, engine, snapshot, new_data, warnings, in_place, validate)
    except BaseException as error:
        outcome = _outcome(snapshot, new_data)
        if outcome == "old":  # nothing changed: forget the attempt, record and backup alike
            try:
                state.restore(previous)
                if record_first:
                    state.save()
                store.discard(backup)
            except NvdockerError:
                pass  # the original error is the one to report; the record is harmless (see above)
        elif outcome == "unknown" and isinstance(error, NvdockerError):
            # A torn file (an in-place write that failed twice): keep the backup and say how back.
            error.details.append("{} may be damaged; its previous bytes are in backup {}".format(snapshot.path, backup.name))
            error.hint = "restore them: nvdocker-setup restore {}{}".format(backup.name, " --in-place" if in_place else "")
        raise
    if not record_first:
        update_state(backup)
        state.save()
    return backup


def _apply_phase(
    ctx: Context,
    engine: "Engine",
    options: Optional["ApplyOptions"],
    target: _Target,
    runtime_name: str,
    before: Any,
    after: Any,
    check_hook: bool,
):
    """The apply decision, taken before writing (None: file-only, as in tests and --dry-run)."""
    if options is None:
        return None
    return engine.decide(ctx, options, target.location, runtime_name, before, after, check_hook)


def _write_and_apply(
    ctx: Context,
    engine: "Engine",
    state: StateStore,
    snapshot: FileSnapshot,
    new_data: Optional[bytes],
    reason: str,
    result: Result,
    decision,
    update_state: Callable[[Optional[Backup]], None],
    reporter,
    in_place: bool,
    validate: bool = True,
    record_first: bool = False,
) -> None:
    """Back up, write, record; then apply, restoring file and record if the daemon does not take it."""
    previous_state = state.snapshot()
    # A writer killed earlier may have left its temp file, even where nothing is to be written now.
    remove_stale_temps(os.path.dirname(snapshot.real_path), os.path.basename(snapshot.real_path))
    if not _same(snapshot, new_data):
        backup = _commit(
            ctx, engine, state, snapshot, new_data, reason, result.warnings, in_place, update_state,
            record_first=record_first, validate=validate,
        )
        result.changed = True
        result.backup = backup.file
        result.backups = {snapshot.path: str(backup.file)}
        result.files = [snapshot.path]
    if decision is None:
        return
    from nvdocker_setup import apply

    def restore() -> None:
        current = read_snapshot(snapshot.path)
        if snapshot.exists:
            write_atomically(current, snapshot.data, in_place=in_place)
        elif current.exists:
            remove_file(current)
        state.restore(previous_state)
        state.save()

    result.apply = decision.report
    apply.execute(decision, restore if result.changed else (lambda: None), reporter)


def install(
    ctx: Context,
    request: InstallRequest,
    *,
    config: Optional[str] = None,
    dry_run: bool = False,
    in_place: bool = False,
    apply_options: Optional["ApplyOptions"] = None,
    reporter=None,
    engine: Optional["Engine"] = None,
) -> Result:
    engine = engine or engines.get()
    target = _target(ctx, engine, config)
    result = Result("install", target.path, target.location.rule, dry_run=dry_run, runtime_name=request.runtime_name,
                    engine=engine.name)
    engine.check_request(ctx, request)
    _trust(ctx, engine, request, result.warnings)

    def run(state: Optional[StateStore]) -> Result:
        snapshot = read_snapshot(target.path)
        document = _load_or_explain(ctx, engine, snapshot, result.notices)
        record = state.get(snapshot.real_path, request.runtime_name) if state else None
        _same_engine(engine, snapshot, record)
        plan = engine.plan_install(ctx, document, request, record)
        result.warnings.extend(plan.warnings)
        result.changes = plan.changes
        extras = [extra for extra in plan.extra if extra.changed]
        if plan.changed:
            result.warnings.extend(engine.check_candidate(document, plan.after))
            result.diff = unified_diff(document.text, plan.after.text, target.path)
        for extra in extras:
            result.diff += unified_diff(extra.before.text, extra.after.text if extra.after is not None else "",
                                        extra.snapshot.path)
        if plan.changed or extras:
            result.files = ([target.path] if plan.changed else []) + [extra.snapshot.path for extra in extras]
        else:
            result.notices.append("already configured: {} has {} as requested".format(
                target.path, engine.entry_label(request.runtime_name)))
        if dry_run or state is None:
            return result
        decision = _apply_phase(
            ctx, engine, apply_options, target, request.runtime_name, document, plan.after, check_hook=True
        )
        new_data = plan.after.encode()

        def update_state(backup: Optional[Backup]) -> None:
            assert backup is not None  # a change always has its backup
            fresh = state.get(snapshot.real_path, request.runtime_name) is None
            record = plan.record
            assert record is not None  # an install plan always carries its record
            if fresh:
                record = replace(record, file_existed=snapshot.exists, original_backup=backup.name)
            state.put(snapshot.real_path, record.with_written(_sha256(new_data)))

        if record is None and not plan.changed and snapshot.exists:
            adopted = _adopt(ctx, engine, snapshot, request)
            if adopted is not None:
                state.put(snapshot.real_path, adopted)
                state.save()
                result.notices.append(
                    "adopted {}: backup {} shows nvdocker-setup installed it (its record was lost); "
                    "uninstall can undo it".format(engine.entry_label(request.runtime_name), adopted.original_backup)
                )
        if plan.extra:
            main_data = new_data if plan.changed else snapshot.data
            decision = _apply_phase(
                ctx, engine, apply_options, target, request.runtime_name,
                _View(engine.merge_view([document.value] + [c.before.value for c in plan.extra])),
                _View(engine.merge_view([plan.after.value] + [c.after.value for c in plan.extra if c.after is not None])),
                check_hook=True,
            )

            def update_extras(backups: Dict[str, Backup], created_dirs: Dict[str, str]) -> None:
                record = plan.record
                assert record is not None
                fresh = state.get(snapshot.real_path, request.runtime_name) is None
                if fresh:
                    record = replace(record, file_existed=snapshot.exists,
                                     original_backup=backups[snapshot.real_path].name if snapshot.real_path in backups
                                     else None)
                extra_files = []
                for change in plan.extra:
                    real = change.snapshot.real_path
                    known = record.extra(real)
                    if known is None:
                        backup = backups.get(real)
                        known = ExtraFile(real, file_existed=change.snapshot.exists,
                                          original_backup=backup.name if backup else None,
                                          created_dir=created_dirs.get(real))
                    data = change.new_data if change.changed else change.snapshot.data
                    extra_files.append(known.with_written(_sha256(data or b"")))
                state.put(snapshot.real_path, replace(record, extra_files=tuple(extra_files)).with_written(
                    _sha256(main_data)))

            writes = [(c.snapshot, c.new_data) for c in extras]
            if plan.changed:
                writes.append((snapshot, new_data))
            _write_many_and_apply(ctx, engine, state, writes, "install " + request.runtime_name, result, decision,
                                  update_extras, reporter, in_place, record_first=True)
            return result
        _write_and_apply(
            ctx, engine, state, snapshot, new_data if plan.changed else snapshot.data, "install " + request.runtime_name,
            result, decision, update_state, reporter, in_place, record_first=True,
        )
        return result

    return _transaction(ctx, dry_run, run)


@dataclass(frozen=True)
class _View:
    """The daemon's view of several files (a config file and its drop-ins), for the apply decision."""

    value: Dict[str, Any]


def _put_back(snapshot: FileSnapshot, in_place: bool) -> None:
    """Give ``snapshot``'s file its bytes back (remove it when it did not exist)."""
    current = read_snapshot(snapshot.path)
    if snapshot.exists:
        if not _same(current, snapshot.data):
            write_atomically(current, snapshot.data, in_place=in_place)
    elif current.exists:
        remove_file(current)


def _write_many_and_apply(
    ctx: Context, engine: "Engine", state: StateStore, writes: List[Tuple[FileSnapshot, Optional[bytes]]],
    reason: str, result: Result, decision, update_state: Callable[[Dict[str, Backup], Dict[str, str]], None],
    reporter, in_place: bool, record_first: bool,
) -> None:
    """Several files as one change: every file backed up, the record durable first (``record_first``) or
    last, the files written in the order given, each put back (and the record and backups forgotten) when
    one write fails; then one apply, whose rollback puts every file back."""
    store = _backups(ctx)
    previous = state.snapshot()
    backups: Dict[str, Backup] = {}
    created_dirs: Dict[str, str] = {}
    for snap, data in writes:
        remove_stale_temps(os.path.dirname(snap.real_path), os.path.basename(snap.real_path))
        if data is not None and not snap.exists and not os.path.isdir(os.path.dirname(snap.real_path)):
            created_dirs[snap.real_path] = os.path.dirname(snap.real_path)
    done: List[FileSnapshot] = []
    try:
        for snap, _ in writes:
            backups[snap.real_path] = store.save(snap, reason, protect=state.referenced_backups() | {
                b.name for b in backups.values()})
        if record_first or not writes:
            update_state(backups, created_dirs)
            state.save()
        for snap, data in writes:
            if snap.real_path in created_dirs:
                os.makedirs(created_dirs[snap.real_path], mode=0o755, exist_ok=True)
            done.append(snap)
            _write_config(ctx, engine, snap, data, result.warnings, in_place, validate=data is not None)
    except BaseException as error:
        clean = True
        for snap in reversed(done):
            try:
                _put_back(snap, in_place)
            except NvdockerError:
                clean = False
            if snap.real_path in created_dirs:
                _remove_empty_dir(created_dirs[snap.real_path])
        if clean:
            try:
                state.restore(previous)
                state.save()
                for backup in backups.values():
                    store.discard(backup)
            except NvdockerError:
                pass
        elif isinstance(error, NvdockerError):
            error.details.append("files may be damaged; their previous bytes are in backups {}".format(
                ", ".join(b.name for b in backups.values())))
        raise
    if writes and not record_first:
        update_state(backups, created_dirs)
        state.save()
    if writes:
        result.changed = True
        main = writes[-1][0] if record_first else writes[0][0]
        result.backup = backups[main.real_path].file if main.real_path in backups else None
        result.backups = {snap.path: str(backups[snap.real_path].file) for snap, _ in writes}
        result.files = [snap.path for snap, _ in writes]
    if decision is None:
        return
    from nvdocker_setup import apply

    def restore() -> None:
        for snap, _ in reversed(writes):
            _put_back(snap, in_place)
            if snap.real_path in created_dirs:
                _remove_empty_dir(created_dirs[snap.real_path])
        state.restore(previous)
        state.save()

    result.apply = decision.report
    apply.execute(decision, restore if writes else (lambda: None), reporter)


def _remove_empty_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def uninstall(
    ctx: Context,
    runtime_name: str = DEFAULT_RUNTIME_NAME,
    *,
    config: Optional[str] = None,
    dry_run: bool = False,
    force: bool = False,
    in_place: bool = False,
    apply_options: Optional["ApplyOptions"] = None,
    reporter=None,
    engine: Optional["Engine"] = None,
) -> Result:
    engine = engine or engines.get()
    target = _target(ctx, engine, config)
    result = Result("uninstall", target.path, target.location.rule, dry_run=dry_run, runtime_name=runtime_name,
                    engine=engine.name)

    def run(state: Optional[StateStore]) -> Result:
        read_only = state is None
        if state is None:  # dry run: read the records without taking the lock
            state = _state(ctx)
            if statedir.check_state_dir(ctx.state_dir, _uids(ctx), create=False):
                state.load()
        snapshot = read_snapshot(target.path)
        document = _load_or_explain(ctx, engine, snapshot, result.notices)
        record = state.get(snapshot.real_path, runtime_name)
        _same_engine(engine, snapshot, record)
        if record is not None and record.previous_entry is not None:
            problems = _recorded_entry_problems(ctx, engine, record)
            if problems:
                result.warnings.append(
                    "not putting back the previous {} entry from the state file: {}; removing ours "
                    "instead".format(engine.entry_label(runtime_name), "; ".join(problems))
                )
                record = replace(record, previous_entry=None)
        new_data: Optional[bytes]
        exact = _exact_restore(ctx, snapshot, record)
        if exact is not None:
            new_data, description = exact
            result.changes = [description]
            after = engine.parse(new_data, target.path) if new_data is not None else engine.empty(ctx, target.path)
        else:
            plan: Plan = engine.plan_uninstall(document, runtime_name, record, force)
            result.warnings.extend(plan.warnings)
            result.changes = plan.changes
            after = plan.after
            new_data = plan.after.encode() if plan.changed else (snapshot.data if snapshot.exists else None)
            if plan.changed:
                result.warnings.extend(engine.check_candidate(document, plan.after))
        extra_writes: List[Tuple[FileSnapshot, Optional[bytes]]] = []
        for extra in (record.extra_files if record is not None else ()):
            extra_snapshot = read_snapshot(extra.path)
            exact_extra = _exact_restore(ctx, extra_snapshot, extra)
            if exact_extra is not None:
                extra_data, description = exact_extra
            else:
                extra_document = _load_or_explain(ctx, engine, extra_snapshot, result.notices)
                extra_plan = engine.plan_uninstall(extra_document, runtime_name, record, force, extra=True)
                result.warnings.extend(extra_plan.warnings)
                extra_data = extra_plan.after.encode() if extra_plan.changed else extra_snapshot.data
                description = "; ".join(extra_plan.changes) or "leave {}".format(extra.path)
            if not _same(extra_snapshot, extra_data):
                result.changes.append("{}: {}".format(extra.path, description))
                extra_writes.append((extra_snapshot, extra_data))
                result.diff += unified_diff(extra_snapshot.data.decode("utf-8", "replace"),
                                            (extra_data or b"").decode("utf-8", "replace"), extra.path)
        unchanged = _same(snapshot, new_data)
        if unchanged and not extra_writes:
            result.notices.append("nothing to undo for {} in {}".format(engine.entry_label(runtime_name), target.path))
        elif not unchanged:
            result.diff = unified_diff(document.text, after.text, target.path) + result.diff
        result.files = ([target.path] if not unchanged else []) + [snap.path for snap, _ in extra_writes]
        if read_only:
            return result
        if record is not None and record.extra_files:
            def value(snap: FileSnapshot, data: Optional[bytes]) -> Dict[str, Any]:
                return engine.parse(data, snap.path).value if data else {}

            current = [engine.parse(read_snapshot(e.path).data, e.path).value if read_snapshot(e.path).exists else {}
                       for e in record.extra_files]
            undone = {snap.real_path: value(snap, data) for snap, data in extra_writes}
            later = [undone.get(read_snapshot(e.path).real_path, current[i]) for i, e in enumerate(record.extra_files)]
            decision = _apply_phase(ctx, engine, apply_options, target, runtime_name,
                                    _View(engine.merge_view([document.value] + current)),
                                    _View(engine.merge_view([after.value] + later)), check_hook=False)
            writes = ([] if unchanged else [(snapshot, new_data)]) + extra_writes
            created = {extra.path: extra.created_dir for extra in record.extra_files if extra.created_dir}

            def forget(_backups: Dict[str, Backup], _dirs: Dict[str, str]) -> None:
                state.remove(snapshot.real_path, runtime_name)

            _write_many_and_apply(ctx, engine, state, writes, "uninstall " + runtime_name, result, decision, forget,
                                  reporter, in_place, record_first=False)
            for path, folder in created.items():
                if not os.path.exists(path):
                    _remove_empty_dir(folder)
            return result
        decision = _apply_phase(ctx, engine, apply_options, target, runtime_name, document, after, check_hook=False)

        def update_state(_backup: Optional[Backup]) -> None:
            state.remove(snapshot.real_path, runtime_name)

        if unchanged and record is not None:
            update_state(None)
            state.save()
        _write_and_apply(
            ctx, engine, state, snapshot, new_data, "uninstall " + runtime_name, result, decision, update_state,
            reporter, in_place, validate=exact is None,
        )
        return result

    return _transaction(ctx, dry_run, run)


def _exact_restore(ctx: Context, snapshot: FileSnapshot, record) -> Optional[Tuple[Optional[bytes], str]]:
    """When nobody changed the file since our installs, the pre-install bytes (None: the file
    did not exist). "Nobody changed it" means the file is one of the versions our installs wrote,
    or still the backed-up original (an install killed before its write landed)."""
    if record is None or not record.original_backup:
        return None
    current = _sha256(snapshot.data) if snapshot.exists else None
    store = _backups(ctx)
    try:
        backup = store.get(record.original_backup)
        original = store.read(backup) if backup.existed else None
    except NotFound:
        return None
    if backup.source != snapshot.real_path:
        return None
    if not backup.existed:
        if current is None or current in record.written_hashes():
            return None, "remove {} (it did not exist before install)".format(snapshot.path)
        return None
    if current is not None and (current in record.written_hashes() or current == backup.sha256):
        return original, "restore the exact bytes from before install (backup {})".format(backup.name)
    return None


def _adopt(ctx: Context, engine: "Engine", snapshot: FileSnapshot, request: InstallRequest):
    """A record for an entry that is ours although no record says so (the state file was lost or
    reset): the newest install backup of this file, replayed with this request, must give exactly
    the current bytes. None when it does not."""
    store = _backups(ctx)
    try:
        candidates = [b for b in store.list(snapshot.real_path) if b.reason == "install " + request.runtime_name]
    except NvdockerError:
        return None
    for backup in reversed(candidates):
        try:
            data = store.read(backup)
            before = engine.parse(data, snapshot.path) if backup.existed else engine.empty(ctx, snapshot.path)
            replay = engine.plan_install(ctx, before, request, None)
        except NvdockerError:
            continue
        if replay.after.encode() != snapshot.data:
            continue
        assert replay.record is not None  # an install plan always carries its record
        record = replace(replay.record, file_existed=backup.existed, original_backup=backup.name)
        return record.with_written(_sha256(snapshot.data))
    return None


def _same_engine(engine: "Engine", snapshot: FileSnapshot, record: Any) -> None:
    """A file that holds another engine's record is not this engine's config (--engine mixed up)."""
    if record is not None and record.engine != engine.name:
        raise UsageError(
            "{} holds a {} install record, not a {} one".format(snapshot.path, record.engine, engine.name),
            hint="pass --engine {}".format(record.engine),
            reference="engine-mismatch",
        )


def _transaction(ctx: Context, dry_run: bool, run) -> Result:
    if dry_run:
        return run(None)
    statedir.check_state_dir(ctx.state_dir, _uids(ctx), create=True)
    with FileLock(ctx.lock_path, timeout=ctx.lock_timeout, trusted_uids=_uids(ctx)):
        statedir.remove_stale_temps(ctx.state_dir)
        statedir.remove_stale_temps(ctx.backups_dir)
        return run(_state(ctx).load())


def config_path(ctx: Context, engine: "Engine", explicit: Optional[str]) -> str:
    """The real path of the config file ``engine`` uses here (as backups and records name it)."""
    return os.path.realpath(_target(ctx, engine, explicit).path)


def list_backups(ctx: Context, source: Optional[str] = None) -> List[Backup]:
    """Every backup, oldest first; with ``source``, those of that file only."""
    if not statedir.check_state_dir(ctx.state_dir, _uids(ctx), create=False):
        return []
    return _backups(ctx).list(source)


#: Permission bits a restore may give back: never set-id, sticky, execute or group/other write,
#: whatever a manifest says (restoring must not widen access to the config).
_RESTORABLE_MODE = 0o644


def restore(
    ctx: Context, name: Optional[str] = None, *, config: Optional[str] = None, in_place: bool = False,
    engine: Optional["Engine"] = None,
) -> Result:
    """Put a backup back, after backing up the current file.

    Only ever onto the config file that this host's rules select (``--config`` included), and
    only a backup *of that file*: the manifest's ``source`` names the backup's file but never
    chooses where we write. The install records of that file follow the restored bytes. dockerd
    is not reloaded: the result says so.
    """
    engine = engine or engines.get()
    statedir.check_state_dir(ctx.state_dir, _uids(ctx), create=True)
    with FileLock(ctx.lock_path, timeout=ctx.lock_timeout, trusted_uids=_uids(ctx)):
        statedir.remove_stale_temps(ctx.state_dir)
        statedir.remove_stale_temps(ctx.backups_dir)
        store = _backups(ctx)
        state = _state(ctx).load()
        target = _target(ctx, engine, config)
        current = read_snapshot(target.path)
        if name:
            backup = store.get(name)
            if backup.source != current.real_path:
                raise UsageError(
                    "backup {} is of {}, not of {} ({})".format(
                        backup.name, backup.source, current.real_path, target.location.reason or target.location.rule
                    ),
                    hint="restore writes only to the config file this host uses; pass --config {} if that file is "
                    "the one you mean".format(backup.source),
                    reference="backup-other-file",
                )
        else:
            backup = store.latest(current.real_path)
        path = target.path
        result = Result("restore", path, target.location.rule, engine=engine.name)
        snapshot = current
        data = store.read(backup) if backup.existed else None
        if _same(snapshot, data):
            result.notices.append("{} already matches backup {}".format(path, backup.name))
            return result
        before_text = snapshot.data.decode("utf-8", "replace")
        after_text = data.decode("utf-8", "replace") if data is not None else ""
        result.diff = unified_diff(before_text, after_text, path)

        def update_state(_saved: Optional[Backup]) -> None:
            _follow_restore(engine, state, snapshot.real_path, data)

        saved = _commit(
            ctx, engine, state, snapshot, data, "restore " + backup.name, result.warnings, in_place, update_state,
            record_first=False, validate=False,
        )
        if data is not None and backup.mode is not None:
            _restore_attributes(ctx, snapshot.real_path, backup, result.warnings)
        result.changed = True
        result.backup = saved.file
        result.changes = ["restore backup {} ({})".format(backup.name, backup.reason)]
        result.notices.append(engine.reload_hint())
        return result


def _follow_restore(engine: "Engine", state: StateStore, real_path: str, data: Optional[bytes]) -> None:
    """Records of ``real_path`` after its bytes became ``data``: a record whose entry is no longer
    in the file is dropped; one whose entry still is remembers the new bytes as ours."""
    value: Dict[str, Any] = {}
    if data is not None:
        try:
            value = engine.parse(data, real_path).value
        except NvdockerError:
            value = {}
    for name, record in state.records(real_path).items():
        binary = entry_binary(engine.name, engine.entry(value, name))
        if binary is not None and binary == entry_binary(record.engine, record.entry):
            state.put(real_path, record.with_written(_sha256(data or b"")))
        else:
            state.remove(real_path, name)


def _restore_attributes(ctx: Context, path: str, backup: Backup, warnings: List[str]) -> None:
    mode = backup.mode & _RESTORABLE_MODE if backup.mode is not None else None
    if mode is not None and backup.mode is not None and mode != backup.mode:
        warnings.append("backup {} recorded mode {:04o}; restored as {:04o}".format(backup.name, backup.mode, mode))
    try:
        if ctx.euid == 0 and backup.uid in _uids(ctx) and backup.gid is not None:
            os.chown(path, backup.uid, backup.gid, follow_symlinks=False)
        if mode is not None:
            os.chmod(path, mode)
    except OSError as exc:
        warnings.append("could not restore the owner and mode of {}: {}".format(path, exc.strerror or exc))


@dataclass
class ShowResult:
    config: str
    config_rule: str
    config_reason: str
    exists: bool
    runtime_name: str
    entry: Optional[Any]
    default_runtime: str
    default_runtime_source: str
    cdi: Optional[Any]
    installed_by_us: bool
    record: Optional[Dict[str, Any]]
    engine: str = engines.DEFAULT_ENGINE

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def show(
    ctx: Context, runtime_name: str = DEFAULT_RUNTIME_NAME, *, config: Optional[str] = None,
    engine: Optional["Engine"] = None,
) -> ShowResult:
    engine = engine or engines.get()
    target = _target(ctx, engine, config)
    snapshot = read_snapshot(target.path)
    document = engine.load(ctx, snapshot, [])
    value = document.value
    record = None
    if statedir.check_state_dir(ctx.state_dir, _uids(ctx), create=False):
        found = _state(ctx).load().get(snapshot.real_path, runtime_name)
        record = found.to_dict() if found else None
    return ShowResult(
        config=target.path,
        config_rule=target.location.rule,
        config_reason=target.location.reason,
        exists=snapshot.exists,
        runtime_name=runtime_name,
        entry=engine.entry(value, runtime_name),
        installed_by_us=record is not None,
        record=record,
        engine=engine.name,
        **engine.show(value, runtime_name),
    )
