"""Checks of containerd (``doctor --engine containerd``): the config.toml it reads, our runtime
handler in it and in the live CRI config, and containerd's CDI support.

Every fact comes from :class:`~nvdocker_setup.doctor.facts.Facts` (``ctd_*``, ``cri_status``),
which asks the containerd engine's own objects once: the locator, the installed binary, the
document parser and the CRI Status client.
"""

import os
from typing import Any, Dict, List, Optional, Tuple

from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import NVIDIA_RUNTIMES, Facts, ctd_binary_name

CONFIG = "containerd-config"
DAEMON = "containerd-daemon"
RUNTIME_TYPE = "io.containerd.runc.v2"
BACKUPS = "`nvdocker-setup backups --engine containerd` then `nvdocker-setup restore --engine containerd`"


def _version(facts: Facts) -> Optional[Tuple[int, int, int]]:
    try:
        return facts.ctd_installed().version
    except Exception:
        return None


def _shown(facts: Facts) -> str:
    try:
        return facts.ctd_installed().shown
    except Exception:
        return "containerd (version unknown)"


def _handler(facts: Facts, name: Optional[str] = None) -> str:
    """``runtimes.<name>``, as messages call a handler."""
    return "runtimes.{}".format(name or facts.runtime_name)


def _table(facts: Facts, name: Optional[str] = None) -> str:
    """The handler's full TOML table in this file's schema, for fixes."""
    from nvdocker_setup.engines.containerd.config import format_path

    document = facts.require_ctd_document()
    return format_path(document.runtimes_path + (name or facts.runtime_name,))


# -- the config.toml containerd reads -------------------------------------------------------------


@check("containerd-config-location", CONFIG, "the config.toml containerd reads")
def containerd_config_location(facts: Facts):
    location = facts.ctd_location()
    path = facts.ctd_config_path
    exists = os.path.isfile(path)
    state = "" if exists else " (not a regular file)" if os.path.lexists(path) else " (does not exist yet)"
    detail = "{}{}: {}".format(location.path, state, location.reason)
    data = {"path": location.path, "rule": location.rule, "exists": exists}
    conflict = facts.ctd_regenerated()
    if conflict is not None:
        return warn("{}; {}".format(detail, conflict.message), conflict.hint, regenerated=True, **data)
    return ok(detail, **data)


@check("containerd-config-parse", CONFIG, "config.toml parses and has a schema version containerd reads")
def containerd_config_parse(facts: Facts):
    from nvdocker_setup.errors import NvdockerError

    facts.ctd_location()
    try:
        document = facts.ctd_document()
    except NvdockerError as error:
        where = [line.strip() for line in error.details[:1] if line.strip()]
        return fail(
            "{}{}: containerd refuses to start with it".format(error.message, " ({})".format(where[0]) if where else ""),
            (error.hint or "fix the file") + "; or go back to a backup: " + BACKUPS,
            reference=error.reference,
        )
    snapshot = facts.ctd_snapshot()
    if not snapshot.exists or not snapshot.data.strip():
        what = "does not exist" if not snapshot.exists else "is empty"
        return ok("{} {}: containerd runs with its defaults (config version {} for {})".format(
            facts.ctd_location().path, what, document.version, _shown(facts)), version=document.version)
    return ok("{}: config version {}{}".format(
        facts.ctd_location().path, document.version, " (no `version` key)" if "version" not in document.value else ""),
        version=document.version)


@check("containerd-config-version", CONFIG, "the schema version suits the installed containerd")
def containerd_config_version(facts: Facts):
    document = facts.require_ctd_document()
    version = _version(facts)
    if version is None:
        return skip("no containerd binary here to tell its version (set NVDOCKER_CONTAINERD_BINARY)")
    schema = document.version
    shown = _shown(facts)
    if schema == 1 and version >= (2, 0, 0):
        return fail(
            "config version 1 on {}: containerd 2.x reads a version 1 file without its CRI runtimes "
            "(plugins.cri), so runtime handlers in it are ignored".format(shown),
            "migrate it: `containerd config migrate > config.toml.new` (with --config {}), check the result and move "
            "it in place, then restart containerd".format(facts.ctd_location().path),
            schema=schema,
        )
    if schema == 3 and version < (2, 0, 0):
        return fail(
            "config version 3 on {}: containerd 1.x reads versions 1 and 2 only and does not start with it".format(shown),
            "upgrade containerd to 2.x, or use a version 2 file (`containerd config default` of this containerd)",
            schema=schema,
        )
    note = "; version 1 is deprecated: `containerd config migrate` on containerd 2.x" if schema == 1 else ""
    return ok("config version {} on {}{}".format(schema, shown, note), schema=schema)


