#!/usr/bin/env python3
"""What nvdocker-runtime adds to container operations, measured side by side with runc.

1. A passthrough call (``state`` of a container that does not exist: both fail the same way)
   through the C launcher vs runc directly. Target: <= 1 ms more.
2. ``docker run --rm --network none tiny true`` on a private dockerd with ``--runtime nvidia``
   (no GPU requested) vs ``--runtime runc``. NVIDIA's Go runtime adds ~2 %.
3. ``create`` of a busybox bundle requesting all GPUs of a simulated 2-GPU driver root (device
   nodes, driver libraries, nvidia-smi, the ld cache hook) vs runc's own create of the same
   bundle without the request; and the peak RSS of our Python create step. Targets: <= +15 ms
   (issue #26), <= 30 MiB.

``--driver real`` runs the create benchmark on NVIDIA's real driver files instead (Debian 12's 535
packages in their Debian layout, tests/support/real_driver.py; fetched into the test cache when
missing); ``--capabilities CAPS`` sets ``NVIDIA_DRIVER_CAPABILITIES`` in the requesting bundle
(unset by default: utility,compute). The header line says which driver root and capabilities ran.

``--guard`` (what ``make bench`` runs as root): passthrough and create only, three rounds; exit 1
when every round's create median is over +20 ms or every round's passthrough median over +1 ms
(three consecutive medians, so one noisy round cannot fail it). A regression guard, not a test.

Run as root with the interpreter the packages use: ``/usr/bin/python3 benchmarks/runtime_overhead.py``.
Samples alternate between the two sides so that machine noise hits both; medians are printed.
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
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.driver_root import build_driver_root  # noqa: E402
from tests.support.sandbox import DockerdSandbox, engine_bin_dirs, engine_path, engine_problem, find_dockerd  # noqa: E402


def spawn(argv, env=None, cwd=None):
    """Run ``argv`` to completion: (seconds, exit status, child rusage). posix_spawn + wait4
    keeps our own overhead small and gives the rusage of that one child."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        if cwd is not None:
            argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd] + list(argv)
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], list(argv), env if env is not None else os.environ, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        return time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage
    finally:
        os.close(devnull)


def ms(seconds: float) -> str:
    return "{:.2f} ms".format(seconds * 1000)


def build_launcher(directory: str) -> str:
    out = subprocess.run(
        ["bash", os.path.join(REPO, "scripts/build-launcher.sh"), directory],
        check=True, stdout=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, PYTHON="/usr/bin/python3"),
    )
    return out.stdout.strip().splitlines()[-1]


def pip_entry_point(directory: str) -> str:
    """What `pip install .` puts at bin/nvdocker-runtime: a console script for the system python."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "nvdocker-runtime")
    with open(path, "w") as handle:
        handle.write("#!/usr/bin/python3\nimport sys\nsys.path.insert(0, {!r})\n"
                     "from nvdocker_setup.runtime.main import main\nsys.exit(main())\n".format(REPO))
    os.chmod(path, 0o755)
    return path


GUARD_CREATE_MS = 20.0
GUARD_PASSTHROUGH_MS = 1.0


def bench_passthrough(launcher: str, runc: str, workdir: str, runs: int) -> float:
    """runc itself, the packages' C launcher and the pip console script, samples alternating."""
    root = os.path.join(workdir, "runc-root")
    os.makedirs(root, exist_ok=True)
    script = pip_entry_point(os.path.join(workdir, "pip-bin"))
    samples = {"runc": [], "launcher": [], "script": []}
    for _ in range(runs):
        for side, binary in (("runc", runc), ("launcher", launcher), ("script", script)):
            samples[side].append(spawn([binary, "--root", root, "state", "no-such-container"])[0])
    runc_median, launcher_median, script_median = (statistics.median(samples[k]) for k in ("runc", "launcher", "script"))
    print("passthrough `state` ({} runs each)".format(runs))
    print("  runc directly                    median {}".format(ms(runc_median)))
    print("  nvdocker-runtime (C launcher)    median {}  difference {}".format(ms(launcher_median), ms(launcher_median - runc_median)))
    print("  nvdocker-runtime (pip script)    median {}  difference {}".format(ms(script_median), ms(script_median - runc_median)))
    return launcher_median - runc_median


def make_bundle(path: str, request_gpus: bool, capabilities: Optional[str] = None) -> bytes:
    """A busybox bundle like the ones dockerd hands over, as config.json bytes to restore."""
    rootfs = os.path.join(path, "rootfs")
    if not os.path.isdir(rootfs):
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        for command in ("sh", "true", "ls"):
            os.symlink("busybox", os.path.join(rootfs, "bin", command))
    spec_file = os.path.join(path, "config.json")
    if os.path.lexists(spec_file):  # a later --guard round: `runc spec` refuses to overwrite it
        os.unlink(spec_file)
    subprocess.run(["runc", "spec", "--bundle", path], check=True)
    with open(spec_file) as handle:
        spec = json.load(handle)
    os.unlink(spec_file)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["root"]["readonly"] = False
    if request_gpus:
        spec["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all")
        if capabilities is not None:
            spec["process"]["env"].append("NVIDIA_DRIVER_CAPABILITIES=" + capabilities)
    return json.dumps(spec).encode()


