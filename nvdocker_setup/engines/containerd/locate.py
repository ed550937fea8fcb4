"""Which config.toml the running (or next) containerd reads, and which rule said so.

``--config`` > env ``NVDOCKER_CONTAINERD_CONFIG`` > the ``--config``/``-c`` of containerd.service's
ExecStart > the ``--config``/``-c`` of the running system containerd > ``/etc/containerd/config.toml``.

Two kinds of containerd are never ours to edit: the one dockerd starts for itself (its
``containerd.toml`` under ``/var/run/docker`` is rewritten at every dockerd start) and k3s/RKE2's
(their ``config.toml`` is rendered from ``config.toml.tmpl`` at every agent start).
"""

import os
import subprocess
from typing import List, Optional, Sequence

from nvdocker_setup.adapters.locate import (
    SYSTEMCTL_TIMEOUT,
    ConfigLocation,
    DockerdProcess,
    daemon_processes,
    parse_execstart,
    refuse_untrusted_config,
)
from nvdocker_setup.context import Context
from nvdocker_setup.errors import Conflict, UsageError

ENV_VAR = "NVDOCKER_CONTAINERD_CONFIG"
DEFAULT_CONFIG = "/etc/containerd/config.toml"
SYSTEMD_UNIT = "containerd.service"
DEFAULT_SOCKET = "/run/containerd/containerd.sock"
#: Where k3s and RKE2 render the config they run with (from config.toml.tmpl beside it).
REGENERATED_PREFIXES = ("/var/lib/rancher/",)
#: Where dockerd keeps the config of the containerd it starts itself.
DOCKER_MANAGED_PREFIXES = ("/var/run/docker/", "/run/docker/")


def config_from_argv(argv: Sequence[str]) -> Optional[str]:
    """The last ``--config``/``-c`` value of a containerd command line (None: not given)."""
    found: Optional[str] = None
    args = list(argv)
    i = 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg in ("--config", "-c", "-config"):
            if i + 1 < len(args):
                found = args[i + 1]
            i += 2
            continue
        for prefix in ("--config=", "-c=", "-config="):
            if arg.startswith(prefix):
                found = arg[len(prefix):]
        i += 1
    return found or None


def _is_docker_managed(ctx: Context, proc: DockerdProcess) -> bool:
    """A containerd that dockerd started itself (its parent is dockerd, or its config is dockerd's)."""
    value = config_from_argv(proc.argv) or ""
    if value.startswith(DOCKER_MANAGED_PREFIXES):
        return True
    try:
        with open(ctx.host_path("/proc/{}/comm".format(proc.ppid))) as handle:
            return handle.read().strip() == "dockerd"
    except OSError:
        return False


def system_containerds(ctx: Context) -> List[DockerdProcess]:
    """Running containerds that are an engine of their own: root's, in the host's namespaces (see
    :func:`~nvdocker_setup.adapters.locate.daemon_processes`), not the one dockerd runs."""
    return [proc for proc in daemon_processes(ctx, "containerd") if proc.uid == 0 and not _is_docker_managed(ctx, proc)]


def _resolve(value: str, base: Optional[str], rule: str, reason: str) -> ConfigLocation:
    if os.path.isabs(value):
        return ConfigLocation(os.path.normpath(value), rule, reason)
    if base is None:
        return ConfigLocation(value, rule, reason + "; its working directory is unreadable, so the path is left as given")
    return ConfigLocation(os.path.normpath(os.path.join(base, value)), rule, reason + ", resolved against " + base)


def _from_systemd(ctx: Context) -> Optional[ConfigLocation]:
    systemctl = ctx.which("systemctl")
    if systemctl is None or not os.path.isdir(ctx.host_path("/run/systemd/system")):
        return None
    try:
        result = ctx.run([systemctl, "show", SYSTEMD_UNIT, "-p", "ExecStart", "--value"], timeout=SYSTEMCTL_TIMEOUT,
                         env=dict(ctx.env))
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 or not result.stdout:
        return None
    for words in parse_execstart(result.stdout):
        value = config_from_argv(words)
        if value is not None:
            return _resolve(value, "/", "systemd-execstart", "--config in {}'s ExecStart".format(SYSTEMD_UNIT))
    return None


def _from_running(ctx: Context) -> Optional[ConfigLocation]:
    for proc in system_containerds(ctx):
        value = config_from_argv(proc.argv)
        if value is not None:
            location = _resolve(value, proc.cwd, "running-containerd",
                                "--config of the running containerd (pid {})".format(proc.pid))
            return refuse_untrusted_config(ctx, location, "the running containerd (pid {})".format(proc.pid),
                                           flag="--config")
    return None


def refuse_regenerated(path: str) -> None:
    """A config another program renders anew at every start: our edit would vanish."""
    if path.startswith(REGENERATED_PREFIXES):
        template = os.path.join(os.path.dirname(path), "config.toml.tmpl")
        raise Conflict(
            "{} is rendered by k3s/RKE2 at every start; an edit there would be lost".format(path),
            reference="containerd-config-regenerated",
            hint="k3s and RKE2 detect nvidia-container-runtime themselves; to add a handler, copy the rendered file "
            "to {} and edit that template instead".format(template),
        )
    if path.startswith(DOCKER_MANAGED_PREFIXES):
        raise Conflict(
            "{} belongs to the containerd that dockerd starts for itself and is rewritten at every dockerd start".format(path),
            reference="containerd-config-regenerated",
            hint="configure Docker instead: --engine docker",
        )


def locate_config(ctx: Context, explicit: Optional[str]) -> ConfigLocation:
    """The config.toml to edit (raises Conflict for a file another program regenerates)."""
    location = find_config(ctx, explicit)
    refuse_regenerated(location.path)
    return location


def find_config(ctx: Context, explicit: Optional[str]) -> ConfigLocation:
    """The config.toml the running (or next) containerd reads, whoever renders it (doctor reports
    a regenerated file; install refuses it)."""
    if explicit is not None:
        if not explicit.strip():
            raise UsageError("--config was given an empty path", hint="pass the config.toml to edit")
        location = ConfigLocation(os.path.abspath(explicit), "option", "given with --config")
    elif ctx.env.get(ENV_VAR, "").strip():
        location = ConfigLocation(os.path.abspath(ctx.env[ENV_VAR].strip()), "env", "{} is set".format(ENV_VAR))
    else:
        location = (
            _from_systemd(ctx)
            or _from_running(ctx)
            or ConfigLocation(DEFAULT_CONFIG, "default", "containerd's default config path")
        )
    return location
