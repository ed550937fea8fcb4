"""Run the CLI in-process, like a user would, with a temp state dir and config."""

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 always keeps stderr apart


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Dict[str, Any]:
        return json.loads(self.stdout)


class Cli:
    def __init__(self, tmp_path, runtime: Optional[str]) -> None:
        self.state_dir = tmp_path / "state"
        self.config = tmp_path / "etc" / "docker" / "daemon.json"
        self.config.parent.mkdir(parents=True)
        #: --engine containerd's file: never this machine's /etc/containerd or a running containerd's.
        self.containerd_config = tmp_path / "etc" / "containerd" / "config.toml"
        self.runtime = runtime
        self.env = {
            "NVDOCKER_STATE_DIR": str(self.state_dir),
            "NVDOCKER_DOCKER_CONFIG": str(self.config),
            "NVDOCKER_CONTAINERD_CONFIG": str(self.containerd_config),
            "PATH": os.environ.get("PATH", ""),
            "COLUMNS": "200",
            "NO_COLOR": "1",
            # No dockerd answers here, so the CLI's apply step reports "not reachable" and never
            # looks for this machine's own daemon.
            "DOCKER_HOST": "unix://{}".format(tmp_path / "no-dockerd.sock"),
        }

    def __call__(self, *args: str, env: Optional[Dict[str, str]] = None) -> Outcome:
        output.reset_consoles()
        merged = dict(self.env)
        merged.update(env or {})
        result = _runner().invoke(app, list(args), env=merged, catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def install(self, *args: str, **kwargs) -> Outcome:
        return self("install", "--runtime-path", self.runtime, *args, **kwargs)


@pytest.fixture
def cli(tmp_path, runtime_binary):
    return Cli(tmp_path, runtime_binary)