def untrusted_copy(launcher: str, workdir: str) -> str:
    """The launcher in a world-writable directory: it does not offer itself as the ld cache hook
    there (launcher/nvdocker-runtime.c trusted_path), so the spec gets the Python hook, as it did
    before the hook was C: the baseline, measured in the same run."""
    shared = os.path.join(workdir, "untrusted")
    os.makedirs(shared, exist_ok=True)
    os.chmod(shared, 0o777)
    copy = os.path.join(shared, "nvdocker-runtime")
    shutil.copy2(launcher, copy)
    return copy


def bench_create(launcher: str, runc: str, workdir: str, driver_root: str, runs: int, rss: bool = True,
                 capabilities: Optional[str] = None) -> float:
    root = os.path.join(workdir, "create-root")
    bundles = {"runc": os.path.join(workdir, "bundle-plain"), "ours": os.path.join(workdir, "bundle-gpu"),
               "python-hook": os.path.join(workdir, "bundle-gpu-python-hook")}
    specs = {"runc": make_bundle(bundles["runc"], False), "ours": make_bundle(bundles["ours"], True, capabilities),
             "python-hook": make_bundle(bundles["python-hook"], True, capabilities)}
    bundles["edited"] = bundles["ours"]
    env = dict(os.environ, NVDOCKER_DRIVER_ROOT=driver_root)
    samples = {"runc": [], "ours": [], "edited": [], "python-hook": []}
    sides = [("runc", runc), ("ours", launcher), ("edited", runc)]
    if rss:  # not in the guard: it times what we ship
        sides.append(("python-hook", untrusted_copy(launcher, workdir)))
    for index in range(runs):
        for side, binary in sides:
            if side == "edited" and "edited" not in specs:
                continue
            with open(os.path.join(bundles[side], "config.json"), "wb") as handle:
                handle.write(specs[side])
            container = "bench-{}-{}".format(side, index)
            seconds, status, _ = spawn([binary, "--root", root, "create", "--bundle", bundles[side], container], env=env)
            if status != 0:
                sys.exit("create through {} failed (status {})".format(binary, status))
            samples[side].append(seconds)
            if side == "ours" and "edited" not in specs:
                with open(os.path.join(bundles["ours"], "config.json"), "rb") as handle:
                    specs["edited"] = handle.read()
            spawn([runc, "--root", root, "delete", "--force", container])
    edited = json.loads(specs["edited"])
    assert any(d["path"] == "/dev/nvidia1" for d in edited["linux"]["devices"]), "the request was not injected"
    a, b, c = (statistics.median(samples[side]) for side in ("ours", "runc", "edited"))
    print("create ({} runs each; ours injects 2 GPUs, libraries, nvidia-smi, and runs the ld cache hook)".format(runs))
    print("  runc create, no request                 median {}".format(ms(b)))
    print("  nvdocker-runtime create, all GPUs       median {}".format(ms(a)))
    print("  difference                              {}".format(ms(a - b)))
    print("  of which runc itself on the edited spec {} (mounts, devices, our ld cache hook)".format(ms(c - b)))
    if samples["python-hook"]:
        d = statistics.median(samples["python-hook"])
        print("  the same with the Python ld cache hook  median {}  difference {} (the baseline before the C hook)".format(
            ms(d), ms(d - b)))
    hooks = edited.get("hooks", {}).get("createContainer", [])
    print("  ld cache hook: {}".format(" ".join(hooks[0]["args"][:2]) if hooks else "none"))
    if not rss:
        return a - b
    # Peak RSS of our Python step alone: the real runtime is /bin/true, so nothing else counts.
    peaks = []
    script = os.path.join(REPO, "nvdocker_setup/runtime/__main__.py")
    for _ in range(5):
        with open(os.path.join(bundles["ours"], "config.json"), "wb") as handle:
            handle.write(specs["ours"])
        _, status, usage = spawn(
            ["/usr/bin/python3", "-I", "-S", script, "--nvdocker-real-runtime=/bin/true", "create", "--bundle", bundles["ours"], "x"],
            env=env,
        )
        if status != 0:
            sys.exit("the Python create step failed (status {})".format(status))
        peaks.append(usage.ru_maxrss)
    print("  peak RSS of the Python create step: {:.1f} MiB (max of 5)".format(max(peaks) / 1024))
    return a - b