@check("containerd-cri-enabled", CONFIG, "the CRI plugin is enabled")
def containerd_cri_enabled(facts: Facts):
    from nvdocker_setup.engines.containerd.config import basic_string, format_path

    document = facts.require_ctd_document()
    disabled = document.cri_disabled()
    if disabled is not None:
        return fail(
            "disabled_plugins contains {}: containerd runs no CRI, so Kubernetes cannot use it and runtime handlers "
            "are ignored".format(basic_string(disabled)),
            "remove {} from disabled_plugins in {} (docker-ce's containerd.io ships it disabled; Docker does not need "
            "it off), or start from `containerd config default`; then {}".format(
                basic_string(disabled), facts.ctd_location().path, facts.ctd_restart_command()),
            disabled=disabled,
        )
    return ok("the CRI plugin ({}) is not in disabled_plugins".format(format_path(document.cri_path)))


@check("containerd-runtime-entry", CONFIG, "our runtime handler in config.toml")
def containerd_runtime_entry(facts: Facts):
    entry = facts.ctd_entry()
    handler = _handler(facts)
    if entry is None:
        return fail(
            "{} has no {}: pods with that runtime class fail (\"no runtime for {!r} is configured\")".format(
                facts.ctd_location().path, handler, facts.runtime_name),
            "`{}`".format(facts.ctd_install_command()),
        )
    owner = facts.ctd_entry_owner()
    binary = ctd_binary_name(entry)
    runtime_type = entry.get("runtime_type")
    if owner in ("nvidia", "other"):
        return ok("{} is not nvdocker-setup's: BinaryName {} (see containerd-foreign-handler)".format(
            handler, binary or "unset (plain runc)"), owner=owner, binary_name=binary)
    if runtime_type not in (None, RUNTIME_TYPE):
        return fail("{} has runtime_type {!r}: BinaryName is an option of {} only".format(
            handler, runtime_type, RUNTIME_TYPE),
            "set runtime_type = \"{}\" under [{}], or reinstall: `nvdocker-setup uninstall --engine containerd` then `{}`".format(
                RUNTIME_TYPE, _table(facts), facts.ctd_install_command()), owner=owner)
    if binary is None:
        return fail("{} has no options.BinaryName: it runs plain runc and gives no GPU".format(handler),
                    "reinstall: `nvdocker-setup uninstall --engine containerd` then `{}`".format(
                        facts.ctd_install_command()), owner=owner)
    return ok("{}: runtime_type {}, BinaryName {}".format(handler, RUNTIME_TYPE, binary), owner=owner,
              binary_name=binary)


def _nvidia_handlers(facts: Facts) -> List[Tuple[str, str]]:
    """(name, BinaryName) of every handler in the file that runs NVIDIA's runtime."""
    document = facts.require_ctd_document()
    runtimes = document.get(document.runtimes_path)
    found: List[Tuple[str, str]] = []
    if isinstance(runtimes, dict):
        for name, entry in runtimes.items():
            binary = ctd_binary_name(entry)
            if binary and os.path.basename(binary) in NVIDIA_RUNTIMES:
                found.append((str(name), binary))
    return found


@check("containerd-foreign-handler", CONFIG, "handlers of NVIDIA's toolkit beside ours")
def containerd_foreign_handler(facts: Facts):
    facts.require_ctd_document()
    owner = facts.ctd_entry_owner()
    others = [(name, binary) for name, binary in _nvidia_handlers(facts) if name != facts.runtime_name]
    if owner in ("nvidia", "other"):
        binary = ctd_binary_name(facts.ctd_entry()) or "unset (plain runc)"
        whose = "NVIDIA's" if owner == "nvidia" else "another tool's"
        return ok(
            "{} is {} handler (BinaryName {}), not nvdocker-setup's; the choice is yours: keep it (nvdocker-setup "
            "leaves it alone), or add ours beside it with `{}` and point a RuntimeClass at that handler".format(
                _handler(facts), whose, binary, facts.ctd_install_command()),
            owner=owner, binary_name=binary, others=[name for name, _ in others],
        )
    if others:
        return ok("beside {}: {} (NVIDIA's toolkit); pods choose one with their RuntimeClass".format(
            _handler(facts), ", ".join("{} (BinaryName {})".format(name, binary) for name, binary in others)),
            others=[name for name, _ in others])
    return ok("no handler of NVIDIA's toolkit in the file")


def _systemd_cgroup(entry: Any) -> bool:
    options = entry.get("options") if isinstance(entry, dict) else None
    return isinstance(options, dict) and options.get("SystemdCgroup") is True


