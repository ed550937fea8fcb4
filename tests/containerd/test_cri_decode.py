"""The hand-written StatusResponse decoder of nvdocker_setup.engines.containerd.cri, on hand-encoded
messages: known and unknown fields, every truncation, huge length prefixes, malformed varints."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdocker_setup.engines.containerd import cri
from nvdocker_setup.engines.containerd.cri import CriResponseInvalid, WireError, decode_status, iter_fields, read_varint
from nvdocker_setup.errors import NvdockerError
from tests.support.containerd import REPO


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def boolean(number: int, value: bool) -> bytes:
    return key(number, 0) + varint(int(value))


def condition(kind: str, status: bool, reason: str = "", message: str = "", extra: bytes = b"") -> bytes:
    body = length(1, kind.encode())
    if status:  # proto3 leaves false out
        body += boolean(2, True)
    if reason:
        body += length(3, reason.encode())
    if message:
        body += length(4, message.encode())
    return body + extra


def entry(name: str, value: str) -> bytes:
    return length(1, name.encode()) + length(2, value.encode())


CONFIG = {
    "containerd": {
        "defaultRuntimeName": "runc",
        "runtimes": {
            "runc": {"runtimeType": "io.containerd.runc.v2", "options": {"BinaryName": "", "SystemdCgroup": False}},
            "nvidia": {"runtimeType": "io.containerd.runc.v2",
                       "options": {"BinaryName": "/usr/bin/nvidia-container-runtime", "SystemdCgroup": True}},
        },
    },
    "enableCDI": True,
    "cdiSpecDirs": ["/etc/cdi", "/var/run/cdi"],
}


def response(conditions=(), info=None, extra: bytes = b"") -> bytes:
    status = b"".join(length(1, c) for c in conditions)
    body = length(1, status)
    for name, value in (info or {}).items():
        body += length(2, entry(name, value))
    return body + extra


HEALTHY = response(
    [condition("RuntimeReady", True), condition("NetworkReady", False, "NetworkPluginNotReady", "cni plugin not initialized")],
    {"config": json.dumps(CONFIG), "golang": "go1.19"},
)


def test_a_healthy_response():
    status = decode_status(HEALTHY)
    assert [(c.type, c.status) for c in status.conditions] == [("RuntimeReady", True), ("NetworkReady", False)]
    assert status.conditions[1].reason == "NetworkPluginNotReady"
    assert status.conditions[1].message == "cni plugin not initialized"
    assert status.info["golang"] == "go1.19"
    assert status.config == CONFIG and status.config_problem is None
    assert status.ready() and status.problems() == []  # NetworkReady false is normal without CNI
    assert status.runtimes() == {
        "runc": {"runtime_type": "io.containerd.runc.v2", "binary_name": None,
                 "options": {"BinaryName": "", "SystemdCgroup": False}},
        "nvidia": {"runtime_type": "io.containerd.runc.v2", "binary_name": "/usr/bin/nvidia-container-runtime",
                   "options": {"BinaryName": "/usr/bin/nvidia-container-runtime", "SystemdCgroup": True}},
    }
    assert status.default_runtime_name == "runc"
    assert status.enable_cdi is True
    assert status.cdi_spec_dirs == ["/etc/cdi", "/var/run/cdi"]


def test_an_empty_response_is_valid_but_not_ready():
    status = decode_status(b"")
    assert status.conditions == [] and status.info == {} and status.config == {}
    assert status.config_problem == "the Status info has no `config` entry"
    assert not status.ready()
    assert status.problems() == ["CRI Status reports no RuntimeReady condition"]
    assert status.runtimes() == {} and status.default_runtime_name is None
    assert status.enable_cdi is None and status.cdi_spec_dirs == []


def test_runtime_not_ready_is_a_problem_with_its_reason():
    status = decode_status(response([condition("RuntimeReady", False, "RuntimeNotReady", "shim failed")]))
    assert not status.ready()
    assert status.problems() == ["CRI RuntimeReady is false (RuntimeNotReady: shim failed)"]


def test_unknown_fields_are_skipped_at_every_level():
    unknown = (key(9, 0) + varint(2**63) + key(10, 1) + b"\x00" * 8 + key(11, 5) + b"\x00" * 4
               + length(12, b"\xff\xfe anything"))
    status_msg = length(1, condition("RuntimeReady", True, extra=unknown)) + unknown
    entry_msg = entry("config", json.dumps(CONFIG)) + unknown
    data = unknown + length(1, status_msg) + length(2, entry_msg) + unknown + length(3, b"future")
    status = decode_status(data)
    assert status.ready() and status.config == CONFIG
    assert status.runtimes()["nvidia"]["binary_name"] == "/usr/bin/nvidia-container-runtime"


def test_repeated_map_keys_keep_the_last_and_fields_may_come_in_any_order():
    data = length(2, entry("config", "{}")) + length(2, entry("config", json.dumps(CONFIG))) + \
        length(1, length(1, condition("RuntimeReady", True)))
    status = decode_status(data)
    assert status.config == CONFIG and status.ready()


def test_every_truncation_is_a_clean_error_or_a_shorter_message():
    for cut in range(len(HEALTHY)):
        try:
            decode_status(HEALTHY[:cut])
        except CriResponseInvalid as error:
            assert error.reference == "cri-response-invalid"
            assert "not a valid StatusResponse" in error.message


@pytest.mark.parametrize("data, why", [
    (key(2, 2) + varint(2**40) + b"abc", "claims 1099511627776 bytes, 3 remain"),
    (key(1, 2) + varint(2**64 - 1), "claims"),
    (length(1, key(1, 2) + varint(10**9)), "claims 1000000000 bytes"),
    (key(1, 2) + b"\xff" * 11, "longer than 10 bytes"),
    (key(1, 2) + b"\xff" * 9 + b"\x7f", "exceeds 64 bits"),
    (b"\x80", "truncated varint"),
    (key(1, 0), "truncated varint"),
    (b"\x00\x01", "invalid field number 0"),
    (key(5, 3) + key(5, 4), "unsupported wire type 3"),
    (key(5, 6), "unsupported wire type 6"),
    (key(7, 1) + b"\x00" * 7, "truncated fixed64"),
    (key(7, 5) + b"\x00" * 3, "truncated fixed32"),
    (key(1, 0) + varint(1), "StatusResponse.status has wire type 0"),
    (length(2, key(1, 0) + varint(3)), "info key has wire type 0"),
    (length(1, length(1, key(2, 2) + varint(0))), "RuntimeCondition.status has wire type 2"),
])
def test_malformed_messages(data, why):
    with pytest.raises(CriResponseInvalid) as caught:
        decode_status(data)
    assert why in caught.value.message
    assert isinstance(caught.value, NvdockerError) and caught.value.hint


def test_an_oversized_message_is_refused_before_parsing():
    with pytest.raises(CriResponseInvalid, match="more than the 16777216 accepted"):
        decode_status(b"\x00" * (cri.MAX_RESPONSE + 1))


def test_varint_reader():
    assert read_varint(varint(0), 0) == (0, 1)
    assert read_varint(varint(300), 0) == (300, 2)
    assert read_varint(varint(2**64 - 1), 0) == (2**64 - 1, 10)
    assert read_varint(b"\x00" + varint(150), 1) == (150, 3)
    with pytest.raises(WireError):
        read_varint(b"\x96", 0)
    assert list(iter_fields(key(3, 5) + b"abcd" + boolean(1, True))) == [(1, 0, 1)]


@pytest.mark.parametrize("raw, problem", [
    ("not json", 'info["config"] is not JSON'),
    ("[1, 2]", 'info["config"] is a JSON list, not an object'),
    ("[" * 200000, 'info["config"] is not JSON'),  # deeper than Python's recursion limit
    ('{"a":' * 200000, 'info["config"] is not JSON'),
])
def test_an_invalid_config_is_kept_as_a_problem(raw, problem):
    status = decode_status(response([condition("RuntimeReady", True)], {"config": raw}))
    assert status.config == {} and status.config_problem.startswith(problem)
    assert status.ready() and status.runtimes() == {}


def test_odd_shapes_inside_the_config_are_ignored():
    config = {"containerd": {"runtimes": {"bad": "x", "n": {"runtime_type": "io.containerd.runc.v2",
                                                            "options": {"binary_name": "/x"}}, "o": {"options": None}},
                             "default_runtime_name": "n"},
              "enable_cdi": "yes", "cdi_spec_dirs": "/etc/cdi"}
    status = decode_status(response([], {"config": json.dumps(config)}))
    assert status.runtimes() == {
        "n": {"runtime_type": "io.containerd.runc.v2", "binary_name": "/x", "options": {"binary_name": "/x"}},
        "o": {"runtime_type": None, "binary_name": None, "options": {}},
    }
    assert status.default_runtime_name == "n" and status.enable_cdi is None and status.cdi_spec_dirs == []
    assert decode_status(response([], {"config": json.dumps({"containerd": []})})).runtimes() == {}


def test_invalid_utf8_is_replaced_not_raised():
    data = length(1, length(1, length(1, b"Runtime\xffReady") + boolean(2, True)))
    assert decode_status(data).conditions[0].type == "Runtime\ufffdReady"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_fail_cleanly(data):
    try:
        decode_status(data)
    except CriResponseInvalid:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(HEALTHY) - 1), st.integers(min_value=0, max_value=255))
def test_any_corrupted_byte_decodes_or_fails_cleanly(position, value):
    data = bytearray(HEALTHY)
    data[position] = value
    try:
        decode_status(bytes(data))
    except CriResponseInvalid:
        pass


def test_importable_without_grpc_and_a_clear_error_when_called():
    code = (
        "import sys; sys.modules['grpc'] = None\n"
        "from nvdocker_setup.engines.containerd import cri\n"
        "try:\n    cri.status('/nonexistent.sock', 1)\n"
        "except cri.GrpcMissing as e:\n    print(e.reference, '|', e.hint)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr.decode()
    reference, hint = done.stdout.decode().strip().split(" | ")
    assert reference == "grpcio-missing"
    assert "python3-grpcio" in hint and "pip install grpcio" in hint
