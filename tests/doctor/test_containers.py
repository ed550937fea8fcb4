"""The opt-in smoke test against a real private dockerd: a container run with the runtime."""

import pytest

pytestmark = pytest.mark.dockerd


def test_smoke_sees_the_gpus(live_host, tiny_image, docker_cli):
    result = live_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="fakegpu")
    assert result.status == "ok", result
    assert "2 GPU device node(s) and /dev/nvidiactl inside the container" in result.detail


def test_smoke_runtime_that_gives_no_gpus(live_host, tiny_image, docker_cli):
    result = live_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="plainrunc")
    assert result.status == "fail"
    assert "/dev/nvidiactl, /dev/nvidia0, /dev/nvidia1" in result.detail and "did not give it the GPUs" in result.detail


def test_smoke_runtime_that_cannot_start(live_host, tiny_image, docker_cli):
    result = live_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="broken")
    assert result.status == "fail" and "failed:" in result.detail
    unknown = live_host.run("container-gpu-smoke", smoke=True, smoke_image=tiny_image, runtime_name="nosuch")
    assert unknown.status == "fail" and "daemon-runtime-loaded" in unknown.hint


def test_smoke_that_cannot_run_fails_without_the_image(live_host, docker_cli):
    result = live_host.run("container-gpu-smoke", smoke=True, smoke_image="nvx-absent:never")
    assert result.status == "fail" and "--smoke did not run" in result.detail
    assert "docker pull nvx-absent:never" in result.hint


def test_smoke_that_cannot_run_fails_without_the_docker_cli(live_host):
    result = live_host.run("container-gpu-smoke", smoke=True)
    assert result.status == "fail" and "docker CLI is not on PATH" in result.detail
    assert "docker.io" in result.hint


def test_smoke_that_cannot_run_fails_without_dockerd_and_names_the_cause(host, docker_cli):
    result = host.run("container-gpu-smoke", smoke=True)
    assert result.status == "fail" and "--smoke did not run" in result.detail
    assert result.cause == "daemon-reachable"


def test_smoke_not_asked_for_is_a_skip(host):
    from nvdocker_setup.doctor.checks import all_checks, run_one

    item = next(check for check in all_checks() if check.id == "container-gpu-smoke")
    result = run_one(item, host.facts())
    assert result.status == "skip" and "--smoke" in result.detail
