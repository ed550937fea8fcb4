#!/usr/bin/env python3
"""Median wall time of `nvdocker-setup doctor --json` on a simulated healthy host (target <= 1 s).

Each run is a fresh process, `/usr/bin/python3 -m nvdocker_setup doctor --json` (no --smoke), on a
host built like the tests' (tests/doctor/simhost.py): the simulated 2-GPU driver root, a healthy
daemon.json, our runtime and hook, runc, a unit file and a dockerd in a fake /proc. An Engine API
answers on a unix socket: a fake one served from this process by default, or a real private
dockerd with --real-dockerd. The machine's own /usr/sbin:/usr/bin stay on PATH, so dpkg, systemctl
and `dockerd --version` run as they would on a real host.

Needs root (mknod, ldconfig -r), gcc and ldconfig. Run from anywhere:
`/usr/bin/python3 benchmarks/doctor_time.py [--runs N] [--real-dockerd]`.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.doctor.simhost import HEALTHY_CONFIG, SimHost  # noqa: E402
from tests.support.driver_root import build_driver_root, missing_tools  # noqa: E402


def timed(argv, env, runs: int):
    samples, last = [], None
    for _ in range(runs):
        start = time.perf_counter()
        last = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples), max(samples), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter to time (default: Debian's)")
    parser.add_argument("--real-dockerd", action="store_true", help="answer with a private dockerd, not a fake API")
    args = parser.parse_args()
    why = missing_tools()
    if why:
        sys.exit("cannot build the simulated host: " + "; ".join(why))
    workdir = tempfile.mkdtemp(prefix="nvx.bench.", dir="/tmp")
    engine = sandbox = None
    try:
        template = build_driver_root(os.path.join(workdir, "driver"))
        host = SimHost(os.path.join(workdir, "sim"), template)
        if args.real_dockerd:
            from tests.support.sandbox import DockerdSandbox

            sandbox = DockerdSandbox(os.path.join(workdir, "d"), daemon_json=json.dumps(HEALTHY_CONFIG).encode())
            sandbox.start()
            docker_host = sandbox.docker_host
        else:
            from tests.doctor.fake_engine import FakeEngine

            engine = FakeEngine()
            docker_host = engine.docker_host
        env = dict(os.environ)
        env.update(host.env)
        env.update({
            "PATH": host.env["PATH"] + ":/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": REPO, "DOCKER_HOST": docker_host, "NVDOCKER_STATE_DIR": host.state_dir,
            "NVDOCKER_DOCKER_CONFIG": "", "NVDOCKER_DRIVER_ROOT": "", "DOCKER_CONTEXT": "",
        })
        doctor = [args.python, "-m", "nvdocker_setup", "doctor", "--json", "--root", host.root]
        bare, _, _, _ = timed([args.python, "-c", "pass"], env, args.runs)
        full = timed(doctor, env, args.runs)
        one = timed(doctor + ["--check", "host-selinux"], env, args.runs)
        report = json.loads(full[3].stdout)
        if full[3].returncode != 0:
            bad = ["{}: {}".format(item["id"], item["detail"]) for item in report["checks"] if item["status"] == "fail"]
            sys.exit("doctor did not find the simulated host healthy:\n" + "\n".join(bad))
        version = subprocess.run([args.python, "-c", "import sys, typer; print(sys.version.split()[0], typer.__version__)"],
                                 env=env, stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
        summary = report["summary"]
        print("interpreter: {} (Python {}, typer {})".format(args.python, *version[:2]))
        print("engine: {}; runs per command: {}".format("private dockerd" if sandbox else "fake Engine API", args.runs))
        print("host: {ok} ok, {warn} warn, {fail} failed, {skip} skipped of {total} checks".format(**summary))
        print("python -c pass                      median {:7.1f} ms".format(bare))
        print("doctor --json --check host-selinux  median {:7.1f} ms".format(one[0]))
        print("doctor --json (all checks)          median {:7.1f} ms  (min {:.1f}, max {:.1f}; target <= 1000 ms)".format(
            *full[:3]))
    finally:
        if engine is not None:
            engine.close()
        if sandbox is not None:
            sandbox.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
