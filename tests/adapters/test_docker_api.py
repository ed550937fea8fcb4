"""The Engine API client against a small fake dockerd serving HTTP on a unix socket in tmp."""

import http.server
import json
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

from nvdocker_setup.adapters.docker_api import (
    DEFAULT_SOCKET,
    DockerAPI,
    DockerUnreachable,
    default_socket,
    socket_from_docker_host,
)
from nvdocker_setup.errors import NvdockerError

INFO = {
    "ServerVersion": "20.10.24",
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
    "ContainersRunning": 2,
    "LiveRestoreEnabled": False,
}

#: path -> (status, body, extra headers); "chunked" in headers sends the body in chunks.
Routes = Dict[str, Tuple[int, bytes, Dict[str, str]]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_FakeDockerd"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append((self.command, self.path, self.headers.get("Host")))
        status, body, headers = self.server.routes.get(self.path, (404, b'{"message":"page not found"}', {}))
        self.send_response(status)
        self.send_header("Content-Type", headers.get("Content-Type", "application/json"))
        if headers.get("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = int(headers["chunked"])
            for start in range(0, len(body), step):
                piece = body[start:start + step]
                self.wfile.write("{:x}\r\n".format(len(piece)).encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except BrokenPipeError:  # the client under test gave up first (timeout cases)
                pass

    def log_message(self, format: str, *args) -> None:  # a unix peer has no address to log
        pass


class _FakeDockerd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, routes: Routes) -> None:
        self.routes = routes
        self.requests = []
        super().__init__(path, _Handler)


@pytest.fixture
def fake_dockerd(tmp_path: Path) -> Iterator[_FakeDockerd]:
    routes: Routes = {
        "/_ping": (200, b"OK", {"Content-Type": "text/plain"}),
        "/info": (200, json.dumps(INFO).encode(), {}),
        "/version": (200, b'{"Version": "20.10.24", "ApiVersion": "1.41"}', {}),
        "/containers/json": (200, b'[{"Id": "abc", "State": "running"}]', {}),
    }
    server = _FakeDockerd(str(tmp_path / "docker.sock"), routes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def api(server: _FakeDockerd, timeout: float = 5.0) -> DockerAPI:
    return DockerAPI(server.server_address, timeout=timeout)


# -- answers --------------------------------------------------------------------------------------

def test_ping_true(fake_dockerd):
    assert api(fake_dockerd).ping() is True
    assert fake_dockerd.requests == [("GET", "/_ping", "docker")]


def test_ping_accepts_a_trailing_newline(fake_dockerd):
    fake_dockerd.routes["/_ping"] = (200, b"OK\n", {"Content-Type": "text/plain"})
    assert api(fake_dockerd).ping() is True


@pytest.mark.parametrize("status, body", [(500, b"OK"), (200, b"NOT OK"), (200, b""), (503, b"")])
def test_ping_false_on_a_bad_answer(fake_dockerd, status, body):
    fake_dockerd.routes["/_ping"] = (status, body, {})
    assert api(fake_dockerd).ping() is False


def test_ping_false_without_a_daemon(tmp_path):
    assert DockerAPI(str(tmp_path / "missing.sock")).ping() is False


def test_info_version_and_containers(fake_dockerd):
    client = api(fake_dockerd)
    assert client.info() == INFO
    assert client.version()["ApiVersion"] == "1.41"
    assert client.running_containers() == [{"Id": "abc", "State": "running"}]
    assert [path for _, path, _ in fake_dockerd.requests] == ["/info", "/version", "/containers/json"]


def test_chunked_response(fake_dockerd):
    fake_dockerd.routes["/info"] = (200, json.dumps(INFO).encode(), {"chunked": "7"})
    assert api(fake_dockerd).info() == INFO


def test_a_large_response(fake_dockerd):
    big = dict(INFO, Labels=["label-{}={}".format(i, "x" * 50) for i in range(5000)])
    fake_dockerd.routes["/info"] = (200, json.dumps(big).encode(), {"chunked": "65536"})
    assert api(fake_dockerd).info()["Labels"][4999].startswith("label-4999=")


def test_non_200_is_unreachable_with_status_and_path(fake_dockerd):
    fake_dockerd.routes["/info"] = (500, b'{"message":"boom"}', {})
    with pytest.raises(DockerUnreachable) as caught:
        api(fake_dockerd).info()
    message = str(caught.value)
    assert "500" in message and "GET /info" in message and fake_dockerd.server_address in message
    assert caught.value.reference == "docker-unreachable"
    assert isinstance(caught.value, NvdockerError)


def test_unknown_path_is_unreachable(fake_dockerd):
    del fake_dockerd.routes["/version"]
    with pytest.raises(DockerUnreachable, match="404"):
        api(fake_dockerd).version()


@pytest.mark.parametrize("body", [b"not json", b"{", b"\xff\xfe", b""])
def test_invalid_json_is_unreachable(fake_dockerd, body):
    fake_dockerd.routes["/info"] = (200, body, {})
    with pytest.raises(DockerUnreachable, match="invalid JSON for GET /info"):
        api(fake_dockerd).info()


# -- no daemon, or a broken one ----------------------------------------------------------------------

def test_missing_socket_is_unreachable_naming_the_path(tmp_path):
    path = str(tmp_path / "nothing-here.sock")
    with pytest.raises(DockerUnreachable) as caught:
        DockerAPI(path).info()
    assert path in caught.value.message
    assert caught.value.hint and "dockerd running" in caught.value.hint


def test_connection_refused_is_unreachable_naming_the_path(tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # bound but never listening: a dockerd that died and left its socket
        with pytest.raises(DockerUnreachable) as caught:
            DockerAPI(path).info()
    assert path in caught.value.message
    assert "refused" in caught.value.message.lower()


def test_a_regular_file_is_not_a_socket(tmp_path):
    path = tmp_path / "docker.sock"
    path.write_text("")
    with pytest.raises(DockerUnreachable, match="cannot reach dockerd"):
        DockerAPI(str(path)).info()


def _raw_server(path: str, reply: bytes, hold: threading.Event) -> threading.Thread:
    """Accept one connection, read the request, send ``reply`` raw, then wait for ``hold`` and close."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                if reply:
                    connection.sendall(reply)
                hold.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("reply", [
    b"",  # closed without an answer
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"short\":",  # body cut off
])
def test_a_broken_answer_is_unreachable(tmp_path, reply):
    path = str(tmp_path / "broken.sock")
    hold = threading.Event()
    if reply.startswith(b"HTTP"):
        hold.set()  # close right after the truncated body
    thread = _raw_server(path, reply, hold)
    try:
        if not reply:
            hold.set()
        with pytest.raises(DockerUnreachable) as caught:
            DockerAPI(path, timeout=5.0).info()
        assert path in caught.value.message
    finally:
        hold.set()
        thread.join(5)


def test_a_daemon_that_never_answers_times_out(tmp_path):
    path = str(tmp_path / "hung.sock")
    hold = threading.Event()
    thread = _raw_server(path, b"", hold)
    try:
        with pytest.raises(DockerUnreachable) as caught:
            DockerAPI(path, timeout=0.3).info()
        assert path in caught.value.message
        assert DockerAPI(path, timeout=0.3).ping() is False
    finally:
        hold.set()
        thread.join(5)


# -- peer credentials ----------------------------------------------------------------------------

def test_peer_pid_of_a_socket_this_process_listens_on(fake_dockerd):
    assert api(fake_dockerd).peer_pid() == os.getpid()


def test_peer_pid_none_without_a_listener(tmp_path):
    assert DockerAPI(str(tmp_path / "missing.sock")).peer_pid() is None
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)
        assert DockerAPI(path).peer_pid() is None


# -- which socket --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("unix:///run/docker.sock", "/run/docker.sock"),
    ("unix:///tmp/x/docker.sock", "/tmp/x/docker.sock"),
    ("tcp://127.0.0.1:2375", None),
    ("ssh://user@host", None),
    ("", None),
    (None, None),
])
def test_socket_from_docker_host(value, expected):
    assert socket_from_docker_host(value) == expected


def test_default_socket_is_var_run_docker_sock():
    assert DEFAULT_SOCKET == "/var/run/docker.sock"
    assert default_socket({}) == DEFAULT_SOCKET
    assert default_socket({"XDG_RUNTIME_DIR": "/run/user/1000"}) == DEFAULT_SOCKET


def test_docker_host_unix_wins():
    env = {"DOCKER_HOST": "unix:///srv/docker.sock", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket(env) == "/srv/docker.sock"
    assert default_socket(env, rootless=True, euid=1000) == "/srv/docker.sock"


def test_docker_host_tcp_is_ignored():
    assert default_socket({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) == DEFAULT_SOCKET
    env = {"DOCKER_HOST": "tcp://10.0.0.1:2376", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket(env, rootless=True) == "/run/user/1000/docker.sock"


def test_rootless_uses_xdg_runtime_dir_then_run_user_euid():
    assert default_socket({"XDG_RUNTIME_DIR": "/run/user/1000"}, rootless=True, euid=1000) == "/run/user/1000/docker.sock"
    assert default_socket({}, rootless=True, euid=1234) == "/run/user/1234/docker.sock"
    assert default_socket({"XDG_RUNTIME_DIR": ""}, rootless=True, euid=1234) == "/run/user/1234/docker.sock"
    assert default_socket({}, rootless=True) == "/run/user/{}/docker.sock".format(os.geteuid())
