"""`--timeout` bounds the whole apply against a dockerd whose API hangs or trickles after a restart.

The fake Engine API (tests/adapters/slow_engine.py) answers at once before the change, trickles one
byte a second once the "restart" command has run, and (in the rolled-back case) answers again
after the rollback's restart. A per-read timeout never fires on it, so without a total deadline
per call and per apply these tests take minutes and fail on their wall-time bounds.

Bounds (see nvdocker_setup/apply.py's docstring): the forward phase ends ``--timeout`` after it
started; the rollback's verification gets its own ``--timeout``; so the API waiting is at most
``worst_case_api_wait(T) = 2 * T + 3 * MIN_ATTEMPT``, and ``T`` when the rollback finds dockerd
healthy. :data:`SLACK` covers the rest: Python's start-up, decide(), the restart command (``sh``).
"""

import json
import os
import subprocess
import sys
import time
from typing import List

import pytest

from nvdocker_setup.adapters.docker_api import DockerAPI
from nvdocker_setup.adapters.service import ServiceManager
from nvdocker_setup.apply import (
    MIN_ATTEMPT,
    ApplyOptions,
    ApplyReport,
    Decision,
    RollbackFailed,
    execute,
    worst_case_api_wait,
)
from nvdocker_setup.engines.docker.apply_plan import Expectation
from nvdocker_setup.exit_status import ExitStatus
from tests.adapters.slow_engine import INFO, SlowEngine

ADMIN = b'{\n  "log-level": "warn"\n}\n'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Start-up of a fresh `python -m nvdocker_setup`, decide()'s /info, two `sh -c` restarts.
SLACK = 3.0


def test_worst_case_is_documented():
    assert worst_case_api_wait(10) == 2 * 10 + 3 * MIN_ATTEMPT == 23.0


class Counter:
    """The restart command appends a line; the fake dockerd trickles while the count is 1."""

    def __init__(self, path) -> None:
        self.path = str(path)

    @property
    def command(self) -> str:
        return "echo restart >> {}".format(self.path)

    def count(self) -> int:
        try:
            with open(self.path) as handle:
                return len(handle.read().splitlines())
        except FileNotFoundError:
            return 0


def _install(tmp_path, engine: SlowEngine, counter: Counter, runtime: str, timeout: int):
    config = tmp_path / "daemon.json"
    config.write_bytes(ADMIN)
    env = dict(os.environ, DOCKER_HOST=engine.docker_host, NVDOCKER_STATE_DIR=str(tmp_path / "state"),
               PYTHONPATH=REPO, NVDOCKER_DOCKER_CONFIG="")
    argv = [sys.executable, "-m", "nvdocker_setup", "install", "--config", str(config), "--runtime-path", runtime,
            "--service-manager", "command", "--restart-command", counter.command, "--apply", "restart",
            "--timeout", str(timeout), "--json"]
    start = time.monotonic()
    completed = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, cwd=REPO)
    return completed, time.monotonic() - start, config


def test_install_timeout_10_against_a_trickling_dockerd_rolls_back_in_10_s(tmp_path, runtime_binary):
    counter = Counter(tmp_path / "restarts")
    engine = SlowEngine(lambda path: "trickle" if counter.count() == 1 else "answer", interval=1.0, lifetime=30.0)
    try:
        completed, elapsed, config = _install(tmp_path, engine, counter, runtime_binary, timeout=10)
    finally:
        assert engine.close() == [], "a fake server thread did not stop"
    print("install --timeout 10, trickling after the restart, healthy after the rollback: {:.2f} s".format(elapsed))
    assert completed.returncode == ExitStatus.APPLY_FAILED == 10, completed.stdout.decode() + completed.stderr.decode()
    error = json.loads(completed.stdout)["error"]
    assert error["id"] == "apply-failed-rolled-back"
    assert any("did not answer GET /info within" in line for line in error["details"]), error
    assert 10.0 - 0.2 <= elapsed < 10.0 + SLACK, elapsed
    assert counter.count() == 2  # the change's restart and the rollback's
    assert config.read_bytes() == ADMIN


