"""Checks of the running dockerd, through its Engine API (the client install verifies with)."""

import hashlib
import json
import os
import re
import subprocess
from typing import Any, Dict, Optional, Tuple

from nvdocker_setup.doctor.checks import check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import INSTALL_DOCKER, Facts

GROUP = "docker-daemon"
#: `--gpus` exists since Docker 19.03.
GPUS_SINCE = (19, 3)
#: libnvidia-container learnt cgroup v2 in 1.8.0.
CGROUP_V2_CLI_SINCE = (1, 8)


@check("daemon-reachable", GROUP, "dockerd answers on its socket")
def daemon_reachable(facts: Facts):
    from nvdocker_setup.adapters.docker_api import DockerUnreachable

    socket_path = facts.socket_path
    try:
        version = facts.version()
    except DockerUnreachable as error:
        installed, evidence = facts.docker_installation()
        if installed is False:
            return fail(
                "Docker is not installed here: no dockerd binary, no docker.service unit, no dockerd process, "
                "no socket at {}".format(socket_path),
                "{}; then `nvdocker-setup install` adds the GPU runtime".format(INSTALL_DOCKER),
                socket=socket_path, docker_installed=False,
            )
        exists = os.path.exists(socket_path)
        why = error.message if exists else "{} does not exist".format(socket_path)
        return fail(
            "dockerd does not answer: {}".format(why),
            "{}; if it runs elsewhere, point DOCKER_HOST at its socket".format(facts.service_command("start")),
            socket=socket_path,
        )
    return ok(
        "dockerd {} (API {}) answers on {}".format(version.get("Version", "?"), version.get("ApiVersion", "?"), socket_path),
        socket=socket_path, version=version.get("Version"), api_version=version.get("ApiVersion"),
    )


@check("daemon-config-pairing", GROUP, "the daemon.json checked is the one the dockerd on the socket reads")
def daemon_config_pairing(facts: Facts):
    from nvdocker_setup.adapters.locate import config_of_process

    proc = facts.dockerd()
    if proc is None:
        return skip("no dockerd process is known to answer on {}".format(facts.socket_path))
    reads = config_of_process(facts.ctx, proc, "running-dockerd", "dockerd")
    if reads is None:
        return skip("cannot tell which daemon.json the rootless dockerd (pid {}) reads".format(proc.pid))
    location = facts.location()
    checked = os.path.normpath(location.path)
    if os.path.normpath(reads.path) == checked:
        return ok("dockerd (pid {}) on {} reads {}, the file checked here".format(proc.pid, facts.socket_path, checked))
    return fail(
        "{} is the file checked and edited here ({}), but the dockerd answering on {} (pid {}) reads {}: "
        "changes to one are verified against the other".format(checked, location.reason, facts.socket_path,
                                                               proc.pid, reads.path),
        "point both at the same daemon: DOCKER_HOST=unix://<its socket> for the file found from it, or "
        "--config {}".format(reads.path),
        checked=checked, daemon_reads=reads.path, pid=proc.pid,
    )


def _expectation(facts: Facts, info: Dict[str, Any]):
    from nvdocker_setup.engines.docker.apply_plan import Expectation

    return Expectation.from_config(facts.require_config(), facts.runtime_name)


def _not_loaded_hint(facts: Facts) -> str:
    proc = facts.dockerd()
    text = "{} (dockerd re-reads runtimes and default-runtime on SIGHUP); if that does not help, {}".format(
        facts.service_command("reload"), facts.service_command("restart"))
    if proc is not None and proc.config_file:
        text += "; dockerd (pid {}) was started with --config-file {}".format(proc.pid, proc.config_file)
    return text


@check("daemon-runtime-loaded", GROUP, "dockerd has loaded our runtime from daemon.json")
def daemon_runtime_loaded(facts: Facts):
    from nvdocker_setup.engines.docker.apply_plan import Expectation

    info = facts.require_info()
    expected = _expectation(facts, info)
    registered = (info.get("Runtimes") or {}).get(facts.runtime_name)
    if expected.runtime_path is None:
        if registered is not None:
            return warn(
                "dockerd has runtime {} ({}) but {} does not define it: it comes from --add-runtime, or dockerd "
                "has not re-read the file".format(facts.runtime_name, registered.get("path"), facts.location().path),
                _not_loaded_hint(facts),
            )
        return skip("runtimes.{} is not in daemon.json (see config-runtime-entry)".format(facts.runtime_name))
    # Only the runtime here; daemon-default-runtime compares the default.
    only_runtime = Expectation(expected.runtime_name, expected.runtime_path, info.get("DefaultRuntime") or "")
    problems = only_runtime.mismatches(info)
    if problems:
        return fail(
            "dockerd has not loaded {}: {} (`docker run --runtime={}` fails with \"unknown or invalid runtime "
            "name\")".format(facts.location().path, "; ".join(problems), facts.runtime_name),
            _not_loaded_hint(facts),
            problems=problems,
        )
    return ok("dockerd runs runtime {} -> {}, as daemon.json says".format(facts.runtime_name, expected.runtime_path))


