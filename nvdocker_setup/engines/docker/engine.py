"""Docker behind the :class:`~nvdocker_setup.engines.base.Engine` interface."""

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from nvdocker_setup.adapters.files import FileSnapshot
from nvdocker_setup.adapters.locate import ConfigLocation, dockerd_processes, locate_config
from nvdocker_setup.context import Context
from nvdocker_setup.core.jsondoc import JsonDocument, empty_document, member_object
from nvdocker_setup.core.plan import InstallRecord, InstallRequest, Plan, validate_request
from nvdocker_setup.engines.docker import plan as docker_plan
from nvdocker_setup.engines.docker.validate import check_candidate, dockerd_validator

if TYPE_CHECKING:
    from nvdocker_setup.apply import ApplyOptions, Decision


class DockerEngine:
    name = "docker"
    config_name = "daemon.json"
    daemon_name = "dockerd"

    def running(self, ctx: Context) -> List[str]:
        return ["dockerd pid {}".format(proc.pid) for proc in dockerd_processes(ctx)]

    def locate(self, ctx: Context, explicit: Optional[str]) -> ConfigLocation:
        return locate_config(ctx, explicit)

    def load(self, ctx: Context, snapshot: FileSnapshot, notices: List[str]) -> JsonDocument:
        if not snapshot.exists:
            notices.append("{} does not exist yet; starting from {{}}".format(snapshot.path))
            return empty_document(snapshot.path)
        document = JsonDocument.parse(snapshot.data, snapshot.path)
        if document.is_empty:
            notices.append("{} is empty; dockerd reads that as {{}}".format(snapshot.path))
        return document

    def parse(self, data: bytes, source: str) -> JsonDocument:
        return JsonDocument.parse(data, source)

    def empty(self, ctx: Context, source: str) -> JsonDocument:
        return empty_document(source)

    def check_request(self, ctx: Context, request: InstallRequest) -> None:
        validate_request(request)
        if request.write_mode == "drop-in":
            from nvdocker_setup.errors import UsageError

            raise UsageError("dockerd reads one daemon.json and has no drop-in files", reference="drop-in-unsupported",
                             hint="drop --drop-in (it is for --engine containerd)")

    def plan_install(
        self, ctx: Context, document: Any, request: InstallRequest, record: Optional[InstallRecord]
    ) -> Plan:
        return docker_plan.plan_install(document, request, record)

    def plan_uninstall(
        self, document: Any, name: str, record: Optional[InstallRecord], force: bool, extra: bool = False
    ) -> Plan:
        return docker_plan.plan_uninstall(document, name, record, force)

    def check_candidate(self, before: Any, after: Any) -> List[str]:
        return check_candidate(before.value, after.value)

    def validator(self, ctx: Context, original: FileSnapshot, warnings: List[str]) -> Optional[Callable[[str], None]]:
        return dockerd_validator(ctx, original, warnings)

    def entry_label(self, name: str) -> str:
        return "runtimes.{}".format(name)

    def entry(self, value: Dict[str, Any], name: str) -> Any:
        return member_object(value, "runtimes").get(name)

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
        from nvdocker_setup.engines.docker.apply import decide

        return decide(
            ctx, options, config_rule=location.rule, runtime_name=runtime_name,
            before=before.value, after=after.value, check_hook=check_hook,
            config_path=location.path, before_data=_bytes_of(before), after_data=_bytes_of(after),
        )

    def show(self, value: Dict[str, Any], name: str) -> Dict[str, Any]:
        default = value.get("default-runtime")
        return {
            "default_runtime": default if isinstance(default, str) else "runc",
            "default_runtime_source": "daemon.json" if default is not None else "dockerd's built-in default",
            "cdi": member_object(value, "features").get("cdi"),
        }

    def merge_view(self, values: List[Dict[str, Any]]) -> Dict[str, Any]:
        return values[0] if values else {}  # daemon.json has no drop-ins

    def reload_hint(self) -> str:
        return "dockerd was not told: reload it to use the restored file (systemctl reload docker), or check with " \
            "`nvdocker-setup doctor`"


def _bytes_of(document: Any) -> Optional[bytes]:
    """A document's bytes as dockerd would read them (a merged view has none: its value, as JSON)."""
    encode = getattr(document, "encode", None)
    if callable(encode):
        data = encode()
        return data if isinstance(data, bytes) else None
    import json

    return json.dumps(document.value).encode()
