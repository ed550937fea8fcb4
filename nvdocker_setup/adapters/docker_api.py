"""A minimal Docker Engine API client over a unix socket (stdlib only).

We trust only what dockerd itself reports: ``systemctl reload`` succeeds even when dockerd
rejects the new file, so verification reads ``GET /info``. The socket's peer credentials also
tell us dockerd's pid without a pidfile (what NVIDIA's installer does with SCM_CREDENTIALS).

Every call has one total deadline on the monotonic clock, not a per-read timeout: connecting,
sending the request, and every ``recv`` of the status line, headers and body get only the time
left, so a socket that trickles a byte every second fails the call after ``timeout`` seconds like
one that never answers. The body is capped at :data:`MAX_BODY` bytes. http.client still parses
the answer (Content-Length, chunked, or until close); only the socket underneath is ours.
"""

import http.client
import json
import os
import socket
import struct
import time
from typing import Any, Dict, List, Mapping, Optional

from nvdocker_setup.errors import DaemonUnreachable

DEFAULT_SOCKET = "/var/run/docker.sock"
#: The most body bytes one answer may have (dockerd's /info is a few KiB; 16 MiB is hostile).
MAX_BODY = 16 * 1024 * 1024
_READ_SIZE = 65536


class DockerUnreachable(DaemonUnreachable):
    reference = "docker-unreachable"


class DockerTimeout(DockerUnreachable):
    """The whole call ran past its deadline: a hung, overloaded or trickling dockerd."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; ``socket.timeout`` (an OSError) once there are none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline of {} s exceeded".format(self.seconds))
        return left


class _DeadlineSocket(socket.socket):
    """A socket whose every blocking operation gets only the time left until one deadline.

    ``makefile()`` (what http.client reads through) calls ``recv_into`` on this object, so the
    status line, the headers and every chunk of the body are covered too.
    """

    deadline: _Deadline

    def connect(self, address) -> None:
        self.settimeout(self.deadline.remaining())
        super().connect(address)

    def sendall(self, data, flags: int = 0) -> None:
        self.settimeout(self.deadline.remaining())
        super().sendall(data, flags)

    def send(self, data, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().send(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.settimeout(self.deadline.remaining())
        return super().recv(bufsize, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(self.deadline.remaining())
        return super().recv_into(buffer, nbytes, flags)


def _deadline_socket(deadline: _Deadline) -> _DeadlineSocket:
    sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.deadline = deadline
    return sock


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, deadline: _Deadline) -> None:
        super().__init__("docker", timeout=deadline.seconds)
        self.socket_path = socket_path
        self.deadline = deadline

    def connect(self) -> None:
        sock = _deadline_socket(self.deadline)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_from_docker_host(docker_host: Optional[str]) -> Optional[str]:
    """The socket path of a ``unix://`` DOCKER_HOST; None for tcp/ssh hosts or when unset."""
    if not docker_host:
        return None
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://") :]
    return None


def default_socket(env: Mapping[str, str], rootless: bool = False, euid: Optional[int] = None) -> str:
    """DOCKER_HOST, else the rootless daemon's socket, else /var/run/docker.sock."""
    from_host = socket_from_docker_host(env.get("DOCKER_HOST"))
    if from_host:
        return from_host
    if rootless:
        runtime_dir = env.get("XDG_RUNTIME_DIR") or "/run/user/{}".format(os.geteuid() if euid is None else euid)
        return os.path.join(runtime_dir, "docker.sock")
    return DEFAULT_SOCKET


def _seconds(value: float) -> str:
    return "{:.1f}".format(value)