@check("containerd-systemd-cgroup", CONFIG, "SystemdCgroup is the same on the default handler and ours")
def containerd_systemd_cgroup(facts: Facts):
    document = facts.require_ctd_document()
    entry = facts.ctd_entry()
    if entry is None:
        raise SkipCheck("no handler {} (see containerd-runtime-entry)".format(_handler(facts)))
    default = document.get(document.default_runtime_name_path)
    default = default if isinstance(default, str) and default != facts.runtime_name else "runc"
    default_entry = facts.ctd_entry(default)
    theirs = _systemd_cgroup(default_entry)
    source = "" if default_entry is not None else " (containerd's built-in runc)"
    ours = _systemd_cgroup(entry)
    data: Dict[str, Any] = {"default_handler": default, "default": theirs, "ours": ours}
    if ours != theirs:
        fix = "set SystemdCgroup = {} under [{}.options] and {}".format(
            str(theirs).lower(), _table(facts), facts.ctd_restart_command())
        if facts.ctd_entry_owner() == "ours":
            fix += "; or reinstall, which copies the default handler's options: `nvdocker-setup uninstall --engine " \
                "containerd` then `{}`".format(facts.ctd_install_command())
        return fail(
            "SystemdCgroup is {} on {}{} (the default handler) but {} on {}: pods on {} get the other cgroup driver "
            "than the kubelet's and fail to start".format(
                str(theirs).lower(), default, source, str(ours).lower(), _handler(facts), facts.runtime_name),
            fix, **data,
        )
    return ok("SystemdCgroup = {} on {}{} and on {}".format(str(ours).lower(), default, source, facts.runtime_name),
              **data)


# -- the handler's binary ---------------------------------------------------------------------------


@check("containerd-handler-binary", "runtime-binaries", "the BinaryName of our handler is installed and safe",
       engines=("containerd",))
def containerd_handler_binary(facts: Facts):
    from nvdocker_setup.doctor.runtime import PACKAGE, _trusted

    entry = facts.ctd_entry()
    if entry is None:
        raise SkipCheck("no handler {} (see containerd-runtime-entry)".format(_handler(facts)))
    binary = ctd_binary_name(entry)
    if binary is None:
        raise SkipCheck("{} sets no BinaryName (see containerd-runtime-entry)".format(_handler(facts)))
    owner = facts.ctd_entry_owner()
    what = "BinaryName of {}".format(_handler(facts))
    missing = "install it (package {}), or reinstall pointing at it: `{}`".format(
        PACKAGE, facts.ctd_install_command(" --runtime-path /usr/bin/" + facts.runtime_binary_name))
    if owner == "nvidia":
        from nvdocker_setup.doctor.facts import INSTALL_NVIDIA_TOOLKIT

        what = "NVIDIA's runtime ({}, not nvdocker-setup's)".format(what)
        missing = "{}; or use nvdocker-setup's runtime beside it: `{}`".format(
            INSTALL_NVIDIA_TOOLKIT, facts.ctd_install_command())
    if not binary.startswith("/"):
        search, source = facts.engine_path_env()
        found = facts.which_in(binary, search)
        if found is None:
            return fail("{} {!r} is not on containerd's PATH ({}: {})".format(what, binary, source, search), missing,
                        path=binary)
        binary = found
    return _trusted(facts, binary, facts.host_file(binary), what, missing)


# -- the running containerd -------------------------------------------------------------------------


@check("containerd-reachable", DAEMON, "containerd answers CRI Status on the socket config.toml names")
def containerd_reachable(facts: Facts):
    from nvdocker_setup.engines.containerd import cri
    from nvdocker_setup.errors import NvdockerError

    socket = facts.ctd_socket
    try:
        status = facts.cri_status()
    except cri.GrpcMissing as error:
        return warn("cannot ask containerd for its live config: {}".format(error.message), error.hint)
    except cri.CriUnreachable as error:
        installed = None
        try:
            installed = facts.ctd_installed().path
        except Exception:
            pass
        if installed is None:
            return fail("containerd is not reachable at {} and no containerd binary is installed here".format(socket),
                        "install containerd (`apt-get install containerd`, or containerd.io from Docker's "
                        "repository), or pass --config the config.toml of the containerd that runs")
        return fail("containerd is not reachable at {}: {}".format(socket, error.message),
                    "{}, or pass --config the config.toml of the containerd that runs (its grpc.address is the "
                    "socket)".format(facts.ctd_restart_command("start")))
    except cri.CriUnavailable as error:
        cause = None
        try:
            cause = "containerd-cri-enabled" if facts.ctd_document().cri_disabled() else None
        except NvdockerError:
            cause = None
        return fail("{}: its CRI plugin is not running".format(error.message), error.hint, cause=cause)
    except NvdockerError as error:
        return fail(error.message, error.hint or "see containerd's log (`journalctl -u containerd`)")
    problems = status.problems()
    if problems:
        return fail("containerd answers on {} but {}".format(socket, "; ".join(problems)),
                    "see containerd's log (`journalctl -u containerd`)", problems=problems)
    if status.config_problem:
        return warn("containerd answers on {} but its live config cannot be read: {}".format(
            socket, status.config_problem), "upgrade containerd (1.6 or newer reports its CRI config)")
    return ok("containerd answers on {} (CRI {}, RuntimeReady; installed: {})".format(socket, status.api, _shown(facts)),
              socket=socket, api=status.api)