def bench_docker_run(launcher: str, workdir: str, driver_root: str, runs: int) -> None:
    if find_dockerd() is None:
        print("docker run: skipped (no dockerd)")
        return
    daemon_json = json.dumps({"runtimes": {"nvidia": {"path": launcher}}}).encode()
    sandbox = DockerdSandbox(os.path.join(workdir, "dockerd"), daemon_json=daemon_json, env={"NVDOCKER_DRIVER_ROOT": driver_root})
    sandbox.start()
    try:
        image = sandbox.import_tiny_image()
        docker = engine_path("docker")
        if docker is None:
            sys.exit("the test engine's docker CLI is missing: " + engine_problem())
        env = dict(os.environ, DOCKER_CONFIG=os.path.join(sandbox.workdir, "cli"))
        samples = {"runc": [], "nvidia": []}
        for index in range(runs + 2):
            for runtime in ("runc", "nvidia"):
                seconds, status, _ = spawn(
                    [docker, "-H", sandbox.docker_host, "run", "--rm", "--network", "none", "--runtime", runtime, image, "true"], env=env
                )
                if status != 0:
                    sys.exit("docker run --runtime {} failed".format(runtime))
                if index >= 2:  # the first runs warm caches
                    samples[runtime].append(seconds)
        a, b = statistics.median(samples["nvidia"]), statistics.median(samples["runc"])
        print("docker run --rm --network none tiny true ({} runs each, no GPU requested)".format(runs))
        print("  --runtime runc     median {}".format(ms(b)))
        print("  --runtime nvidia   median {}".format(ms(a)))
        print("  ratio              {:.3f} ({:+.1f} %)".format(a / b, (a / b - 1) * 100))
    finally:
        sandbox.close()


def guard(launcher: str, runc: str, workdir: str, driver_root: str, args: argparse.Namespace) -> int:
    """Three rounds; 1 when every round is over a limit (a regression, not noise), else 0."""
    passthrough, create = [], []
    for round_number in range(3):
        print("-- round {} of 3".format(round_number + 1))
        passthrough.append(bench_passthrough(launcher, runc, workdir, args.passthrough_runs) * 1000)
        create.append(bench_create(launcher, runc, workdir, driver_root, args.create_runs, rss=False,
                                   capabilities=args.capabilities) * 1000)
    failed = 0
    for what, values, limit in (("passthrough", passthrough, GUARD_PASSTHROUGH_MS), ("2-GPU create", create, GUARD_CREATE_MS)):
        over = all(value > limit for value in values)
        failed |= over
        print("{}: +{} ms over runc (limit +{:.0f} ms): {}".format(
            what, ", +".join("{:.2f}".format(value) for value in values), limit, "REGRESSION" if over else "ok"))
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passthrough-runs", type=int, default=301)
    parser.add_argument("--create-runs", type=int, default=41)
    parser.add_argument("--docker-runs", type=int, default=31)
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--driver", choices=("simulated", "real"), default="simulated",
                        help="the create benchmark's driver root: the simulated 2-GPU root (default), or NVIDIA's real "
                             "535 driver files in their Debian layout (tests/support/real_driver.py)")
    parser.add_argument("--capabilities", metavar="CAPS", default=None,
                        help="NVIDIA_DRIVER_CAPABILITIES of the requesting bundle (default: unset, i.e. utility,compute)")
    parser.add_argument("--guard", action="store_true",
                        help="three rounds of passthrough and create; exit 1 when all three medians are over the limits")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (runc create, mknod, a private dockerd)")
    # The runc the private dockerd uses: Debian 12's, unpacked by the test support (never the host's).
    os.environ["PATH"] = os.pathsep.join(engine_bin_dirs() + [os.environ.get("PATH", "")])
    runc = engine_path("runc")
    if runc is None:
        sys.exit("the test engine's runc is missing: " + engine_problem())
    workdir = tempfile.mkdtemp(prefix="nvdocker-bench.")
    os.chmod(workdir, 0o755)
    try:
        launcher = build_launcher(os.path.join(workdir, "bin"))
        if args.driver == "real":
            from tests.support.real_driver import ensure_real_driver

            real = ensure_real_driver()
            driver_root, shown = real.debian, "real {} (Debian layout) {}".format(real.version, real.debian)
        else:
            driver_root = build_driver_root(os.path.join(workdir, "driver-root")).path
            shown = "simulated " + driver_root
        print("python {} | runc {} | launcher {} | driver root {} | NVIDIA_DRIVER_CAPABILITIES {}".format(
            sys.version.split()[0],
            subprocess.run([runc, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout.split()[2],
            launcher, shown,
            "unset (utility,compute)" if args.capabilities is None else args.capabilities,
        ))
        if args.guard:
            sys.exit(guard(launcher, runc, workdir, driver_root, args))
        bench_passthrough(launcher, runc, workdir, args.passthrough_runs)
        bench_create(launcher, runc, workdir, driver_root, args.create_runs, capabilities=args.capabilities)
        if not args.skip_docker:
            bench_docker_run(launcher, workdir, driver_root, args.docker_runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
