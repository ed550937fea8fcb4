"""containerd's live CRI configuration, from the CRI ``RuntimeService/Status`` call.

``Status`` with ``verbose = true`` answers the runtime conditions and an ``info`` map whose ``config``
entry is the CRI plugin's merged configuration as JSON: what Kubernetes would get, after every
import and default was applied. That is the judge of whether a runtime handler was taken.

No generated stubs and no protobuf package: the request is two fixed bytes and the response is read
by the small wire-format reader below (bounded; malformed input is a :class:`CriResponseInvalid`).
grpc is imported only inside :func:`status`, so this module imports without it.
"""

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from nvdocker_setup.errors import DaemonUnreachable, NvdockerError

#: ``StatusRequest{verbose: true}``: field 1, wire type 0 (varint), value 1.
STATUS_REQUEST = b"\x08\x01"
METHODS = ("/runtime.v1.RuntimeService/Status", "/runtime.v1alpha2.RuntimeService/Status")
#: The largest response accepted (containerd's own info map is a few KiB).
MAX_RESPONSE = 16 * 1024 * 1024

_GRPC_HINT = "install python3-grpcio (Debian/Ubuntu), python3-grpcio (Fedora/RHEL) or `pip install grpcio`"


class CriError(NvdockerError):
    """The CRI Status call failed."""

    reference = "cri-status-failed"


class CriUnreachable(CriError, DaemonUnreachable):
    """Nothing answers on containerd's socket (missing, refused, or no answer before the deadline)."""

    reference = "containerd-unreachable"


class CriUnavailable(CriError):
    """containerd answers, but serves neither CRI v1 nor v1alpha2 (its CRI plugin is disabled or failed)."""

    reference = "cri-unavailable"


class CriResponseInvalid(CriError):
    """The Status response is not a well-formed StatusResponse message."""

    reference = "cri-response-invalid"


class GrpcMissing(NvdockerError):
    """The grpc Python package is not importable."""

    reference = "grpcio-missing"


# -- protobuf wire format -------------------------------------------------------------------------------


class WireError(ValueError):
    """A malformed or truncated protobuf message."""


VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """(value, next position) of the base-128 varint at ``pos``; at most 10 bytes, below 2**64."""
    value = 0
    for index in range(10):
        if pos + index >= len(data):
            raise WireError("truncated varint at offset {}".format(pos))
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value >= 1 << 64:
                raise WireError("varint at offset {} exceeds 64 bits".format(pos))
            return value, pos + index + 1
    raise WireError("varint at offset {} is longer than 10 bytes".format(pos))


