"""Checks of the executables dockerd runs for GPU containers: our runtime, our hook, runc/crun,
the ``--gpus`` hook, and NVIDIA's toolkit configuration that the hook's nvidia-container-cli reads."""

import os
import re
from typing import List, Optional

from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import HOOK_BINARY, INSTALL_NVIDIA_TOOLKIT, Facts

GROUP = "runtime-binaries"
LOW_LEVEL_RUNTIMES = ("runc", "crun")
PACKAGE = "nvdocker-toolkit"
#: Modes in which NVIDIA's hook refuses to be called by `docker --gpus`.
NON_LEGACY_MODES = ("cdi", "csv", "jit-cdi")


def _fixes(problems) -> str:
    """The ``fix: ...`` commands in trust problems, joined; else the first problem."""
    fixes: List[str] = []
    for problem in problems:
        match = re.search(r"fix: (.+)$", problem)
        if match and match.group(1) not in fixes:
            fixes.append(match.group(1))
    return "; ".join(fixes)


def _trusted(facts: Facts, shown: str, host_path: str, what: str, missing_hint: str):
    """Outcome of trust.check_runtime_binary on ``host_path`` (shown to the user as ``shown``)."""
    from nvdocker_setup.adapters.trust import check_runtime_binary

    report = check_runtime_binary(host_path, expected_owner=facts.ctx.euid)
    if not report.exists:
        return fail("{} {} cannot be used: {}".format(what, shown, report.problems[0] if report.problems else "missing"),
                    missing_hint, path=shown)
    if report.problems:
        more = " (+{} more)".format(len(report.problems) - 1) if len(report.problems) > 1 else ""
        return fail(
            "{} {} is not safe for dockerd to run as root: {}{}".format(what, shown, report.problems[0], more),
            _fixes(report.problems) or missing_hint,
            path=shown, problems=list(report.problems),
        )
    return ok("{} {}: executable, owned by root, not writable by others".format(what, shown), path=shown)


@check("runtime-binary", GROUP, "the runtime in runtimes.<name> is installed and safe", engines=("docker",))
def runtime_binary(facts: Facts):
    missing = "install it (package {}), or point runtimes.{}.path at where it is".format(PACKAGE, facts.runtime_name)
    try:
        entry = facts.runtime_entry()
    except SkipCheck:
        entry = None  # an unreadable daemon.json is config-parse's to report; check the default binary
    path = entry.get("path") if isinstance(entry, dict) else None
    owner = facts.entry_owner() if isinstance(path, str) and path else None
    what = "runtime"
    if owner in ("nvidia", "snap", "other"):
        whose = {"nvidia": "NVIDIA's runtime", "snap": "the docker snap's runtime", "other": "another tool's runtime"}
        what = "{} (runtimes.{}, not nvdocker-setup's)".format(whose[owner], facts.runtime_name)
        if owner == "nvidia":
            missing = "{}; or use nvdocker-setup's runtime beside it: `{}`".format(
                INSTALL_NVIDIA_TOOLKIT, facts.install_command())
        elif owner == "snap":
            missing = "{} lets the snap's nvidia-support service rewrite it; or {}".format(
                facts.service_command("restart"), facts.snap_advice())
        else:
            missing = "install the runtime it names; or use nvdocker-setup's runtime beside it: `{}`".format(
                facts.install_command())
    if not isinstance(path, str) or not path:
        # Where install would point the entry: on our PATH (a path on this machine), else the package's.
        found = facts.ctx.which(facts.runtime_binary_name)
        if found is not None:
            return _trusted(facts, found, found, "runtime", missing)
        path = "/usr/bin/" + facts.runtime_binary_name
    elif not path.startswith("/"):
        search, source = facts.dockerd_path_env()
        found = facts.which_in(path, search)
        if found is None:
            if owner in ("nvidia", "snap", "other"):
                fix = missing
            else:
                fix = "install {} and give the runtime an absolute path (`{}`)".format(
                    PACKAGE, facts.install_command(" --runtime-path /usr/bin/" + facts.runtime_binary_name))
            shown = "{} {!r}".format(what, path) if owner in ("nvidia", "snap", "other") else \
                "runtime {!r} (runtimes.{}.path)".format(path, facts.runtime_name)
            return fail("{} is not on dockerd's PATH ({}: {})".format(shown, source, search), fix,
                        path=path, owner=owner)
        path = found
    return _trusted(facts, path, facts.host_file(path), what, missing)


