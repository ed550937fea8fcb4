"""A fake Docker Engine API on a unix socket, for daemon states a real private dockerd cannot show
here (Docker Desktop, rootless, cgroup v2, Docker 26 with CDI). Answers GET /_ping, /version,
/info and /containers/json from dicts the test sets; runs in a thread of the test process."""

import json
import os
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Dict

DEFAULT_VERSION = {"Version": "26.1.5", "ApiVersion": "1.45", "Os": "linux", "Arch": "amd64"}
DEFAULT_INFO = {
    "ServerVersion": "26.1.5",
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "Name": "gpu-host",
    "Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"},
                 "nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
    "DefaultRuntime": "runc",
    "SecurityOptions": ["name=seccomp,profile=builtin"],
    "CgroupDriver": "cgroupfs",
    "CgroupVersion": "1",
    "CDISpecDirs": [],
    "ContainersRunning": 0,
    "LiveRestoreEnabled": False,
}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeEngine:
    def __init__(self, **info: Any) -> None:
        self.dir = tempfile.mkdtemp(prefix="nvx.", dir="/tmp")
        self.socket_path = os.path.join(self.dir, "docker.sock")
        self.version: Dict[str, Any] = dict(DEFAULT_VERSION)
        self.info: Dict[str, Any] = dict(DEFAULT_INFO, **info)
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                routes = {"/_ping": b"OK", "/version": engine.version, "/info": engine.info, "/containers/json": []}
                body = routes.get(path.replace("/v1.41", "").replace("/v1.45", ""))
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(self.socket_path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def docker_host(self) -> str:
        return "unix://" + self.socket_path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