def iter_fields(data: bytes) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: an int for varints, bytes for length-delimited
    fields; fixed32/fixed64 fields are checked for length and skipped. Groups are refused."""
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise WireError("invalid field number {} at offset {}".format(number, start))
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
            yield number, wire_type, value
        elif wire_type == LENGTH:
            length, pos = read_varint(data, pos)
            if length > end - pos:
                raise WireError("field {} at offset {} claims {} bytes, {} remain".format(number, start, length, end - pos))
            yield number, wire_type, bytes(data[pos:pos + length])
            pos += length
        elif wire_type in (FIXED32, FIXED64):
            size = 4 if wire_type == FIXED32 else 8
            if size > end - pos:
                raise WireError("truncated fixed{} field {} at offset {}".format(size * 8, number, start))
            pos += size
        else:
            raise WireError("unsupported wire type {} (field {}) at offset {}".format(wire_type, number, start))


def _expect(wire_type: int, wanted: int, what: str) -> None:
    if wire_type != wanted:
        raise WireError("{} has wire type {}, expected {}".format(what, wire_type, wanted))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


# -- StatusResponse -------------------------------------------------------------------------------------


@dataclass
class RuntimeCondition:
    """One ``RuntimeCondition``: ``RuntimeReady`` and ``NetworkReady`` are the two containerd reports."""

    type: str = ""
    status: bool = False
    reason: str = ""
    message: str = ""


def decode_condition(data: bytes) -> RuntimeCondition:
    condition = RuntimeCondition()
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            _expect(wire_type, LENGTH, "RuntimeCondition.type")
            condition.type = _text(value)
        elif number == 2:
            _expect(wire_type, VARINT, "RuntimeCondition.status")
            condition.status = value != 0
        elif number == 3:
            _expect(wire_type, LENGTH, "RuntimeCondition.reason")
            condition.reason = _text(value)
        elif number == 4:
            _expect(wire_type, LENGTH, "RuntimeCondition.message")
            condition.message = _text(value)
    return condition


def decode_runtime_status(data: bytes) -> List[RuntimeCondition]:
    conditions = []
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            _expect(wire_type, LENGTH, "RuntimeStatus.conditions")
            conditions.append(decode_condition(value))
    return conditions


def decode_map_entry(data: bytes) -> Tuple[str, str]:
    key = value_text = ""
    for number, wire_type, value in iter_fields(data):
        if number == 1:
            _expect(wire_type, LENGTH, "info key")
            key = _text(value)
        elif number == 2:
            _expect(wire_type, LENGTH, "info value")
            value_text = _text(value)
    return key, value_text


def decode_status(data: bytes, api: str = "v1") -> "CriStatus":
    """A ``StatusResponse`` (field 1 RuntimeStatus, field 2 map<string, string> info); a
    :class:`CriResponseInvalid` when it is malformed."""
    conditions: List[RuntimeCondition] = []
    info: Dict[str, str] = {}
    try:
        if len(data) > MAX_RESPONSE:
            raise WireError("{} bytes is more than the {} accepted".format(len(data), MAX_RESPONSE))
        for number, wire_type, value in iter_fields(data):
            if number == 1:
                _expect(wire_type, LENGTH, "StatusResponse.status")
                conditions.extend(decode_runtime_status(value))
            elif number == 2:
                _expect(wire_type, LENGTH, "StatusResponse.info")
                key, text = decode_map_entry(value)
                info[key] = text
    except WireError as error:
        raise CriResponseInvalid(
            "containerd's CRI Status response is not a valid StatusResponse: {}".format(error),
            hint="is the socket containerd's? (a proxy or another gRPC server may answer there)",
        ) from None
    return CriStatus.build(conditions, info, api)


def _get(mapping: Any, *names: str) -> Any:
    """The first of ``names`` present in ``mapping`` (containerd's JSON tags are camelCase, its TOML
    keys snake_case; accept both)."""
    if isinstance(mapping, dict):
        for name in names:
            if name in mapping:
                return mapping[name]
    return None


@dataclass
class CriStatus:
    """What ``RuntimeService/Status`` (verbose) said."""

    conditions: List[RuntimeCondition] = field(default_factory=list)
    info: Dict[str, str] = field(default_factory=dict)
    #: ``info["config"]`` parsed ({} when absent or not a JSON object; why in ``config_problem``).
    config: Dict[str, Any] = field(default_factory=dict)
    config_problem: Optional[str] = None
    #: "v1" or "v1alpha2": the CRI API version that answered.
    api: str = "v1"

    @classmethod
    def build(cls, conditions: List[RuntimeCondition], info: Dict[str, str], api: str = "v1") -> "CriStatus":
        config: Dict[str, Any] = {}
        problem: Optional[str] = None
        raw = info.get("config")
        if raw is None:
            problem = "the Status info has no `config` entry"
        else:
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than Python goes
                problem = "info[\"config\"] is not JSON: {}".format(error)
            else:
                if isinstance(parsed, dict):
                    config = parsed
                else:
                    problem = "info[\"config\"] is a JSON {}, not an object".format(type(parsed).__name__)
        return cls(conditions=conditions, info=info, config=config, config_problem=problem, api=api)

    def condition(self, kind: str) -> Optional[RuntimeCondition]:
        for condition in self.conditions:
            if condition.type == kind:
                return condition
        return None

    def ready(self) -> bool:
        """RuntimeReady is reported and true (NetworkReady does not count: no CNI is normal here)."""
        condition = self.condition("RuntimeReady")
        return condition is not None and condition.status

    def problems(self) -> List[str]:
        """One line per reason not to trust this containerd's CRI runtime."""
        condition = self.condition("RuntimeReady")
        if condition is None:
            return ["CRI Status reports no RuntimeReady condition"]
        if condition.status:
            return []
        why = ": ".join(part for part in (condition.reason, condition.message) if part)
        return ["CRI RuntimeReady is false" + (" ({})".format(why) if why else "")]

    def _containerd(self) -> Dict[str, Any]:
        section = _get(self.config, "containerd")
        return section if isinstance(section, dict) else {}

    def runtimes(self) -> Dict[str, Dict[str, Any]]:
        """{handler: {"runtime_type", "binary_name", "options"}} from ``config.containerd.runtimes``."""
        result: Dict[str, Dict[str, Any]] = {}
        runtimes = _get(self._containerd(), "runtimes")
        if not isinstance(runtimes, dict):
            return result
        for name, entry in runtimes.items():
            if not isinstance(entry, dict):
                continue
            options = _get(entry, "options")
            options = options if isinstance(options, dict) else {}
            binary = _get(options, "BinaryName", "binary_name")
            result[str(name)] = {
                "runtime_type": _get(entry, "runtimeType", "runtime_type"),
                "binary_name": binary if isinstance(binary, str) and binary else None,
                "options": options,
            }
        return result

    @property
    def default_runtime_name(self) -> Optional[str]:
        value = _get(self._containerd(), "defaultRuntimeName", "default_runtime_name")
        return value if isinstance(value, str) else None

    @property
    def enable_cdi(self) -> Optional[bool]:
        value = _get(self.config, "enableCDI", "enable_cdi")
        return value if isinstance(value, bool) else None

    @property
    def cdi_spec_dirs(self) -> List[str]:
        value = _get(self.config, "cdiSpecDirs", "cdi_spec_dirs")
        return [str(item) for item in value] if isinstance(value, list) else []