@check("containerd-runtime-loaded", DAEMON, "containerd has loaded our handler from config.toml")
def containerd_runtime_loaded(facts: Facts):
    entry = facts.ctd_entry()
    status = facts.require_cri_status()
    live = status.runtimes().get(facts.runtime_name)
    handler = _handler(facts)
    restart = "{} (running containers keep running: their shims outlive containerd)".format(facts.ctd_restart_command())
    if entry is None:
        if live is not None:
            return warn("containerd runs handler {!r} (BinaryName {}) that config.toml no longer has: it goes at "
                        "the next restart".format(facts.runtime_name, live.get("binary_name")),
                        "`{}`, or {} to drop it".format(facts.ctd_install_command(), restart))
        raise SkipCheck("no handler {} (see containerd-runtime-entry)".format(handler))
    binary = ctd_binary_name(entry)
    version = _version(facts)
    if live is None and facts.require_ctd_document().version == 1 and version is not None and version >= (2, 0, 0):
        return fail("config.toml has {} but {} ignores a version 1 file's CRI runtimes".format(handler, _shown(facts)),
                    "migrate the file (see containerd-config-version)", cause="containerd-config-version",
                    live=sorted(status.runtimes()))
    if live is None:
        return fail("config.toml has {} but containerd has not loaded it: restart containerd".format(handler), restart,
                    live=sorted(status.runtimes()))
    if live.get("binary_name") != binary:
        return fail("containerd runs handler {!r} with BinaryName {}, config.toml says {}: restart containerd".format(
            facts.runtime_name, live.get("binary_name"), binary), restart)
    return ok("containerd runs handler {!r} with BinaryName {} (default handler: {})".format(
        facts.runtime_name, binary, status.default_runtime_name or "runc"), binary_name=binary)


# -- CDI --------------------------------------------------------------------------------------------


@check("cdi-containerd-support", "cdi", "containerd reads the CDI spec", engines=("containerd",))
def cdi_containerd_support(facts: Facts):
    from nvdocker_setup.doctor.cdi import GENERATE, nvidia_specs, spec_dirs
    from nvdocker_setup.engines.containerd import plan

    specs = nvidia_specs(facts)
    dirs, source = spec_dirs(facts)
    if not specs:
        return skip("no CDI spec for nvidia.com/gpu in {}: CDI is not in use (`{}` creates one)".format(
            ", ".join(dirs), GENERATE))
    version = _version(facts)
    if version is not None and version < (1, 7, 0):
        return warn("{} has no CDI (containerd 1.7 added it): the spec in {} is unused".format(
            _shown(facts), specs[0].directory),
            "use the runtime handler (runtimeClassName {}), or upgrade containerd to 1.7 or newer".format(
                facts.runtime_name))
    live = None
    try:
        live = facts.cri_status()
    except Exception:
        live = None
    enabled: Optional[bool] = live.enable_cdi if live is not None else None
    where = "the live CRI config"
    if enabled is None:
        document = facts.require_ctd_document()
        enabled = plan.cdi_enabled(document.value)
        where = "config.toml"
        if enabled is None:
            enabled = version is not None and version >= (2, 0, 0)
            where = "{}'s default".format(_shown(facts))
    if not enabled:
        return warn("enable_cdi is off ({}): containerd ignores the spec in {}, so CDI device requests fail".format(
            where, specs[0].directory),
            "`{}`, then {}".format(facts.ctd_install_command(" --cdi"), facts.ctd_restart_command()))
    live_dirs = live.cdi_spec_dirs if live is not None else []
    if live_dirs and not any(spec.directory in live_dirs for spec in specs):
        return warn("containerd reads CDI specs from {}, not from {} ({})".format(
            ", ".join(live_dirs), specs[0].directory, source),
            "move the spec: `{} --output {}`".format(GENERATE, os.path.join(live_dirs[0], "nvidia.yaml")))
    return ok("CDI is on ({}); containerd reads {}".format(where, ", ".join(spec.path for spec in specs)))
