"""What install and uninstall change in daemon.json: pure functions from a document to a plan.

A plan holds the new document and an :class:`~nvdocker_setup.core.plan.InstallRecord`, the memory
of what install changed. Uninstall reads that record and undoes exactly those changes, and only
while they are still ours: an entry whose path the admin changed since, or a default runtime they
switched, is left alone.
"""

import json
from dataclasses import replace
from typing import Any, Dict, Optional

from nvdocker_setup.core.jsondoc import JsonDocument, member_object
from nvdocker_setup.core.plan import (
    DOCKER_DEFAULT_RUNTIMES,
    InstallRecord,
    InstallRequest,
    Plan,
    validate_request,
    validate_runtime_name,
)
from nvdocker_setup.errors import ConfigReadError, Conflict


def docker_entry(request: InstallRequest) -> Dict[str, Any]:
    """The runtimes.<name> value we write: dockerd reads ``runtimeArgs``, never ``args``."""
    entry: Dict[str, Any] = {"path": request.runtime_path}
    if request.runtime_args:
        entry["runtimeArgs"] = list(request.runtime_args)
    return entry


def _json(value: Any) -> str:
    """A value from daemon.json as the admin would write it (JSON, not a Python repr), bounded."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 300 else text[:300] + "... ({} characters)".format(len(text))


def _same_binary(existing: Any, runtime_path: str) -> bool:
    """An entry that already runs our binary (other args, say) is ours to update, not a conflict."""
    return isinstance(existing, dict) and existing.get("path") == runtime_path


def check_shape(document: JsonDocument) -> None:
    """Refuse to edit a document whose ``runtimes`` or ``features`` is not an object."""
    for key in ("runtimes", "features"):
        node = document.node_at([key])
        if node is not None and node.kind != "object":
            raise ConfigReadError(
                "{}: '{}' must be an object, found {}".format(document.source, key, node.kind),
                reference="daemon-json-bad-{}".format(key),
                hint="dockerd refuses this file too; fix '{}' by hand".format(key),
            )


def plan_install(document: JsonDocument, request: InstallRequest, record: Optional[InstallRecord] = None) -> Plan:
    """Merge our runtime entry (and optionally default-runtime and features.cdi) into ``document``."""
    validate_request(request)
    check_shape(document)
    current = document.value
    name = request.runtime_name
    entry = docker_entry(request)
    fresh = record is None
    plan = Plan(before=document, after=document)
    runtimes = current.get("runtimes")
    existing = runtimes.get(name) if isinstance(runtimes, dict) else None
    if record is None:
        # The file's own state before our first change; the engine adds file_existed and hashes.
        record = InstallRecord(
            runtime_name=name, entry=entry, previous_entry=existing, runtimes_created=runtimes is None
        )
    if existing != entry and fresh and existing is not None and not _same_binary(existing, request.runtime_path):
        # Someone else's runtime (NVIDIA's nvidia-container-runtime, say): taking its name would move
        # every container that uses it, and the default runtime with it, onto ours.
        if not request.force:
            raise Conflict(
                "runtimes.{} is already {}, which nvdocker-setup did not install; not replacing it".format(
                    name, _json(existing)
                ),
                reference="runtime-entry-foreign",
                hint="install beside it under another name (--runtime-name nvdocker), or pass --force to replace "
                "it (uninstall puts it back)",
            )
    if existing != entry:
        plan.after = plan.after.with_member(["runtimes"], name, entry)
        plan.changes.append(
            "{} runtimes.{} -> {}".format("replace" if existing is not None else "add", name, request.runtime_path)
        )
        if existing is not None and fresh:
            plan.warnings.append("replacing the existing runtimes.{} entry {}; uninstall puts it back".format(name, _json(existing)))
    record = replace(record, entry=entry)

    if request.set_default:
        previous = current.get("default-runtime")
        if previous != name:
            if previous is not None and previous not in DOCKER_DEFAULT_RUNTIMES and not request.force:
                raise Conflict(
                    "default-runtime is {}, set by someone else; not replacing it".format(_json(previous)),
                    hint="pass --force to make {} the default anyway (uninstall restores {})".format(_json(name), _json(previous)),
                )
            plan.after = plan.after.with_member([], "default-runtime", name)
            plan.changes.append("set default-runtime -> {} (was {})".format(name, previous if previous is not None else "unset"))
            if not record.default_changed:
                record = replace(record, default_changed=True, previous_default=previous)

    if request.enable_cdi:
        features = current.get("features")
        previous_cdi = features.get("cdi") if isinstance(features, dict) else None
        if previous_cdi is not True:
            plan.after = plan.after.with_member(["features"], "cdi", True)
            plan.changes.append("set features.cdi -> true (other feature flags kept)")
            if not record.cdi_changed:
                record = replace(record, cdi_changed=True, previous_cdi=previous_cdi, features_created=features is None)

    plan.record = record
    return plan


def plan_uninstall(
    document: JsonDocument, name: str, record: Optional[InstallRecord], force: bool = False
) -> Plan:
    """Undo what ``record`` says install changed, leaving the admin's later edits alone."""
    validate_runtime_name(name)
    check_shape(document)
    current = document.value
    plan = Plan(before=document, after=document)
    runtimes = member_object(current, "runtimes")
    existing = runtimes.get(name)

    if record is None:
        if not force:
            if existing is not None:
                plan.warnings.append(
                    "runtimes.{} exists but nvdocker-setup has no record of installing it; left in place "
                    "(--force removes it)".format(name)
                )
            return plan
        record = InstallRecord(runtime_name=name, entry=existing or {}, default_changed=True)

    if existing is not None:
        ours = isinstance(existing, dict) and existing.get("path") == record.entry.get("path")
        if ours or force:
            if record.previous_entry is not None:
                plan.after = plan.after.with_member(["runtimes"], name, record.previous_entry)
                plan.changes.append("restore the previous runtimes.{} entry".format(name))
            else:
                plan.after = plan.after.without_member(["runtimes"], name)
                plan.changes.append("remove runtimes.{}".format(name))
                if record.runtimes_created and plan.after.value.get("runtimes") == {}:
                    plan.after = plan.after.without_member([], "runtimes")
        else:
            plan.warnings.append(
                "runtimes.{} now points at {}, not {} as installed; left in place (--force removes it)".format(
                    name, _json(existing.get("path") if isinstance(existing, dict) else existing),
                    _json(record.entry.get("path")),
                )
            )

    if record.default_changed and current.get("default-runtime") == name:
        if record.previous_default is None:
            plan.after = plan.after.without_member([], "default-runtime")
            plan.changes.append("remove default-runtime (dockerd falls back to runc)")
        else:
            plan.after = plan.after.with_member([], "default-runtime", record.previous_default)
            plan.changes.append("restore default-runtime -> {}".format(record.previous_default))

    features = current.get("features")
    if record.cdi_changed and isinstance(features, dict) and features.get("cdi") is True:
        if record.previous_cdi is None:
            plan.after = plan.after.without_member(["features"], "cdi")
            if record.features_created and plan.after.value.get("features") == {}:
                plan.after = plan.after.without_member([], "features")
            plan.changes.append("remove features.cdi")
        else:
            plan.after = plan.after.with_member(["features"], "cdi", record.previous_cdi)
            plan.changes.append("restore features.cdi -> {}".format(str(record.previous_cdi).lower()))
    return plan