# -- the call ---------------------------------------------------------------------------------------------


def _identity(payload: bytes) -> bytes:
    return payload


def _import_grpc() -> Any:
    try:
        import grpc
    except ImportError as error:
        raise GrpcMissing(
            "the CRI Status check needs the grpc Python package: {}".format(error), hint=_GRPC_HINT,
        ) from None
    return grpc


def status(socket_path: str, timeout: float = 5.0) -> CriStatus:
    """``RuntimeService/Status`` (verbose) on containerd's socket within ``timeout`` seconds in all.

    Tries CRI v1, then v1alpha2 when v1 is UNIMPLEMENTED (containerd < 1.5 or a v1alpha2-only plugin).
    """
    grpc = _import_grpc()
    socket_path = os.path.abspath(socket_path)
    hint = "is containerd running with this socket as its grpc address? (`ctr --address {} version`)".format(socket_path)
    if not os.path.exists(socket_path):
        raise CriUnreachable("containerd's socket {} does not exist".format(socket_path), hint=hint)
    deadline = time.monotonic() + timeout
    channel = grpc.insecure_channel(
        "unix://" + socket_path,
        options=[("grpc.max_receive_message_length", MAX_RESPONSE), ("grpc.enable_http_proxy", 0)],
    )
    try:
        unimplemented = []
        for method in METHODS:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CriUnreachable("containerd did not answer on {} within {:g} s".format(socket_path, timeout), hint=hint)
            call = channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
            try:
                response = call(STATUS_REQUEST, timeout=remaining)
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else None
                details = (error.details() if hasattr(error, "details") else None) or str(error)
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    unimplemented.append(method)
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CriUnreachable("containerd did not answer on {} within {:g} s".format(socket_path, timeout),
                                         hint=hint) from None
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise CriUnreachable("cannot reach containerd on {}: {}".format(socket_path, details), hint=hint) from None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise CriResponseInvalid("the CRI Status response is larger than {} bytes: {}".format(MAX_RESPONSE, details)) from None
                raise CriError("CRI Status on {} failed ({}): {}".format(
                    socket_path, code.name if code is not None else "unknown", details)) from None
            return decode_status(response, api=method[len("/runtime."):].split(".")[0])
        raise CriUnavailable(
            "containerd on {} does not serve the CRI API ({} unimplemented)".format(socket_path, ", ".join(unimplemented)),
            hint="is the CRI plugin disabled? see `ctr --address {} plugins ls` and `disabled_plugins`".format(socket_path),
        )
    finally:
        channel.close()