def _runtime_settings(facts: Facts):
    """The [runtime] values of runtime.conf ({} when absent or unreadable: runtime-config says why)."""
    try:
        loaded = facts.runtime_config()
    except Exception:
        return {}
    return loaded[1] if loaded else {}


@check("runtime-config", GROUP, "our runtime's configuration file")
def runtime_config(facts: Facts):
    from nvdocker_setup.driver import GpuSetupError
    from nvdocker_setup.runtime.config import DEFAULT_CONFIG_PATH

    try:
        loaded = facts.runtime_config()
    except GpuSetupError as error:
        return fail("{}: the runtime refuses to start any container".format(error.message),
                    error.hint or "fix the file")
    if loaded is None:
        return ok("no {}: the runtime uses its defaults (runc then crun, driver root /)".format(DEFAULT_CONFIG_PATH))
    path, values = loaded
    problems: List[str] = []
    root = values.get("driver-root")
    if root and (not root.startswith("/") or not os.path.isdir(facts.host_file(root))):
        problems.append("driver-root {!r} is not an existing absolute directory".format(root))
    hook = values.get("hook-path")
    if hook and not hook.startswith("/"):
        problems.append("hook-path must be absolute, got {!r}".format(hook))
    from nvdocker_setup.runtime.config import from_values

    try:  # every key as the runtime reads it (log-level, no-cgroups, booleans...): doctor agrees with it
        from_values(values, path)
    except GpuSetupError as error:
        problems.append(error.message)
    if problems:
        return fail("{}: {}".format(path, "; ".join(problems)), "fix {} (see its comments for each key)".format(path))
    shown = ", ".join("{} = {}".format(key, values[key]) for key in ("runtimes", "driver-root", "hook-path") if values.get(key))
    return ok("{}{}".format(path, ": " + shown if shown else " (defaults)"))


@check("runtime-hook-binary", GROUP, "our prestart hook is installed and safe")
def runtime_hook_binary(facts: Facts):
    configured = _runtime_settings(facts).get("hook-path")
    if configured and configured.startswith("/"):
        return _trusted(facts, configured, facts.host_file(configured), "hook (hook-path)",
                        "install it, or fix hook-path in the runtime's configuration")
    shown, path = facts.our_binary(HOOK_BINARY)
    return _trusted(facts, shown, path, "hook", "install it (package {})".format(PACKAGE))


@check("runtime-low-level", GROUP, "runc or crun is there for our runtime to run")
def runtime_low_level(facts: Facts):
    names = _runtime_settings(facts).get("runtimes", "").replace(",", " ").split() or list(LOW_LEVEL_RUNTIMES)
    search, source = facts.engine_path_env()
    for name in names:
        path = name if name.startswith("/") else facts.which_in(name, search)
        if path is not None and os.path.isfile(facts.host_file(path)):
            return _trusted(facts, path, facts.host_file(path), os.path.basename(name), "reinstall {}".format(name))
    return fail(
        "none of {} is on {} ({}): our runtime has nothing to hand containers to (\"no OCI runtime found\")".format(
            ", ".join(names), search, source),
        "install runc (`apt-get install runc` or `dnf install runc`), or list the real runtime under runtimes in "
        "/etc/nvdocker/runtime.conf",
    )


