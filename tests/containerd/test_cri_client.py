"""cri.status() against sockets that do not answer and against in-process gRPC servers (no
containerd): the deadline, the v1alpha2 fallback, UNIMPLEMENTED everywhere, an oversized answer."""

import os
import shutil
import socket
import tempfile
import time

import pytest

from nvdocker_setup.engines.containerd import cri
from nvdocker_setup.engines.containerd.cri import CriResponseInvalid, CriUnavailable, CriUnreachable

grpc = pytest.importorskip("grpc")

_CONDITION = b"\x0a\x0cRuntimeReady\x10\x01"  # RuntimeCondition{type: "RuntimeReady", status: true}
_RUNTIME_STATUS = b"\x0a" + bytes([len(_CONDITION)]) + _CONDITION
READY = b"\x0a" + bytes([len(_RUNTIME_STATUS)]) + _RUNTIME_STATUS  # StatusResponse{status: ...}


@pytest.fixture
def short_dir():
    directory = tempfile.mkdtemp(prefix="ctd", dir="/tmp")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_missing_socket(short_dir):
    path = os.path.join(short_dir, "none.sock")
    started = time.monotonic()
    with pytest.raises(CriUnreachable) as caught:
        cri.status(path, 2.0)
    assert time.monotonic() - started < 3.0
    assert caught.value.reference == "containerd-unreachable"
    assert path in caught.value.message and "does not exist" in caught.value.message and caught.value.hint


def test_a_socket_nobody_listens_on(short_dir):
    path = os.path.join(short_dir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: connect() is refused
    try:
        started = time.monotonic()
        with pytest.raises(CriUnreachable) as caught:
            cri.status(path, 2.0)
        assert time.monotonic() - started < 3.0
        assert caught.value.reference == "containerd-unreachable"
    finally:
        stale.close()


def test_a_socket_that_accepts_but_never_answers_hits_the_deadline(short_dir):
    path = os.path.join(short_dir, "mute.sock")
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(path)
    mute.listen(8)  # the kernel accepts the connection, nobody speaks HTTP/2
    try:
        timeout = 1.5
        started = time.monotonic()
        with pytest.raises(CriUnreachable) as caught:
            cri.status(path, timeout)
        elapsed = time.monotonic() - started
        assert elapsed < timeout + 1.0, elapsed
        assert caught.value.reference == "containerd-unreachable"
    finally:
        mute.close()


class FakeCri:
    """A gRPC server on a unix socket serving raw bytes for the named Status methods."""

    def __init__(self, directory: str, services) -> None:
        from concurrent import futures

        self.path = os.path.join(directory, "fake.sock")
        self.calls = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                                  options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        handlers = []
        for service, answer in services.items():
            def status(request, context, service=service, answer=answer):
                self.calls.append((service, request))
                return answer
            handlers.append(grpc.method_handlers_generic_handler(
                service, {"Status": grpc.unary_unary_rpc_method_handler(status)}))
        self.server.add_generic_rpc_handlers(tuple(handlers))
        self.server.add_insecure_port("unix:" + self.path)
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)


def test_v1_answers_with_the_verbose_request(short_dir):
    fake = FakeCri(short_dir, {"runtime.v1.RuntimeService": READY})
    try:
        status = cri.status(fake.path, 5.0)
    finally:
        fake.close()
    assert status.api == "v1" and status.ready()
    assert fake.calls == [("runtime.v1.RuntimeService", b"\x08\x01")]


def test_falls_back_to_v1alpha2_when_v1_is_unimplemented(short_dir):
    fake = FakeCri(short_dir, {"runtime.v1alpha2.RuntimeService": READY})
    try:
        status = cri.status(fake.path, 5.0)
    finally:
        fake.close()
    assert status.api == "v1alpha2" and status.ready()
    assert fake.calls == [("runtime.v1alpha2.RuntimeService", b"\x08\x01")]


def test_no_cri_service_at_all(short_dir):
    fake = FakeCri(short_dir, {"containerd.services.version.v1.Version": b""})
    try:
        with pytest.raises(CriUnavailable) as caught:
            cri.status(fake.path, 5.0)
    finally:
        fake.close()
    assert caught.value.reference == "cri-unavailable"
    assert "/runtime.v1.RuntimeService/Status, /runtime.v1alpha2.RuntimeService/Status" in caught.value.message


def test_an_answer_over_16_mib_is_refused(short_dir):
    big = b"\x1a" + b"\xff\xff\xff\x08" + b"\x00" * (17 * 1024 * 1024)  # an unknown field 3 of 17 MiB
    fake = FakeCri(short_dir, {"runtime.v1.RuntimeService": big})
    try:
        with pytest.raises(CriResponseInvalid) as caught:
            cri.status(fake.path, 10.0)
    finally:
        fake.close()
    assert caught.value.reference == "cri-response-invalid" and "larger than 16777216" in caught.value.message


def test_a_malformed_answer(short_dir):
    fake = FakeCri(short_dir, {"runtime.v1.RuntimeService": b"\x0a\xff\xff\xff\xff\x0f"})
    try:
        with pytest.raises(CriResponseInvalid):
            cri.status(fake.path, 5.0)
    finally:
        fake.close()
