"""Every Engine API call has one total deadline, however the bytes trickle in, and a bounded body.

The fake servers (tests/adapters/slow_engine.py) trickle one byte a second, never answer, send an
endless body, or never accept; a per-read timeout (what http.client does) passes all of them
except the silent one, so these tests fail without a total deadline.
"""

import time

import pytest

from nvdocker_setup.adapters import docker_api
from nvdocker_setup.adapters.docker_api import DockerAPI, DockerTimeout, DockerUnreachable
from nvdocker_setup.adapters.service import pid_lookup
from nvdocker_setup.context import Context
from tests.adapters.slow_engine import INFO, FullBacklog, SlowEngine

#: What a deadline may overrun by on a loaded test machine (thread wake-up, one recv).
SLACK = 0.5


@pytest.fixture
def engines():
    started = []

    def make(*args, **kwargs) -> SlowEngine:
        engine = SlowEngine(*args, **kwargs)
        started.append(engine)
        return engine

    yield make
    for engine in started:
        assert engine.close() == [], "a fake server thread did not stop"


def timed(call):
    start = time.monotonic()
    try:
        return call(), time.monotonic() - start
    except Exception as exc:  # noqa: BLE001 (returned for the test to look at)
        return exc, time.monotonic() - start


def test_a_trickling_answer_fails_at_the_total_deadline(engines):
    engine = engines("trickle", interval=1.0)
    error, elapsed = timed(lambda: DockerAPI(engine.path, timeout=2.0).info())
    assert isinstance(error, DockerTimeout), error
    assert isinstance(error, DockerUnreachable) and error.reference == "docker-unreachable"
    assert error.message == "dockerd at {} did not answer GET /info within 2.0 s".format(engine.path)
    assert 1.9 <= elapsed < 2.0 + SLACK, elapsed
    assert engine.sent >= 1  # bytes did arrive: every single read was quick, the call was not


def test_a_silent_daemon_fails_at_the_total_deadline(engines):
    engine = engines("silent")
    error, elapsed = timed(lambda: DockerAPI(engine.path, timeout=2.0).info())
    assert isinstance(error, DockerTimeout), error
    assert elapsed < 2.0 + SLACK, elapsed
    assert engine.paths() == ["/info"]


def test_a_trickling_chunked_body_fails_at_the_total_deadline(engines):
    engine = engines("chunked-trickle", interval=0.3)
    error, elapsed = timed(lambda: DockerAPI(engine.path, timeout=2.0).version())
    assert isinstance(error, DockerTimeout), error
    assert "GET /version within 2.0 s" in error.message
    assert elapsed < 2.0 + SLACK, elapsed


def test_an_endless_body_is_cut_at_the_size_cap(engines):
    engine = engines("endless")
    error, elapsed = timed(lambda: DockerAPI(engine.path, timeout=5.0).info())
    assert isinstance(error, DockerUnreachable) and not isinstance(error, DockerTimeout), error
    assert "more than {} bytes for GET /info".format(docker_api.MAX_BODY) in error.message
    assert docker_api.MAX_BODY == 16 * 1024 * 1024
    assert elapsed < 5.0 + SLACK, elapsed


def test_an_endless_body_is_cut_at_a_smaller_cap_too(engines, monkeypatch):
    monkeypatch.setattr(docker_api, "MAX_BODY", 100000)
    engine = engines("endless")
    error, _ = timed(lambda: DockerAPI(engine.path, timeout=5.0).info())
    assert isinstance(error, DockerUnreachable) and "more than 100000 bytes" in error.message


def test_an_announced_body_over_the_cap_is_refused_before_reading(tmp_path):
    import socket
    import threading

    path = str(tmp_path / "big.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(5)

    def serve():
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n{")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    error, elapsed = timed(lambda: DockerAPI(path, timeout=5.0).info())
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(error, DockerUnreachable) and "announced 1073741824 bytes" in error.message
    assert elapsed < 1.0


def test_a_slow_but_complete_answer_inside_the_deadline_is_read(engines):
    engine = engines("trickle", interval=0.002)  # ~300 bytes in well under a second
    result, elapsed = timed(lambda: DockerAPI(engine.path, timeout=5.0).info())
    assert result == INFO, result
    assert elapsed < 5.0


def test_a_call_may_ask_for_less_than_the_api_timeout(engines):
    engine = engines("trickle", interval=1.0)
    error, elapsed = timed(lambda: DockerAPI(engine.path, timeout=30.0).info(timeout=1.0))
    assert isinstance(error, DockerTimeout) and "within 1.0 s" in error.message
    assert elapsed < 1.0 + SLACK, elapsed


def test_without_remember_timeout_every_call_waits_again(engines):
    """What apply wants: dockerd may come back between two polls."""
    engine = engines("silent")
    client = DockerAPI(engine.path, timeout=1.0)
    for _ in range(2):
        error, elapsed = timed(client.info)
        assert isinstance(error, DockerTimeout) and 0.9 <= elapsed < 1.0 + SLACK
    assert engine.paths() == ["/info", "/info"]


def test_remember_timeout_fails_later_calls_at_once(engines):
    """What doctor wants: one hung dockerd costs one timeout, not one per check."""
    engine = engines("trickle", interval=1.0)
    client = DockerAPI(engine.path, timeout=2.0, remember_timeout=True)
    error, elapsed = timed(client.info)
    assert isinstance(error, DockerTimeout) and elapsed < 2.0 + SLACK
    start = time.monotonic()
    with pytest.raises(DockerTimeout, match=r"GET /info within 2\.0 s \(not asked again for GET /version\)"):
        client.version()
    assert client.ping() is False
    assert client.peer_pid() is None
    assert time.monotonic() - start < 0.2
    assert engine.paths() == ["/info"]  # nothing else reached the socket


def test_connect_to_a_full_backlog_is_bounded():
    """A listener that never accepts, its backlog full: with a timeout set, Python's unix
    connect() does not block, it fails at once with EAGAIN (a busy dockerd), well inside the
    deadline, for the HTTP calls and for the peer credentials alike."""
    listener = FullBacklog()
    try:
        assert listener.fillers, "could not fill the listen backlog"
        error, elapsed = timed(lambda: DockerAPI(listener.path, timeout=2.0).info())
        assert isinstance(error, DockerUnreachable) and listener.path in error.message, error
        assert elapsed < 2.0 + SLACK, elapsed
        pid, elapsed = timed(lambda: DockerAPI(listener.path, timeout=2.0).peer_pid())
        assert pid is None and elapsed < 2.0 + SLACK, elapsed
    finally:
        listener.close()


def test_the_service_pid_lookup_is_bounded_by_its_2_seconds():
    """service.pid_lookup asks the socket's peer credentials with timeout=2.0, in total."""
    listener = FullBacklog()
    try:
        lookup = pid_lookup(Context(env={}, root="/nonexistent-root"), listener.path, [])
        pid, elapsed = timed(lookup)
        assert pid is None and elapsed < 2.0 + SLACK, elapsed
    finally:
        listener.close()
