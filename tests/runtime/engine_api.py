"""A few Engine API calls over a unix socket, for requests the docker CLI cannot make: an env value
of 1 MiB does not fit in one argv string (Linux: 128 KiB), and dockerd 20.10's CLI has no
``--annotation``."""

import http.client
import json
import socket
from typing import Any, Dict, Optional, Tuple


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def call(socket_path: str, method: str, path: str, body: Optional[Dict[str, Any]] = None, timeout: float = 60.0) -> Tuple[int, bytes]:
    connection = _UnixConnection(socket_path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def create_container(socket_path: str, config: Dict[str, Any], version: str = "") -> str:
    prefix = "/v{}".format(version) if version else ""
    status, body = call(socket_path, "POST", prefix + "/containers/create", config)
    assert status == 201, (status, body[:2000])
    return json.loads(body)["Id"]


def remove_container(socket_path: str, container_id: str) -> None:
    call(socket_path, "DELETE", "/containers/{}?force=1".format(container_id))
