#!/usr/bin/env python3
"""Medians of `cdi generate` on NVIDIA's real driver files and of `cdi list` over three spec
directories (issue #23's targets: each <= 400 ms), each command a fresh process.

Run it with the interpreter the packages use: `/usr/bin/python3 benchmarks/cdi_time.py [--runs N]
[--baseline DIR]`. The driver root is the real-driver fixture's Debian layout (tests/support/
real_driver.py: Debian 12's 535 packages, fetched into the test cache when missing). With
``--baseline DIR`` (a checkout of an earlier commit, e.g. `git worktree add /tmp/base <commit>`)
the same commands run from there too, alternating with ours, so the figures are side by side:
`cdi list` there reads one file (`--spec`), since the earlier release read only one.
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

from tests.support.real_driver import ensure_real_driver  # noqa: E402


def run_ms(argv, env) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        sys.exit("benchmark command failed: {}\n{}".format(" ".join(argv), done.stderr.decode()[-2000:]))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--baseline", metavar="DIR", help="a checkout of an earlier commit to time side by side")
    args = parser.parse_args()
    root = ensure_real_driver().debian
    workdir = tempfile.mkdtemp(prefix="nvdocker-bench.")
    try:
        os.chmod(workdir, 0o755)
        absent = os.path.join(workdir, "runtime.conf")
        open(absent, "w").close()
        trees = {"ours": REPO}
        if args.baseline:
            trees["baseline"] = os.path.abspath(args.baseline)
        commands = {}
        for side, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=tree, NVDOCKER_RUNTIME_CONFIG=absent, NVDOCKER_DRIVER_ROOT=root,
                       NO_COLOR="1", COLUMNS="200")
            base = [sys.executable, "-m", "nvdocker_setup"]
            dirs = [os.path.join(workdir, side, name) for name in ("etc-cdi", "run-cdi", "opt-cdi")]
            for index, directory in enumerate(dirs):
                os.makedirs(directory)
                subprocess.run(base + ["cdi", "generate", "--output", os.path.join(directory, "spec{}.yaml".format(index))],
                               env=env, check=True, stdout=subprocess.DEVNULL)
            generate = base + ["cdi", "generate", "--output", os.path.join(workdir, side, "generated.yaml")]
            if side == "baseline":
                listing = base + ["cdi", "list", "--spec", os.path.join(dirs[0], "spec0.yaml")]
            else:
                listing = base + ["cdi", "list"] + [flag for directory in dirs for flag in ("--spec-dir", directory)]
            commands[side] = (env, generate, listing)
        samples = {(side, what): [] for side in trees for what in ("generate", "list")}
        for _ in range(args.runs):
            for side, (env, generate, listing) in commands.items():
                generated = os.path.join(workdir, side, "generated.yaml")
                if os.path.exists(generated):
                    os.unlink(generated)
                samples[(side, "generate")].append(run_ms(generate, env))
                samples[(side, "list")].append(run_ms(listing, env))
        print("python {} | driver root {} | {} runs each, fresh processes".format(sys.version.split()[0], root, args.runs))
        for what, shown in (("generate", "cdi generate (real 535 driver, a new file each run)"),
                            ("list", "cdi list (ours: 3 spec directories; baseline: one --spec file)")):
            line = "  {:58} ours {:7.1f} ms".format(shown, statistics.median(samples[("ours", what)]))
            if args.baseline:
                line += "   baseline {:7.1f} ms".format(statistics.median(samples[("baseline", what)]))
            print(line + "   target <= 400 ms")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
