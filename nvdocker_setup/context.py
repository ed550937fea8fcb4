"""The one object through which the code reaches the outside world (after httpie's Environment).

By default it describes the real host. Tests build one that points at a temp root, a fake PATH,
a fixed clock or a private dockerd, instead of monkeypatching internals.
"""

import datetime
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

DEFAULT_STATE_DIR = "/var/lib/nvdocker-setup"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def run_command(argv: Sequence[str], timeout: float = 30.0, env: Optional[Mapping[str, str]] = None):
    """Run a command, capturing text output; never raises for a non-zero exit."""
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )


@dataclass
class Context:
    """Host facts and adapters, injected everywhere."""

    #: Environment variables as the tool should see them.
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: Prefix for host paths such as /proc, /etc/docker, /var/snap (a temp dir in tests).
    root: str = "/"
    #: Where install records and backups live.
    state_dir: str = DEFAULT_STATE_DIR
    euid: int = field(default_factory=os.geteuid)
    #: ``run(argv, timeout=..., env=...) -> CompletedProcess`` for external commands.
    run: Callable[..., "subprocess.CompletedProcess"] = run_command
    clock: Callable[[], datetime.datetime] = _utc_now
    #: Seconds to wait for the lock before giving up.
    lock_timeout: float = 10.0
    #: The Engine API socket to verify against (None: DOCKER_HOST, rootless or /var/run/docker.sock).
    docker_socket: Optional[str] = None
    #: A ServiceManager to use instead of detecting one (tests drive a private dockerd with it).
    service: Optional[Any] = None
    #: The containerd binary whose version and config parser count (None: the running system
    #: containerd's, else containerd on PATH). Env NVDOCKER_CONTAINERD_BINARY.
    containerd_binary: Optional[str] = None
    #: The CRI socket to verify containerd against, as this process reaches it (None: the config's
    #: grpc.address). The Kubernetes node agent sets it: it sees the host's socket under its mount.
    containerd_socket: Optional[str] = None

    def host_path(self, path: str) -> str:
        """Map an absolute host path (``/proc/1/cmdline``) into ``root``."""
        if self.root in ("", "/"):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def which(self, name: str) -> Optional[str]:
        """Look ``name`` up on this context's PATH."""
        return shutil.which(name, path=self.env.get("PATH", os.defpath))

    @property
    def backups_dir(self) -> str:
        return os.path.join(self.state_dir, "backups")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.state_dir, "lock")

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    @classmethod
    def from_environment(cls, state_dir: Optional[str] = None, **overrides) -> "Context":
        """The real host, with ``--state-dir`` > ``NVDOCKER_STATE_DIR`` > the default."""
        env = dict(os.environ)
        chosen = state_dir or env.get("NVDOCKER_STATE_DIR") or DEFAULT_STATE_DIR
        if env.get("NVDOCKER_CONTAINERD_BINARY") and "containerd_binary" not in overrides:
            overrides["containerd_binary"] = os.path.abspath(env["NVDOCKER_CONTAINERD_BINARY"])
        return cls(env=env, state_dir=os.path.abspath(chosen), **overrides)