def test_install_against_a_dockerd_that_stays_hung_is_bounded_by_twice_the_timeout(tmp_path, runtime_binary):
    counter = Counter(tmp_path / "restarts")
    engine = SlowEngine(lambda path: "answer" if counter.count() == 0 else "trickle", interval=1.0, lifetime=30.0)
    try:
        completed, elapsed, config = _install(tmp_path, engine, counter, runtime_binary, timeout=3)
    finally:
        assert engine.close() == [], "a fake server thread did not stop"
    print("install --timeout 3, trickling after both restarts: {:.2f} s (bound {:.1f} s + slack)".format(
        elapsed, worst_case_api_wait(3)))
    assert completed.returncode == ExitStatus.ROLLBACK_FAILED == 11, completed.stdout.decode() + completed.stderr.decode()
    error = json.loads(completed.stdout)["error"]
    assert any(line.startswith("rollback: ") and "did not answer GET /info within" in line for line in error["details"])
    assert 2 * 3.0 - 0.2 <= elapsed < worst_case_api_wait(3) + SLACK, elapsed
    assert config.read_bytes() == ADMIN


class RecordingService(ServiceManager):
    name = "recording"

    def __init__(self, restart_seconds: float = 0.0) -> None:
        self.calls: List[str] = []
        self.times: List[float] = []
        self.restart_seconds = restart_seconds

    def _record(self, what: str) -> None:
        self.calls.append(what)
        self.times.append(time.monotonic())

    def reload(self) -> None:
        self._record("reload")

    def restart(self) -> None:
        self._record("restart")
        time.sleep(self.restart_seconds)

    def reset_failed(self) -> None:
        self._record("reset-failed")

    def is_active(self) -> bool:
        return True


def _decision(engine: SlowEngine, service: ServiceManager, method: str, options: ApplyOptions) -> Decision:
    expectation = Expectation.from_config({"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}}}, "nvidia")
    return Decision(ApplyReport(method, "test"), expectation, api=DockerAPI(engine.path), service=service,
                    restart_allowed=True, options=options)


def test_a_reload_and_its_fallback_restart_share_one_timeout(tmp_path):
    """--timeout 4 with a reload that may fall back: the reload waits T/2, the restart the rest,
    the forward phase ends at T; the rollback then gets its own T."""
    engine = SlowEngine("trickle", interval=1.0, lifetime=20.0)
    service = RecordingService()
    restored = []
    start = time.monotonic()
    try:
        with pytest.raises(RollbackFailed) as caught:
            execute(_decision(engine, service, "reload", ApplyOptions(timeout=4.0)), lambda: restored.append(True))
        elapsed = time.monotonic() - start
    finally:
        assert engine.close() == [], "a fake server thread did not stop"
    assert service.calls == ["reload", "restart", "reset-failed", "restart"]
    assert restored == [True]
    reload_at, fallback_at, rollback_at, _ = (moment - start for moment in service.times)
    print("reload window {:.2f} s, forward phase {:.2f} s, total {:.2f} s".format(
        fallback_at - reload_at, rollback_at, elapsed))
    assert 2.0 - 0.1 <= fallback_at - reload_at < 2.0 + 0.5
    assert 4.0 - 0.1 <= rollback_at < 4.0 + 0.5
    assert 8.0 - 0.2 <= elapsed < worst_case_api_wait(4.0) and elapsed < 8.0 + 1.0
    assert any("within" in line for line in caught.value.details)


def test_a_restart_that_used_up_the_timeout_still_gets_one_attempt(tmp_path):
    """The floor: a slow service command does not turn a healthy dockerd into a rollback."""
    info = dict(INFO, Runtimes={"runc": {"path": "runc"}, "nvidia": {"path": "/usr/bin/nvdocker-runtime"}})
    engine = SlowEngine("answer", info=info)
    service = RecordingService(restart_seconds=1.2)
    try:
        report = execute(_decision(engine, service, "restart", ApplyOptions(timeout=1.0)), lambda: None)
    finally:
        assert engine.close() == [], "a fake server thread did not stop"
    assert report.verified and service.calls == ["restart"]
    assert engine.paths() == ["/info"]
