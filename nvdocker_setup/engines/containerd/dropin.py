"""Drop-in mode: our handler in a file of ours (default ``conf.d/99-nvdocker.toml`` beside config.toml) that
config.toml imports.

containerd before 2.1 *replaces* every top-level plugin table an imported file names (a drop-in holding only
our handler would wipe the admin's ``sandbox_image``, ``SystemdCgroup``, even runc), so drop-ins are refused
there: install in place instead. containerd 2.1 merges imports, and even there nothing is taken on trust: before
anything is written, ``containerd config dump`` of config.toml as it is and of the candidate (config.toml with
the import + the drop-in) must be identical apart from our handler (and default_runtime_name / enable_cdi when
asked), else the install is refused with the difference.
"""

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from nvdocker_setup.adapters.files import read_snapshot
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import FileChange, InstallRecord, InstallRequest, Plan
from nvdocker_setup.engines.containerd import binary
from nvdocker_setup.engines.containerd import plan as cplan
from nvdocker_setup.engines.containerd.config import CRI_PLUGIN, ContainerdDocument, _plain, format_path
from nvdocker_setup.errors import ConfigReadError, Conflict

DEFAULT_DROP_IN = os.path.join("conf.d", "99-nvdocker.toml")
#: containerd merges imported files into the tables they name from this version (older ones replace them).
MERGES_IMPORTS = (2, 1, 0)


def drop_in_path(document: ContainerdDocument, request: InstallRequest, record: Optional[InstallRecord]) -> str:
    """The drop-in as opened here: the recorded one, else --drop-in-path, else conf.d/99-nvdocker.toml beside
    the config file."""
    if record is not None and record.extra_files:
        recorded = record.extra_files[0].path
        if request.drop_in_path and os.path.realpath(os.path.abspath(request.drop_in_path)) != recorded:
            raise Conflict("runtimes.{} was installed with the drop-in {}, not {}".format(
                request.runtime_name, recorded, request.drop_in_path), reference="containerd-write-mode-mismatch",
                hint="uninstall first to move it")
        return recorded
    if request.drop_in_path:
        return os.path.abspath(request.drop_in_path)
    return os.path.join(os.path.dirname(os.path.abspath(document.source)), DEFAULT_DROP_IN)


def import_entry(ctx: Context, path: str) -> str:
    """The path containerd sees (a host path mapped into ``ctx.root`` is given back unmapped)."""
    root = os.path.abspath(ctx.root)
    if root != "/" and path.startswith(root + os.sep):
        return path[len(root):]
    return path


def plan(ctx: Context, found: binary.Installed, document: ContainerdDocument, request: InstallRequest,
         record: Optional[InstallRecord], *, cdi_supported: bool) -> Plan:
    if found.version is None or found.path is None:
        raise Conflict("no containerd binary of known version here: a drop-in cannot be proven harmless "
                       "(`containerd config dump`)", reference="containerd-drop-in-unproven",
                       hint="install in place (without --drop-in), or point NVDOCKER_CONTAINERD_BINARY at containerd")
    if found.version < MERGES_IMPORTS:
        raise Conflict(
            "{} replaces every plugin table an imported file names: a drop-in with our handler would wipe the "
            "CRI settings of {} (sandbox_image, SystemdCgroup, runc ...)".format(found.shown, document.source),
            reference="containerd-drop-in-replaces-tables",
            hint="install in place (without --drop-in); containerd 2.1 and later merge drop-ins (nothing was written)",
        )
    path = drop_in_path(document, request, record)
    snapshot = read_snapshot(path)
    drop_in = ContainerdDocument.parse(snapshot.data, path, empty_version=document.version) if snapshot.exists \
        else ContainerdDocument.empty(path, document.version if document.version in (2, 3) else 3)
    entry = import_entry(ctx, snapshot.real_path)
    outer, inner = cplan.plan_drop_in(document, drop_in, request, record, entry, cdi_supported=cdi_supported)
    outer.extra = [FileChange(snapshot, drop_in, inner.after)]
    if outer.changed or inner.changed:
        _prove(ctx, found, document, request, record, drop_in, cdi_supported)
        outer.changes.append("write {} ({}); proven with `containerd config dump`: the merged config is unchanged "
                             "apart from runtimes.{}".format(path, "new" if not snapshot.exists else "updated",
                                                             request.runtime_name))
    return outer


