"""containerd behind the :class:`~nvdocker_setup.engines.base.Engine` interface."""

import copy
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from nvdocker_setup.adapters.files import FileSnapshot
from nvdocker_setup.adapters.locate import ConfigLocation
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRecord, InstallRequest, Plan, entry_binary, validate_request
from nvdocker_setup.engines.containerd import binary, locate
from nvdocker_setup.errors import Conflict, UsageError, ValidationFailed

if TYPE_CHECKING:
    from nvdocker_setup.apply import ApplyOptions, Decision
    from nvdocker_setup.engines.containerd.config import ContainerdDocument


class ContainerdEngine:
    name = "containerd"
    config_name = "config.toml"
    daemon_name = "containerd"

    def __init__(self) -> None:
        self._installed: Optional[Tuple[Context, binary.Installed]] = None

    def installed(self, ctx: Context) -> binary.Installed:
        """The containerd that reads the file (asked once per context)."""
        if self._installed is None or self._installed[0] is not ctx:
            self._installed = (ctx, binary.installed(ctx))
        return self._installed[1]

    def running(self, ctx: Context) -> List[str]:
        return ["containerd pid {}".format(proc.pid) for proc in locate.system_containerds(ctx)]

    def locate(self, ctx: Context, explicit: Optional[str]) -> ConfigLocation:
        return locate.locate_config(ctx, explicit)

    def load(self, ctx: Context, snapshot: FileSnapshot, notices: List[str]) -> "ContainerdDocument":
        from nvdocker_setup.engines.containerd.config import ContainerdDocument

        version = self.installed(ctx).schema_version
        if not snapshot.exists:
            notices.append("{} does not exist yet; containerd runs with its defaults (config version {} for {})".format(
                snapshot.path, version, self.installed(ctx).shown))
            return ContainerdDocument.empty(snapshot.path, version)
        document = ContainerdDocument.parse(snapshot.data, snapshot.path, empty_version=version)
        if not snapshot.data.strip():
            notices.append("{} is empty; containerd runs with its defaults".format(snapshot.path))
        return document

    def parse(self, data: bytes, source: str) -> "ContainerdDocument":
        from nvdocker_setup.engines.containerd.config import ContainerdDocument

        return ContainerdDocument.parse(data, source)

    def empty(self, ctx: Context, source: str) -> "ContainerdDocument":
        from nvdocker_setup.engines.containerd.config import ContainerdDocument

        return ContainerdDocument.empty(source, self.installed(ctx).schema_version)

    def check_request(self, ctx: Context, request: InstallRequest) -> None:
        validate_request(request)
        if request.runtime_args:
            raise UsageError(
                "containerd's runc handlers take no runtime arguments (got --runtime-arg {})".format(
                    " --runtime-arg ".join(request.runtime_args)),
                hint="drop --runtime-arg; configure the runtime in /etc/nvdocker/runtime.conf instead",
                reference="containerd-runtime-args",
            )

    def plan_install(
        self, ctx: Context, document: Any, request: InstallRequest, record: Optional[InstallRecord]
    ) -> Plan:
        from nvdocker_setup.engines.containerd import plan

        found = self.installed(ctx)
        refuse_v1_on_2(document, found)
        has_cdi = found.has_cdi
        if _drop_in_mode(document, request, record):
            from nvdocker_setup.engines.containerd import dropin

            return dropin.plan(ctx, found, document, request, record, cdi_supported=has_cdi is not False)
        result = plan.plan_install(document, request, record, cdi_supported=has_cdi is not False)
        if request.enable_cdi and has_cdi is None:
            result.warnings.append("could not tell containerd's version: CDI needs containerd 1.7 or newer")
        if document.imports and request.write_mode is None and result.changed:
            result.warnings.append(
                "{} imports {}: edited in place, which every containerd version reads (a drop-in is merged only by "
                "containerd 2.1 and later: --drop-in); an imported file that defines the same handler would win".format(
                    document.source, ", ".join(document.imports)))
        return result

    def plan_uninstall(
        self, document: Any, name: str, record: Optional[InstallRecord], force: bool, extra: bool = False
    ) -> Plan:
        from nvdocker_setup.engines.containerd import plan

        if record is not None and record.extra_files:
            if extra:
                return plan.plan_uninstall(document, name, plan.drop_in_record_part(record), force)
            return plan.plan_uninstall_drop_in_main(document, record)
        return plan.plan_uninstall(document, name, record, force)

    def check_candidate(self, before: Any, after: Any) -> List[str]:
        """The plan re-parses its result and checks every table on our path; containerd's own parser
        runs on the written file (:meth:`validator`)."""
        return []

    def validator(self, ctx: Context, original: FileSnapshot, warnings: List[str]) -> Optional[Callable[[str], None]]:
        found = self.installed(ctx)
        if found.path is None:
            warnings.append("no containerd binary here to check the new file with (`containerd config dump`)")
            return None

        def validate(temp_path: str) -> None:
            verdict = binary.config_dump(ctx, found.path, temp_path)
            if not verdict.ran or verdict.ok:
                return
            if original.exists:
                before = binary.config_dump(ctx, found.path, original.real_path)
                if before.ran and not before.ok:
                    warnings.append("{} rejects the current {} too: {}".format(
                        found.shown, original.path, "; ".join(before.messages[-3:])))
                    return
            raise ValidationFailed(
                "{} rejected the new config.toml (`containerd config dump`); nothing was written".format(found.shown),
                details=verdict.messages,
                reference="containerd-config-rejected",
            )

        return validate

    def entry_label(self, name: str) -> str:
        return "handler {}".format(name)

    def entry(self, value: Dict[str, Any], name: str) -> Any:
        from nvdocker_setup.engines.containerd import plan

        return plan.runtime_entry(value, name)

    def decide(
        self,
        ctx: Context,
        options: "ApplyOptions",
        location: ConfigLocation,
        runtime_name: str,
        before: Any,
        after: Any,
        check_hook: bool,
    ) -> "Decision":
        from nvdocker_setup.engines.containerd import apply, plan

        expected_binary = entry_binary(self.name, plan.runtime_entry(after.value, runtime_name))
        default = plan.default_runtime_name(after.value)
        decision = apply.decide(
            ctx, options, runtime_name, before.value, after.value,
            expected_binary if isinstance(expected_binary, str) else None,
            default if isinstance(default, str) else None,
        )
        if decision.report.method == "restart":
            self._refuse_unloadable_rollback(ctx, location.path, decision.report.notes)
        return decision

    def _refuse_unloadable_rollback(self, ctx: Context, path: str, notes: List[str]) -> None:
        """Before a restart, and before anything is written: the files on disk now are what a rollback
        restores. When containerd's own parser (``config dump``, imports included) rejects them, a failed
        apply could not bring containerd back: refuse. The new file is judged the same way by
        :meth:`validator` on the written temp file, before it replaces the real one and before the restart."""
        import os

        from nvdocker_setup.errors import WouldNotStart

        if not os.path.exists(path):
            return  # a rollback removes the file: containerd starts with its defaults
        found = self.installed(ctx)
        if found.path is None:
            notes.append("no containerd binary here to check {} with (`containerd config dump`)".format(path))
            return
        verdict = binary.config_dump(ctx, found.path, path)
        if not verdict.ran:
            notes.append("could not run `{} config dump` on {}: {}".format(found.shown, path, verdict.output))
            return
        if verdict.ok:
            return
        raise WouldNotStart(
            "containerd could not start again on {} ({} rejects it): applying could take the running containerd "
            "down; nothing was written".format(path, found.shown),
            details=["the current {} (what a rollback restores): {}".format(path, line) for line in verdict.messages],
            hint="fix {} (and the files it imports) until `{} --config {} config dump` accepts it: containerd "
            "refuses it at start and is running only because it started before the file changed".format(
                path, found.path, path),
        )

    def show(self, value: Dict[str, Any], name: str) -> Dict[str, Any]:
        from nvdocker_setup.engines.containerd import plan

        default = plan.default_runtime_name(value)
        return {
            "default_runtime": default if isinstance(default, str) else "runc",
            "default_runtime_source": "config.toml" if default is not None else "containerd's built-in default",
            "cdi": plan.cdi_enabled(value),
        }

    def merge_view(self, values: List[Dict[str, Any]]) -> Dict[str, Any]:
        """containerd 2.1's import semantics (the only ones drop-ins are written for): tables merge key by key,
        later files win."""
        merged: Dict[str, Any] = {}
        for value in values:
            _merge(merged, value)
        return merged

    def reload_hint(self) -> str:
        return "containerd was not told: restart it to use the restored file (systemctl restart containerd; running " \
            "containers keep running), or check with `nvdocker-setup show --engine containerd`"