@check("gpu-hook-on-path", GROUP, "nvidia-container-runtime-hook is on dockerd's PATH", engines=("docker",))
def gpu_hook_on_path(facts: Facts):
    from nvdocker_setup.adapters.gpu_hook import GPU_HOOK

    search, source = facts.dockerd_path_env()
    found = facts.which_in(GPU_HOOK, search)
    if found is None:
        return fail(
            "no {} on dockerd's PATH ({}; from {}): `docker run --gpus` fails with \"could not select device driver "
            "\"\" with capabilities: [[gpu]]\" and runtimes fail with \"exec: {}: executable file not found\"".format(
                GPU_HOOK, search, source, GPU_HOOK),
            "install the hook (package {} links it as /usr/bin/{}; NVIDIA's is in nvidia-container-toolkit), then "
            "{}".format(PACKAGE, GPU_HOOK, facts.service_command("restart")),
            path_searched=search,
        )
    outcome = _trusted(facts, found, facts.host_file(found), "hook", "reinstall it (package {})".format(PACKAGE))
    if outcome.status != "ok":
        return outcome
    return ok("{} (searched {} from {})".format(found, search, source), path=found)


@check("gpu-hook-registered", GROUP, "dockerd started after the --gpus hook was installed", engines=("docker",))
def gpu_hook_registered(facts: Facts):
    from nvdocker_setup.adapters.gpu_hook import GPU_HOOK, hook_appeared_after_start

    proc = facts.dockerd()
    if proc is None:
        return skip("no running dockerd found to compare with")
    search, _ = facts.dockerd_path_env()
    if facts.which_in(GPU_HOOK, search) is None:
        raise SkipCheck("the hook is not on dockerd's PATH (see gpu-hook-on-path)")
    if not os.path.exists(facts.host_file("/proc/{}/stat".format(proc.pid))):
        return skip("cannot read when dockerd (pid {}) started".format(proc.pid))
    if hook_appeared_after_start(facts.ctx, proc.pid):
        return fail(
            "{} appeared after dockerd (pid {}) started: dockerd registers the --gpus device driver only at start, so "
            "`--gpus` fails with \"could not select device driver\"".format(GPU_HOOK, proc.pid),
            "{} (a reload is not enough)".format(facts.service_command("restart")),
        )
    return ok("dockerd (pid {}) started after {} was installed".format(proc.pid, GPU_HOOK))


@check("toolkit-config", GROUP, "NVIDIA toolkit config.toml suits docker --gpus", engines=("docker",))
def toolkit_config(facts: Facts):
    loaded = facts.toolkit_config()
    if loaded is None:
        return ok("no NVIDIA toolkit config.toml: nvidia-container-cli uses its defaults")
    path, values = loaded
    problems: List[str] = []
    fixes: List[str] = []
    failed = False
    root: Optional[str] = values.get("nvidia-container-cli.root")
    if isinstance(root, str) and root and not os.path.isdir(facts.host_file(root)):
        failed = True
        problems.append("nvidia-container-cli.root = {!r} does not exist: \"load library failed: libnvidia-ml.so.1\"".format(root))
        fixes.append("fix or comment out `root` in {}".format(path))
    mode = values.get("nvidia-container-runtime.mode", "auto")
    skip_detection = values.get("nvidia-container-runtime-hook.skip-mode-detection") is True
    tegra = os.path.exists(facts.host_file("/etc/nv_tegra_release"))
    if not skip_detection and (mode in NON_LEGACY_MODES or (mode == "auto" and tegra)):
        resolved = mode if mode != "auto" else "csv (Tegra host)"
        problems.append("mode {} makes NVIDIA's hook refuse `docker --gpus` (\"invoking the NVIDIA Container Runtime "
                        "Hook directly ... is not supported\")".format(resolved))
        fixes.append("use --runtime={} instead of --gpus, or `nvidia-ctk config --set nvidia-container-runtime.mode=legacy "
                     "--in-place`".format(facts.runtime_name))
    shown = "{}: mode {}, root {}, no-cgroups {}".format(
        path, mode, root or "/", str(values.get("nvidia-container-cli.no-cgroups", False)).lower())
    if problems:
        report = fail if failed else warn
        return report("{}: {}".format(path, "; ".join(problems)), "; ".join(fixes))
    return ok(shown)