def _cri(dump: Dict[str, Any]) -> Dict[str, Any]:
    version = dump.get("version", 1)
    node = dump
    for key in CRI_PLUGIN.get(version, CRI_PLUGIN[2]):
        node = node.get(key) if isinstance(node, dict) else None  # type: ignore[assignment]
    return node if isinstance(node, dict) else {}


def _dump(ctx: Context, found: binary.Installed, path: str) -> Dict[str, Any]:
    import tomlkit

    verdict = binary.config_dump(ctx, found.path, path)
    if not verdict.ok:
        raise ConfigReadError("{} rejects {} (`containerd config dump`)".format(found.shown, path),
                              details=verdict.messages, reference="containerd-config-rejected")
    value = _plain(tomlkit.parse(verdict.output))
    value.pop("imports", None)
    return value


def _differences(before: Any, after: Any, path: tuple = ()) -> List[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out: List[str] = []
        for key in list(before) + [k for k in after if k not in before]:
            out.extend(_differences(before.get(key), after.get(key), path + (key,)))
        return out
    return [] if before == after else ["{}: {!r} -> {!r}".format(format_path(path), before, after)]


def _prove(ctx: Context, found: binary.Installed, main: ContainerdDocument, request: InstallRequest,
           record: Optional[InstallRecord], drop_in: ContainerdDocument, cdi_supported: bool) -> None:
    """Refuse unless containerd's merged view of (main + import + drop-in) is main's apart from ours. The three
    files go to one private temp directory (relative imports of the admin resolve alike on both sides)."""
    work = tempfile.mkdtemp(prefix="nvdocker-proof-")
    try:
        candidate = os.path.join(work, "drop-in.toml")
        outer, inner = cplan.plan_drop_in(main, drop_in, request, record, candidate, cdi_supported=cdi_supported)
        files = {"before.toml": main.encode(), "after.toml": outer.after.encode(), "drop-in.toml": inner.after.encode()}
        for name, data in files.items():
            with open(os.path.join(work, name), "wb") as handle:
                handle.write(data)
        before = _dump(ctx, found, os.path.join(work, "before.toml"))
        after = _dump(ctx, found, os.path.join(work, "after.toml"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = _cri(after).get("containerd", {}).get("runtimes", {}).pop(request.runtime_name, None)
    problems: List[str] = []
    binary_name = ours.get("options", {}).get("BinaryName") if isinstance(ours, dict) else None
    if binary_name != request.runtime_path:
        problems.append("runtimes.{} does not run {} in the merged config (found {!r})".format(
            request.runtime_name, request.runtime_path, binary_name))
    for asked, key in ((request.set_default, ("containerd", "default_runtime_name")), (request.enable_cdi, ("enable_cdi",))):
        if not asked:
            continue
        table_after, table_before = _cri(after), _cri(before)
        for part in key[:-1]:
            table_after, table_before = table_after.get(part, {}), table_before.get(part, {})
        wanted = request.runtime_name if key[-1] == "default_runtime_name" else True
        if table_after.get(key[-1]) != wanted:
            problems.append("{} is not {!r} in the merged config".format(key[-1], wanted))
        if key[-1] in table_before:
            table_after[key[-1]] = table_before[key[-1]]
        else:
            table_after.pop(key[-1], None)
    problems.extend(_differences(before, after))
    if problems:
        raise Conflict(
            "{}: with the drop-in, containerd's merged config would differ in more than runtimes.{}; nothing was "
            "written".format(main.source, request.runtime_name),
            details=problems[:12] + (["... {} more".format(len(problems) - 12)] if len(problems) > 12 else []),
            reference="containerd-drop-in-changes-config",
            hint="install in place (without --drop-in)",
        )
