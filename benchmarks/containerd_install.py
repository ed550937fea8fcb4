#!/usr/bin/env python3
"""containerd: a no-op `install` on a 250-line config.toml, and `install` until the handler is in the
live CRI config (restart included), on private containerd 1.6, 1.7 and 2.1.

    sudo /usr/bin/python3 benchmarks/containerd_install.py [--runs 11] [--apply-runs 7]

1. No-op install: `nvdocker-setup install --engine containerd --apply none --json` as a fresh process
   (the way the packages run it: /usr/bin/python3 and Debian's libraries) on
   tests/containerd/corpus/realistic-250.toml that already has our handler: lock, read, parse, plan,
   compare, nothing written. Target (issue #10): <= 400 ms.
2. Install to CRI: `operations.install` (the CLI's code path: lock, read, plan, `containerd config dump`
   on the candidate, back up, write, restart through the stand-in systemctl of the tests, poll CRI
   Status until our handler shows) on each private containerd, each round starting from the admin's
   file (uninstalled again, restart included, outside the timing). Target: <= 3 s.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nvdocker_setup import engines, operations  # noqa: E402
from nvdocker_setup.apply import ApplyOptions  # noqa: E402
from nvdocker_setup.context import Context  # noqa: E402
from nvdocker_setup.core.plan import InstallRequest  # noqa: E402
from nvdocker_setup.engines.containerd import cri  # noqa: E402
from tests.support.containerd import RELEASES, PrivateContainerd, release_folder  # noqa: E402

CORPUS = os.path.join(REPO, "tests", "containerd", "corpus", "realistic-250.toml")


def _runtime(workdir: str) -> str:
    runtime = os.path.join(workdir, "nvdocker-runtime")
    with open(runtime, "w") as handle:
        handle.write('#!/bin/sh\nexec runc "$@"\n')
    os.chmod(runtime, 0o755)
    return runtime


def noop_install(workdir: str, runs: int, containerd: str) -> list:
    config = os.path.join(workdir, "config.toml")
    shutil.copyfile(CORPUS, config)
    runtime = _runtime(workdir)
    env = dict(os.environ, PYTHONPATH=REPO, NVDOCKER_STATE_DIR=os.path.join(workdir, "state"),
               NVDOCKER_CONTAINERD_BINARY=containerd)
    argv = ["/usr/bin/python3", "-m", "nvdocker_setup", "install", "--engine", "containerd", "--config", config,
            "--runtime-path", runtime, "--apply", "none", "--json"]
    first = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    before = open(config, "rb").read()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        samples.append(time.perf_counter() - start)
        assert done.returncode == 0 and b'"changed": false' in done.stdout, done.stdout + done.stderr
    assert open(config, "rb").read() == before
    return samples


def install_to_cri(workdir: str, runs: int) -> dict:
    runtime = _runtime(workdir)
    results = {}
    for release in RELEASES:
        daemon = PrivateContainerd(release, release_folder(release))
        try:
            daemon.start()
            bindir = daemon.install_systemctl()
            ctx = Context(env=dict(os.environ, PATH=bindir + os.pathsep + daemon.env["PATH"]),
                          state_dir=os.path.join(workdir, "state-" + release.name), containerd_binary=daemon.containerd)
            engine = engines.get("containerd")
            options = ApplyOptions(mode="auto", service_manager="systemd", timeout=30)
            samples = []
            for _ in range(runs):
                request = InstallRequest(runtime_name="nvidia", runtime_path=runtime)
                start = time.perf_counter()
                result = operations.install(ctx, request, config=daemon.config_path, apply_options=options,
                                            engine=engine)
                samples.append(time.perf_counter() - start)
                assert result.apply.verified, result.apply
                assert cri.status(daemon.socket, 5.0).runtimes()["nvidia"]["binary_name"] == runtime
                operations.uninstall(ctx, "nvidia", config=daemon.config_path, apply_options=options, engine=engine)
            results[release.name] = samples
        finally:
            daemon.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="no-op install runs")
    parser.add_argument("--apply-runs", type=int, default=7, help="install-to-CRI rounds per containerd version")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="nvc.", dir="/tmp")
    os.chmod(workdir, 0o755)
    try:
        containerd = os.path.join(release_folder(RELEASES[0]), "usr", "bin", "containerd")
        noop = noop_install(workdir, args.runs, containerd)
        applied = install_to_cri(workdir, args.apply_runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("no-op install --engine containerd, 250-line config.toml, /usr/bin/python3, {} runs: median {:.1f} ms "
          "(min {:.1f}, max {:.1f}); target <= 400 ms".format(
              len(noop), 1000 * statistics.median(noop), 1000 * min(noop), 1000 * max(noop)))
    for name, samples in applied.items():
        print("install -> handler in CRI Status, containerd {}, {} rounds: median {:.3f} s (min {:.3f}, max {:.3f}); "
              "target <= 3 s".format(name, len(samples), statistics.median(samples), min(samples), max(samples)))


if __name__ == "__main__":
    main()