class DockerAPI:
    """GET-only Engine API access; every failure is a :class:`DockerUnreachable`.

    ``timeout`` is the total time one call may take (connect, request, headers and body
    together); a call may pass a smaller ``timeout`` of its own (what the apply loop does with
    the time left until its deadline). With ``remember_timeout`` (doctor), once a call has run
    out of time every later call on this object fails at once with that failure instead of
    waiting again, so one hung dockerd costs one timeout, not one per check.
    """

    def __init__(self, socket_path: str, timeout: float = 5.0, remember_timeout: bool = False) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.remember_timeout = remember_timeout
        self.timed_out: Optional[DockerTimeout] = None

    def _budget(self, timeout: Optional[float]) -> float:
        return self.timeout if timeout is None else max(0.0, timeout)

    def _remembered(self, what: str) -> None:
        if self.remember_timeout and self.timed_out is not None:
            raise DockerTimeout(
                "{} (not asked again for {})".format(self.timed_out.message, what), hint=self.timed_out.hint
            )

    def _timeout(self, what: str, seconds: float) -> DockerTimeout:
        error = DockerTimeout(
            "dockerd at {} did not answer {} within {} s".format(self.socket_path, what, _seconds(seconds)),
            hint="dockerd is hung or overloaded: check its logs (journalctl -u docker), or restart it",
        )
        if self.remember_timeout:
            self.timed_out = error
        return error

    def _get(self, path: str, timeout: Optional[float] = None) -> bytes:
        what = "GET {}".format(path)
        self._remembered(what)
        deadline = _Deadline(self._budget(timeout))
        connection = _UnixConnection(self.socket_path, deadline)
        try:
            connection.request("GET", path, headers={"Host": "docker"})
            response = connection.getresponse()
            body = self._read_body(response, what)
        except socket.timeout:
            raise self._timeout(what, deadline.seconds) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DockerUnreachable(
                "cannot reach dockerd at {}: {}".format(self.socket_path, exc),
                hint="is dockerd running? (systemctl status docker)",
            ) from None
        finally:
            connection.close()
        if response.status != 200:
            raise DockerUnreachable(
                "dockerd at {} answered {} {} to GET {}".format(self.socket_path, response.status, response.reason, path)
            )
        return body

    def _read_body(self, response: http.client.HTTPResponse, what: str) -> bytes:
        """The whole body, at most :data:`MAX_BODY` bytes; a short one is an error."""
        expected = response.length  # None: chunked or until close
        if expected is not None and expected > MAX_BODY:
            raise DockerUnreachable(
                "dockerd at {} announced {} bytes for {} (more than {})".format(self.socket_path, expected, what, MAX_BODY)
            )
        chunks: List[bytes] = []
        size = 0
        while True:
            piece = response.read(_READ_SIZE)
            if not piece:
                break
            size += len(piece)
            if size > MAX_BODY:
                raise DockerUnreachable(
                    "dockerd at {} sent more than {} bytes for {}".format(self.socket_path, MAX_BODY, what)
                )
            chunks.append(piece)
        if expected is not None and size < expected:
            raise DockerUnreachable(
                "cannot reach dockerd at {}: the answer to {} stopped after {} of {} bytes".format(
                    self.socket_path, what, size, expected
                )
            )
        return b"".join(chunks)

    def _get_json(self, path: str, timeout: Optional[float] = None) -> Any:
        try:
            return json.loads(self._get(path, timeout).decode("utf-8"))
        except ValueError as exc:
            raise DockerUnreachable("dockerd sent invalid JSON for GET {}: {}".format(path, exc)) from None

    def ping(self, timeout: Optional[float] = None) -> bool:
        try:
            return self._get("/_ping", timeout).strip() == b"OK"
        except DockerUnreachable:
            return False

    def info(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        return self._get_json("/info", timeout)

    def version(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        return self._get_json("/version", timeout)

    def running_containers(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        return self._get_json("/containers/json", timeout)

    def peer_pid(self, timeout: Optional[float] = None) -> Optional[int]:
        """dockerd's pid from SO_PEERCRED (None for a socket-activated unit: the peer is systemd).

        Only a connect, bounded by the same total deadline (a listener whose backlog is full
        blocks connect); None when it fails or runs out of time.
        """
        if self.remember_timeout and self.timed_out is not None:
            return None
        deadline = _Deadline(self._budget(timeout))
        try:
            with _deadline_socket(deadline) as sock:
                sock.connect(self.socket_path)
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except socket.timeout:
            self._timeout("a connect", deadline.seconds)
            return None
        except OSError:
            return None
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid or None