def refuse_v1_on_2(document: Any, found: binary.Installed) -> None:
    """containerd 2.x reads a version 1 file (no ``version`` key) but drops its CRI runtimes (2.1.9 logs
    "Ignoring unknown key in TOML for plugin"): a handler written there would never reach the CRI."""
    if document.version != 1 or document.implicit_version or found.version is None or found.version < (2, 0, 0):
        return
    raise Conflict(
        "{} is a version 1 config (no 'version' key), and {} ignores a version 1 file's CRI runtimes: a handler "
        "added to it would never be used".format(document.source, found.shown),
        reference="containerd-config-v1-on-2",
        hint="rewrite it as version 2 (add 'version = 2' and rename every [plugins.cri...] table to "
        "[plugins.\"io.containerd.grpc.v1.cri\"...]; `containerd config migrate` of 2.x drops a version 1 file's CRI "
        "settings too), check it with `containerd --config FILE config dump`, then install again (nothing was "
        "written)",
    )


def _drop_in_mode(document: Any, request: InstallRequest, record: Optional[InstallRecord]) -> bool:
    """Whether this install writes a drop-in: asked for, or what the record says the first install did."""
    recorded = record is not None and bool(record.extra_files)
    if request.write_mode == "in-place" and recorded:
        raise Conflict("runtimes.{} was installed as a drop-in; not editing {} in place".format(
            request.runtime_name, document.source), reference="containerd-write-mode-mismatch",
            hint="uninstall first, then install in place")
    if request.write_mode == "drop-in" and record is not None and not recorded:
        raise Conflict("runtimes.{} was installed in place in {}; not adding a drop-in".format(
            request.runtime_name, document.source), reference="containerd-write-mode-mismatch",
            hint="uninstall first, then install with --drop-in")
    return request.write_mode == "drop-in" or recorded


def _merge(into: Dict[str, Any], value: Dict[str, Any]) -> None:
    for key, item in value.items():
        if isinstance(item, dict) and isinstance(into.get(key), dict):
            _merge(into[key], item)
        else:
            into[key] = copy.deepcopy(item)
