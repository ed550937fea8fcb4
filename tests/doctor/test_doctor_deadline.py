"""`doctor` against a dockerd whose API hangs or trickles finishes within one API timeout.

Every Engine API call of a doctor run is bounded in total by ``api_timeout`` (5 s), and once one
has timed out the later ones (/version, /info, the peer pid) fail at once, so the daemon checks
together cost one timeout however many of them ask.
"""

import time

import pytest

from nvdocker_setup.doctor.facts import DoctorOptions
from nvdocker_setup.exit_status import ExitStatus
from tests.adapters.slow_engine import SlowEngine
from tests.doctor.test_cli import doctor

API_TIMEOUT = DoctorOptions().api_timeout
#: Doctor's own work on the simulated host (about 0.3 s here) and thread wake-ups.
SLACK = 2.0


@pytest.mark.parametrize("mode", ["trickle", "silent"])
def test_doctor_json_against_a_hung_dockerd_finishes_within_one_api_timeout(host, mode):
    assert API_TIMEOUT == 5.0
    start = time.monotonic()
    baseline = doctor(host, "--json")  # no dockerd at all: what the rest of doctor costs
    baseline_seconds = time.monotonic() - start
    assert baseline.exit_code == ExitStatus.DOCTOR_FAILED

    engine = SlowEngine(mode, interval=1.0, lifetime=15.0)
    try:
        start = time.monotonic()
        outcome = doctor(host, "--json", env={"DOCKER_HOST": engine.docker_host})
        elapsed = time.monotonic() - start
        requests = engine.paths()
    finally:
        assert engine.close() == [], "a fake server thread did not stop"
    print("doctor --json against a {} socket: {:.2f} s (baseline {:.2f} s)".format(mode, elapsed, baseline_seconds))
    assert elapsed < API_TIMEOUT + baseline_seconds + SLACK, elapsed
    assert elapsed >= API_TIMEOUT - 0.1  # it did wait for the one call it made
    assert outcome.exit_code == ExitStatus.DOCTOR_FAILED
    reachable = outcome.result("daemon-reachable")
    assert reachable["status"] == "fail"
    assert "within 5.0 s" in reachable["detail"] and engine.path in reachable["detail"], reachable
    assert len(requests) == 1, requests  # the other API checks reused the failure
    statuses = {item["id"]: item["status"] for item in outcome.json["checks"]}
    assert statuses["daemon-runtime-loaded"] == "skip"
