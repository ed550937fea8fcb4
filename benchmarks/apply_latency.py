#!/usr/bin/env python3
"""Median time from `install` to the runtime visible in GET /info, reload vs restart.

Runs against a private dockerd (tests/support/sandbox.py; root and dockerd required), through
the same code path as the CLI: lock, read, plan, validate, back up, write, then apply and verify.
Each round installs and then uninstalls, so every install starts from the admin's file.

    sudo /usr/bin/python3 benchmarks/apply_latency.py [--runs 11]

Target (issue 3): reload path <= 2 s.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nvdocker_setup import operations  # noqa: E402
from nvdocker_setup.apply import ApplyOptions  # noqa: E402
from nvdocker_setup.context import Context  # noqa: E402
from nvdocker_setup.core.plan import InstallRequest  # noqa: E402
from tests.support.sandbox import DockerdSandbox, SandboxService  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="nvb.", dir="/tmp")
    os.chmod(workdir, 0o755)
    runtime = os.path.join(workdir, "nvdocker-runtime")
    with open(runtime, "w") as handle:
        handle.write('#!/bin/sh\nexec runc "$@"\n')
    os.chmod(runtime, 0o755)
    box = DockerdSandbox(os.path.join(workdir, "d"), daemon_json=b'{\n  "labels": ["bench=1"]\n}\n')
    box.start()
    ctx = Context(
        state_dir=os.path.join(workdir, "state"), docker_socket=box.socket_path, service=SandboxService(box),
    )
    timings = {"reload": [], "restart": []}
    try:
        for mode in ("reload", "restart"):
            for _ in range(args.runs):
                request = InstallRequest(runtime_name="nvidia", runtime_path=runtime, runtime_args=())
                start = time.perf_counter()
                result = operations.install(ctx, request, config=box.config_path, apply_options=ApplyOptions(mode=mode))
                elapsed = time.perf_counter() - start
                assert result.apply.verified and box.info()["Runtimes"]["nvidia"]["path"] == runtime
                timings[mode].append(elapsed)
                operations.uninstall(ctx, "nvidia", config=box.config_path, apply_options=ApplyOptions(mode="restart"))
    finally:
        box.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print("dockerd: {} | runs per path: {}".format(box.dockerd, args.runs))
    for mode, samples in timings.items():
        print("install -> runtime in /info, {:7s} median {:6.3f} s  (min {:.3f}, max {:.3f})".format(
            mode, statistics.median(samples), min(samples), max(samples)))
    print("target: reload path <= 2 s")


if __name__ == "__main__":
    main()