@check("daemon-default-runtime", GROUP, "dockerd's default runtime matches daemon.json")
def daemon_default_runtime(facts: Facts):
    info = facts.require_info()
    expected = _expectation(facts, info)
    actual = info.get("DefaultRuntime") or "runc"
    if actual != expected.default_runtime:
        return fail(
            "dockerd's default runtime is {}, but daemon.json says {}: dockerd has not loaded the file".format(
                actual, expected.default_runtime),
            _not_loaded_hint(facts),
            default=actual,
        )
    gpu = "" if actual == facts.runtime_name else " (GPU containers need --runtime={} or --gpus)".format(facts.runtime_name)
    return ok("default runtime {}{}".format(actual, gpu), default=actual)


@check("daemon-version", GROUP, "dockerd version")
def daemon_version(facts: Facts):
    facts.require_info()
    version = facts.version()
    numbers = facts.server_version()
    shown = "Docker {} (API {}, {} {})".format(
        version.get("Version", "?"), version.get("ApiVersion", "?"), version.get("Os", ""), version.get("Arch", ""))
    if numbers and numbers[:2] < GPUS_SINCE:
        return warn(shown + ": older than 19.03, so `docker run --gpus` does not exist",
                    "upgrade Docker, or use --runtime={} with NVIDIA_VISIBLE_DEVICES".format(facts.runtime_name),
                    version=version.get("Version"))
    cdi = "CDI needs 25.0+" if numbers and numbers[0] < 25 else "CDI supported"
    return ok("{}; {}".format(shown, cdi), version=version.get("Version"))


def _cli_config_dir(facts: Facts) -> Optional[str]:
    configured = facts.ctx.env.get("DOCKER_CONFIG")
    if configured:
        return configured
    home = facts.ctx.env.get("HOME")
    return os.path.join(home, ".docker") if home else None


