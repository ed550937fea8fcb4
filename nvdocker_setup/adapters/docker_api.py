"""A minimal Docker Engine API client over a unix socket (stdlib only).

We trust only what dockerd itself reports: ``systemctl reload`` succeeds even when dockerd
rejects the new file, so verification reads ``GET /info``. The socket's peer credentials also
tell us dockerd's pid without a pidfile (what NVIDIA's installer does with SCM_CREDENTIALS).
"""

import http.client
import json
import os
import socket
import struct
from typing import Any, Dict, List, Mapping, Optional

from nvdocker_setup.errors import NvdockerError

DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerUnreachable(NvdockerError):
    reference = "docker-unreachable"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
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


class DockerAPI:
    """GET-only Engine API access; every failure is a :class:`DockerUnreachable`."""

    def __init__(self, socket_path: str, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _get(self, path: str) -> bytes:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request("GET", path, headers={"Host": "docker"})
            response = connection.getresponse()
            body = response.read()
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

    def _get_json(self, path: str) -> Any:
        try:
            return json.loads(self._get(path).decode("utf-8"))
        except ValueError as exc:
            raise DockerUnreachable("dockerd sent invalid JSON for GET {}: {}".format(path, exc)) from None

    def ping(self) -> bool:
        try:
            return self._get("/_ping").strip() == b"OK"
        except DockerUnreachable:
            return False

    def info(self) -> Dict[str, Any]:
        return self._get_json("/info")

    def version(self) -> Dict[str, Any]:
        return self._get_json("/version")

    def running_containers(self) -> List[Dict[str, Any]]:
        return self._get_json("/containers/json")

    def peer_pid(self) -> Optional[int]:
        """dockerd's pid from SO_PEERCRED (None for a socket-activated unit: the peer is systemd)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid or None
