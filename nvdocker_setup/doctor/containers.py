"""The opt-in end-to-end check: run a tiny container with our runtime and look for the GPUs inside.

The Engine API client is GET-only on purpose, so this goes through the docker CLI (``ctx.run``),
pinned with ``-H`` to the socket the other checks inspected. Nothing is pulled. The check runs only
when asked for (``--smoke``), so a smoke test that cannot run (no docker CLI, the image not on the
daemon, dockerd unreachable, no driver) is a failure, never a skip that exits 0.

What the container must have depends on the driver: ``/dev/nvidiactl`` and a ``/dev/nvidia<N>`` per
GPU, or, on a WSL2 driver root (``/dev/dxg``, ``/usr/lib/wsl/lib``), ``/dev/dxg`` alone.
"""

import subprocess
from typing import List, Tuple

from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, warn
from nvdocker_setup.doctor.facts import Facts

GROUP = "containers"
MARKER = "--nvdocker-doctor--"
SCRIPT = (
    "ls -1 /dev; echo {m}; "
    "if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>&1; echo {m}$?; else echo {m}none; fi"
).format(m=MARKER)


def _docker(facts: Facts, docker: str, args: List[str], timeout: float):
    env = {key: value for key, value in facts.ctx.env.items() if key not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    return facts.ctx.run([docker, "-H", "unix://" + facts.socket_path] + args, timeout=timeout, env=env)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _error_line(text: str) -> str:
    """The docker CLI's error: the line that says so (it may be followed by usage advice)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def expected_nodes(driver) -> Tuple[List[str], str]:
    """The names under the container's /dev the runtime must have made for NVIDIA_VISIBLE_DEVICES=all,
    and how to say so: on WSL2 (``driver.wsl``) the one ``dxg`` node (there are no /dev/nvidia*
    there), else ``nvidiactl`` and one ``nvidia<minor>`` per GPU."""
    if driver.wsl:
        return ["dxg"], "/dev/dxg (WSL2: every GPU of the Windows host)"
    return (["nvidiactl"] + ["nvidia{}".format(gpu.minor) for gpu in driver.gpus],
            "{} GPU device node(s) and /dev/nvidiactl".format(len(driver.gpus)))


@check("container-gpu-smoke", GROUP, "a container run with our runtime sees the GPUs", opt_in=True, opt_in_flag="--smoke",
       engines=("docker",))
def container_gpu_smoke(facts: Facts):
    not_run = "--smoke did not run: "
    docker = facts.ctx.which("docker")
    if docker is None:
        return fail(not_run + "the docker CLI is not on PATH",
                    "install the docker CLI (package docker.io, docker-ce-cli or moby-cli), or run doctor without --smoke")
    try:
        facts.require_info()
        driver = facts.require_driver()
    except SkipCheck as unmet:
        return fail(not_run + unmet.reason, "fix that first; then run doctor --smoke again", cause=unmet.cause)
    image = facts.options.smoke_image
    try:
        inspected = _docker(facts, docker, ["image", "inspect", "--format", "{{.Id}}", image], facts.options.command_timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return fail(not_run + "cannot run the docker CLI: {}".format(exc), "check that `docker version` works")
    if inspected.returncode != 0:
        return fail(not_run + "image {} is not on dockerd, and doctor pulls nothing".format(image),
                    "`docker pull {}`, or pass --smoke-image with an image that is there and has sh and ls".format(image),
                    image=image)
    argv = ["run", "--rm", "--network", "none", "--runtime", facts.runtime_name,
            "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_DRIVER_CAPABILITIES=utility",
            image, "sh", "-c", SCRIPT]
    shown = "docker run --rm --network none --runtime {} -e NVIDIA_VISIBLE_DEVICES=all {} ...".format(
        facts.runtime_name, image)
    try:
        result = _docker(facts, docker, argv, facts.options.smoke_timeout)
    except subprocess.TimeoutExpired:
        return fail("`{}` did not finish within {:g} s".format(shown, facts.options.smoke_timeout),
                    "look at dockerd's log: the runtime or its hook may hang")
    except (OSError, subprocess.SubprocessError) as exc:
        return fail(not_run + "cannot run the docker CLI: {}".format(exc), "check that `docker version` works")
    if result.returncode != 0:
        error = _error_line(result.stderr) or "exit status {}".format(result.returncode)
        hint = "run it by hand to see the whole error: {}".format(shown.replace(" ...", " ls /dev"))
        if "unknown or invalid runtime" in error.lower() or "unknown runtime specified" in error.lower():
            hint = "dockerd does not know runtime {}: see daemon-runtime-loaded".format(facts.runtime_name)
        return fail("`{}` failed: {}".format(shown, error), hint, stderr=(result.stderr or "")[-2000:])
    parts = (result.stdout or "").split(MARKER)
    devices = set(parts[0].split()) if parts else set()
    expected, found = expected_nodes(driver)
    missing = [name for name in expected if name not in devices]
    if missing:
        return fail(
            "the container has no {}: runtime {} did not give it the GPUs".format(
                ", ".join("/dev/" + name for name in missing), facts.runtime_name),
            "check the runtime and hook checks above, and the runtime's log in the container's bundle (log.json)",
            missing=missing,
        )
    smi_text = parts[1] if len(parts) > 1 else ""
    status = parts[2].strip() if len(parts) > 2 else "none"
    if status == "none":
        return ok("{} inside the container (no nvidia-smi in it to ask)".format(found))
    listed = [line for line in smi_text.splitlines() if line.strip().startswith("GPU ")]
    # WSL2: one /dev/dxg for however many GPUs Windows has; any count nvidia-smi lists is right
    if status != "0" or (len(listed) != len(driver.gpus) if not driver.wsl else not listed):
        return warn("{} inside, but nvidia-smi -L there {}".format(
            found, "lists {} GPU(s)".format(len(listed)) if status == "0" else "failed: " + _last_line(smi_text)),
            "run `docker run --rm --runtime {} -e NVIDIA_VISIBLE_DEVICES=all {} nvidia-smi` to see NVML's error".format(
                facts.runtime_name, image))
    return ok("{} inside the container; nvidia-smi -L there lists {} GPU(s)".format(found, len(listed)))