def _context_endpoint(facts: Facts, config_dir: Optional[str], name: str) -> Optional[str]:
    if config_dir is None:
        return None
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    # The CLI's configuration is this process's (HOME, DOCKER_CONFIG), not a file of the inspected host.
    meta = os.path.join(config_dir, "contexts", "meta", digest, "meta.json")
    try:
        with open(meta, encoding="utf-8") as handle:
            data = json.load(handle)
        return data["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cli_endpoint(facts: Facts) -> Tuple[str, Optional[str], str]:
    """(context name, endpoint or None, where the choice comes from) as the docker CLI resolves it."""
    if facts.ctx.env.get("DOCKER_HOST"):
        return "default", facts.ctx.env["DOCKER_HOST"], "DOCKER_HOST"
    config_dir = _cli_config_dir(facts)
    name, source = None, ""
    if facts.ctx.env.get("DOCKER_CONTEXT"):
        name, source = facts.ctx.env["DOCKER_CONTEXT"], "DOCKER_CONTEXT"
    elif config_dir is not None:
        path = os.path.join(config_dir, "config.json")
        try:
            with open(path, encoding="utf-8") as handle:
                current = json.load(handle).get("currentContext")
        except (OSError, ValueError, AttributeError):
            current = None
        if current:
            name, source = current, "currentContext in {}".format(path)
    if not name or name == "default":
        return "default", None, source or "the CLI's default"
    return name, _context_endpoint(facts, config_dir, name), source


def _is_desktop(name: str, endpoint: Optional[str]) -> bool:
    return "desktop" in name.lower() or bool(endpoint and re.search(r"\.docker/(desktop|run)/", endpoint))


@check("daemon-cli-context", GROUP, "the docker CLI talks to this dockerd")
def daemon_cli_context(facts: Facts):
    name, endpoint, source = cli_endpoint(facts)
    checked = facts.socket_path
    use_default = "`docker context use default` (and unset DOCKER_CONTEXT / DOCKER_HOST)"
    info = None
    try:
        info = facts.info()
    except Exception:
        info = None
    if info is not None and (info.get("OperatingSystem") == "Docker Desktop" or info.get("Name") == "docker-desktop"):
        return fail(
            "the engine at {} is Docker Desktop: it runs in a VM that cannot see this host's GPUs or runtime "
            "(--gpus fails with \"could not select device driver\")".format(checked),
            "use the host's Docker Engine: {}; or remove Docker Desktop".format(use_default),
        )
    if _is_desktop(name, endpoint):
        return fail(
            "the docker CLI uses context {!r} ({}) from {}: Docker Desktop's engine, not this host's dockerd, so "
            "`--gpus` fails with \"could not select device driver\"".format(name, endpoint or "endpoint unknown", source),
            use_default,
            context=name, endpoint=endpoint,
        )
    if endpoint is None:
        if name == "default":
            return ok("the docker CLI uses the default context ({})".format(checked), context=name)
        return warn(
            "the docker CLI uses context {!r} ({}), which has no readable endpoint: `docker` fails with "
            "\"context not found\", or talks to an engine doctor did not check".format(name, source),
            use_default, context=name,
        )
    from nvdocker_setup.adapters.docker_api import socket_from_docker_host

    socket = socket_from_docker_host(endpoint)
    if socket is not None and os.path.realpath(socket) == os.path.realpath(checked):
        return ok("the docker CLI uses {} via {} (the dockerd checked here)".format(endpoint, source), context=name)
    return warn(
        "the docker CLI uses {} ({}, context {!r}), not {}: what doctor checked is not what `docker run` uses".format(
            endpoint, source, name, checked),
        "{}, or run doctor with DOCKER_HOST={}".format(use_default, endpoint),
        context=name, endpoint=endpoint,
    )


@check("daemon-rootless", GROUP, "rootless dockerd can give containers GPUs")
def daemon_rootless(facts: Facts):
    evidence = []
    try:
        info = facts.info()
        if any("rootless" in str(option) for option in info.get("SecurityOptions") or ()):
            evidence.append("docker info lists name=rootless")
    except Exception:
        pass
    try:
        if facts.location().rule == "rootless":
            evidence.append("the config file is the rootless one")
    except Exception:
        pass
    proc = facts.dockerd()
    if proc is not None and proc.rootless:
        evidence.append("dockerd (pid {}) runs under RootlessKit".format(proc.pid))
    if not evidence:
        return ok("dockerd is not rootless")
    config = facts.toolkit_config()
    no_cgroups = bool(config and config[1].get("nvidia-container-cli.no-cgroups") is True)
    if no_cgroups:
        return ok("rootless dockerd ({}), nvidia-container-cli.no-cgroups = true".format("; ".join(evidence)))
    config_path = config[0] if config else "/etc/nvidia-container-runtime/config.toml"
    try:
        rootless_file = facts.location().rule == "rootless"
    except Exception:
        rootless_file = False
    install = facts.install_command() if rootless_file else "nvdocker-setup install --config ~/.config/docker/daemon.json"
    return warn(
        "rootless dockerd ({}): `--gpus` goes through NVIDIA's nvidia-container-cli, which without no-cgroups fails "
        "with \"devices.allow: permission denied\" or \"bpf_prog_query(BPF_CGROUP_DEVICE) failed\"".format(
            "; ".join(evidence)),
        "give the rootless daemon its own runtime entry: `{}`, then `systemctl --user restart docker`, and run GPU "
        "containers with --runtime={} (our runtime does not go through nvidia-container-cli) or CDI (--device nvidia.com/gpu=all); "
        "for --gpus, set `no-cgroups = true` under [nvidia-container-cli] in {}".format(
            install, facts.runtime_name, config_path),
    )


def _cli_version(facts: Facts) -> Optional[Tuple[int, ...]]:
    tool = facts.ctx.which("nvidia-container-cli")
    if tool is None:
        return None
    try:
        result = facts.ctx.run([tool, "--version"], timeout=facts.options.command_timeout, env=dict(facts.ctx.env))
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(?:cli-)?version:?\s*(\d+)\.(\d+)(?:\.(\d+))?", result.stdout or "")
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


@check("daemon-cgroup", GROUP, "cgroup version and driver")
def daemon_cgroup(facts: Facts):
    version, version_source = facts.cgroup_version()
    driver, driver_source = facts.cgroup_driver()
    shown = "cgroup v{} ({}), cgroup driver {} ({})".format(version, version_source, driver or "unknown", driver_source)
    data = {"cgroup_version": version, "cgroup_driver": driver}
    if version == "2":
        cli = _cli_version(facts)
        if cli is not None and cli[:2] < CGROUP_V2_CLI_SINCE:
            return fail(
                "{}; nvidia-container-cli {} predates cgroup v2 support: \"cgroup subsystem devices not found\"".format(
                    shown, ".".join(map(str, cli))),
                "upgrade libnvidia-container to 1.8.0 or later (apt-get install --only-upgrade libnvidia-container-tools), "
                "or set no-cgroups = true",
                **data,
            )
    if driver == "systemd":
        shown += "; systemd re-applies device rules on daemon-reload (see driver-dev-char-links)"
    return ok(shown, **data)
