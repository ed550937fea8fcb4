"""A fake Engine API on a unix socket that answers badly on purpose, for the deadline tests.

Modes, per request (``behaviour`` is a mode or a callable ``path -> mode``):

- ``answer``: the whole HTTP answer at once (Content-Length);
- ``trickle``: the same answer one byte every ``interval`` seconds;
- ``silent``: accept, read the request, never answer;
- ``endless``: headers without Content-Length, then body bytes as fast as the client reads;
- ``chunked-trickle``: chunked headers at once, then a one-byte chunk every ``interval`` seconds
  and never the last chunk.

Every connection is served by a thread that gives up after ``lifetime`` seconds (so a client
without a total deadline fails the test by being slow, instead of hanging it), and ``close()``
stops and joins every thread and removes the socket's directory.
"""

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

INFO: Dict[str, Any] = {
    "ServerVersion": "26.1.5",
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}},
    "ContainersRunning": 0,
    "LiveRestoreEnabled": False,
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "2",
}
VERSION: Dict[str, Any] = {"Version": "26.1.5", "ApiVersion": "1.45", "Os": "linux", "Arch": "amd64"}

Behaviour = Union[str, Callable[[str], str]]


class SlowEngine:
    def __init__(self, behaviour: Behaviour = "trickle", interval: float = 1.0, lifetime: float = 12.0,
                 info: Optional[Dict[str, Any]] = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="nvx.", dir="/tmp")  # short: sun_path has 108 bytes
        self.path = os.path.join(self.dir, "docker.sock")
        self.behaviour = behaviour
        self.interval = interval
        self.lifetime = lifetime
        self.info: Dict[str, Any] = dict(INFO if info is None else info)
        #: (path, mode) of every HTTP request read; bytes sent over all connections.
        self.requests: List[Tuple[str, str]] = []
        self.connections = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self._acceptor = threading.Thread(target=self._accept_loop, name="slow-engine-accept", daemon=True)
        self._acceptor.start()

    @property
    def docker_host(self) -> str:
        return "unix://" + self.path

    # -- server side -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(connection,), name="slow-engine-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _mode(self, path: str) -> str:
        return self.behaviour(path) if callable(self.behaviour) else self.behaviour

    def _body(self, path: str) -> bytes:
        path = path.split("?")[0]
        if path == "/_ping":
            return b"OK"
        if path == "/version":
            return json.dumps(VERSION).encode()
        if path == "/containers/json":
            return b"[]"
        return json.dumps(self.info).encode()

    def _send(self, connection: socket.socket, data: bytes, end: float) -> bool:
        """Send ``data``; False once the client is gone, the server stops or the lifetime is over."""
        view = memoryview(data)
        while view:
            if self._stop.is_set() or time.monotonic() > end:
                return False
            try:
                count = connection.send(view)
            except socket.timeout:
                continue
            except OSError:
                return False
            view = view[count:]
            with self._lock:
                self.sent += count
        return True

    def _serve(self, connection: socket.socket) -> None:
        end = time.monotonic() + self.lifetime
        with connection:
            connection.settimeout(0.1)
            request = b""
            while b"\r\n\r\n" not in request:
                if self._stop.is_set() or time.monotonic() > end or len(request) > 65536:
                    return
                try:
                    data = connection.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                request += data
            parts = request.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            mode = self._mode(path)
            with self._lock:
                self.requests.append((path, mode))
            body = self._body(path)
            answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
            if mode == "answer":
                self._send(connection, answer, end)
            elif mode == "trickle":
                for index in range(len(answer)):
                    if self._stop.wait(self.interval) or not self._send(connection, answer[index:index + 1], end):
                        return
            elif mode == "silent":
                self._stop.wait(max(0.0, end - time.monotonic()))
            elif mode == "endless":
                if not self._send(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n", end):
                    return
                block = b"x" * 65536
                while self._send(connection, block, end):
                    pass
            elif mode == "chunked-trickle":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                if not self._send(connection, head, end):
                    return
                while not self._stop.wait(self.interval) and self._send(connection, b"1\r\n \r\n", end):
                    pass
            else:
                raise ValueError("unknown mode {!r}".format(mode))

    # -- test side -------------------------------------------------------------------------------

    def paths(self) -> List[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def close(self) -> List[threading.Thread]:
        """Stop every thread and remove the socket; the threads still alive (should be none)."""
        self._stop.set()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return [thread for thread in [self._acceptor] + self._threads if thread.is_alive()]


class FullBacklog:
    """A listener that never accepts and whose backlog is full: a client's connect() blocks."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="nvx.", dir="/tmp")
        self.path = os.path.join(self.dir, "docker.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(0)
        self.fillers: List[socket.socket] = []
        for _ in range(2):  # Linux admits backlog + 1 connections to a unix listener
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(self.path)
            except BlockingIOError:
                filler.close()
                break
            self.fillers.append(filler)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()
        shutil.rmtree(self.dir, ignore_errors=True)
