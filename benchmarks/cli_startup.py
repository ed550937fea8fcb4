#!/usr/bin/env python3
"""Medians of `nvdocker-setup --help` and of a no-op `install` on a 200-key daemon.json.

Run it with the interpreter the packages use (`/usr/bin/python3` with Debian 12's typer, rich and
jsonschema): `make bench`, or `/usr/bin/python3 benchmarks/cli_startup.py [--runs N]`. Each command
is a fresh process, the way an admin or a maintainer script runs it. Targets (issue 2): --help
<= 300 ms, no-op install <= 400 ms.
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


def daemon_json_with(keys: int, runtime: str) -> str:
    """A realistic large file: many labels-like keys under allowed names plus our entry."""
    document = {"runtimes": {"nvidia": {"path": runtime}}, "log-driver": "json-file"}
    document["log-opts"] = {"tag-{:03d}".format(i): "value-{}".format(i) for i in range(keys - 3)}
    document["labels"] = ["k{}=v".format(i) for i in range(20)]
    return json.dumps(document, indent=4) + "\n"


def median_ms(argv, env, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        completed = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples.append((time.perf_counter() - start) * 1000)
        if completed.returncode != 0:
            sys.exit("benchmark command failed: {}\n{}".format(" ".join(argv), completed.stderr.decode()))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="nvdocker-bench.")
    try:
        os.chmod(workdir, 0o755)
        runtime = os.path.join(workdir, "nvdocker-runtime")
        with open(runtime, "w") as handle:
            handle.write("#!/bin/sh\nexec runc \"$@\"\n")
        os.chmod(runtime, 0o755)
        config = os.path.join(workdir, "daemon.json")
        with open(config, "w") as handle:
            handle.write(daemon_json_with(200, runtime))
        env = dict(os.environ, PYTHONPATH=REPO, NVDOCKER_STATE_DIR=os.path.join(workdir, "state"))
        base = [sys.executable, "-m", "nvdocker_setup"]
        interpreter = subprocess.run(
            [sys.executable, "-c", "import sys, typer, rich, jsonschema; print(sys.version.split()[0], typer.__version__)"],
            env=env, stdout=subprocess.PIPE, universal_newlines=True,
        ).stdout.split()
        bare = median_ms([sys.executable, "-c", "pass"], env, args.runs)
        help_ms = median_ms(base + ["--help"], env, args.runs)
        noop_ms = median_ms(base + ["install", "--config", config, "--runtime-path", runtime], env, args.runs)
        print("interpreter: {} (Python {}, typer {})".format(sys.executable, *interpreter[:2]))
        print("runs per command: {}".format(args.runs))
        print("python -c pass          median {:7.1f} ms".format(bare))
        print("nvdocker-setup --help   median {:7.1f} ms  (target <= 300 ms)".format(help_ms))
        print("no-op install, 200 keys median {:7.1f} ms  (target <= 400 ms)".format(noop_ms))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
