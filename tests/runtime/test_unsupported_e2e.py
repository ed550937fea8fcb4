"""Requests we cannot honour fail `docker run` with our message (issue #14, item 3).

``NVIDIA_IMEX_CHANNELS``, ``NVIDIA_MIG_CONFIG_DEVICES`` and ``NVIDIA_MIG_MONITOR_DEVICES`` used to
start the container without what it asked for; one asking only for IMEX carried none of the C
launcher's request markers and never even reached Python. On a private dockerd 20.10 whose
``nvidia`` runtime is the launcher (real runtime: runc), on the simulated driver root.
"""

import os
import time

import pytest

from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

pytestmark = pytest.mark.dockerd


@pytest.fixture(scope="module")
def box(tmp_path_factory, driver_root, launcher):
    dockerd_or_skip()
    work = str(tmp_path_factory.mktemp("unsupported"))
    os.chmod(work, 0o755)
    runtime_conf = os.path.join(work, "runtime.conf")
    with open(runtime_conf, "w") as handle:
        handle.write("[runtime]\nruntimes = runc\n")
    sandbox = DockerdSandbox(
        os.path.join(work, "dockerd"),
        daemon_json=('{"runtimes": {"nvidia": {"path": "%s"}}}\n' % launcher).encode(),
        env={"NVDOCKER_DRIVER_ROOT": driver_root.path, "NVDOCKER_RUNTIME_CONFIG": runtime_conf},
    )
    sandbox.start()
    try:
        sandbox.import_tiny_image()
        yield sandbox
    finally:
        sandbox.close()


def run(box, *args):
    started = time.monotonic()
    done = box.docker("run", "--rm", "--network", "none", "--runtime", "nvidia", *args, check=False, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    "env, fragment",
    [
        (["NVIDIA_IMEX_CHANNELS=0"], "NVIDIA_IMEX_CHANNELS='0' asks for IMEX channels"),
        (["NVIDIA_IMEX_CHANNELS=all", "NVIDIA_VISIBLE_DEVICES=void"], "NVIDIA_IMEX_CHANNELS='all' asks for IMEX channels"),
        (["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"],
                "NVIDIA_MIG_CONFIG_DEVICES='all' asks for MIG configuration access"),
        (["NVIDIA_MIG_MONITOR_DEVICES=all"], "NVIDIA_MIG_MONITOR_DEVICES='all' asks for MIG monitoring access"),
    ],
    ids=["imex-only", "imex-with-void", "mig-config", "mig-monitor-only"],
)
def test_an_unsupported_request_fails_docker_run_with_our_message(box, env, fragment):
    flags = [item for value in env for item in ("-e", value)]
    done, took = run(box, *flags, "tiny", "echo", "STARTED")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and b"STARTED" not in done.stdout, stderr
    assert "nvdocker-runtime: " + fragment in stderr and "does not support" in stderr, stderr
    assert took < 10 and len(stderr) < 4000


def test_an_oversized_imex_value_is_refused_by_its_size(box):
    done, took = run(box, "-e", "NVIDIA_IMEX_CHANNELS=" + "0," * 20000, "tiny", "true")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0 and "NVIDIA_IMEX_CHANNELS is 40000 characters long; at most 8192 are accepted" in stderr
    assert took < 10 and len(stderr) < 4000


def test_void_asks_for_nothing_and_the_container_runs(box):
    done, _ = run(box, "-e", "NVIDIA_IMEX_CHANNELS=void", "-e", "NVIDIA_VISIBLE_DEVICES=0", "tiny", "ls", "/dev")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "nvidia0" in done.stdout.decode().split()
