"""Checks of the daemon.json dockerd reads, and of everything else that configures dockerd."""

import os
import re
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from nvdocker_setup.core.jsondoc import member_object
from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import INSTALL_NVIDIA_TOOLKIT, Facts
from nvdocker_setup.doctor.parsers import parse_flags

GROUP = "docker-config"
#: Suffixes package managers leave next to a config file they wanted to replace or remove.
LEFTOVER_SUFFIXES = (".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-bak", ".dpkg-tmp", ".ucf-old", ".ucf-dist",
                     ".ucf-new", ".rpmsave", ".rpmnew", ".rpmorig")
#: Problems that config-runtime-entry reports for our own runtime (the schema check leaves them out).
ENTRY_CODES = ("runtime-args-ignored", "runtime-path-relative")
STOCK_RUNTIMES = ("runc", "io.containerd.runc.v2", "")
#: Our runtime's package.
PACKAGE = "nvdocker-toolkit"


def _install_hint(facts: Facts, extra: str = "") -> str:
    return facts.install_command(extra)


@check("config-location", GROUP, "the daemon.json dockerd reads")
def config_location(facts: Facts):
    location = facts.location()
    path = facts.config_path
    exists = os.path.isfile(path)
    state = "" if exists else " (not a regular file)" if os.path.lexists(path) else " (does not exist yet)"
    detail = "{}{}: {}".format(location.path, state, location.reason)
    data = {"path": location.path, "rule": location.rule, "exists": exists}
    if location.rule in ("option", "env"):
        detected = facts.detected_location()
        detected_path = facts.open_path(detected)
        if os.path.realpath(detected_path) != os.path.realpath(path) and detected.rule in (
            "systemd-execstart", "running-dockerd", "rootless", "default"
        ) and (facts.dockerd() is not None or detected.rule != "default"):
            return warn(
                "{}, but dockerd reads {} ({})".format(detail, detected.path, detected.reason),
                "check the file dockerd reads: drop --config / NVDOCKER_DOCKER_CONFIG, or pass --config {}".format(
                    detected.path),
                detected=detected.path, **data,
            )
    if location.rule == "snap":
        return warn(
            detail + "; the docker snap's own nvidia-support service rewrites (and deletes) runtimes.nvidia, "
            "and its confined dockerd may not run host binaries",
            facts.snap_advice(),
            **data,
        )
    return ok(detail, **data)


def _read_error(facts: Facts):
    from nvdocker_setup.errors import NvdockerError

    try:
        facts.document()
    except NvdockerError as error:
        return error
    return None


@check("config-parse", GROUP, "daemon.json is valid JSON")
def config_parse(facts: Facts):
    facts.location()
    error = _read_error(facts)
    if error is not None:
        details = [line.strip() for line in error.details[:1]]
        detail = error.message + (" ({})".format(details[0]) if details and details[0] else "")
        return fail(
            "{}: dockerd refuses to start with it".format(detail),
            (error.hint or "fix the file") + "; or go back to a backup: `nvdocker-setup backups` then "
            "`nvdocker-setup restore`",
            reference=error.reference,
        )
    document = facts.document()
    if document is None:
        return skip("{} does not exist: dockerd runs with its defaults".format(facts.location().path))
    if document.is_empty:
        version = facts.server_version()
        if version and version >= (23,):
            return ok("{} is empty; dockerd {} reads that as {{}}".format(facts.location().path, ".".join(map(str, version))))
        return warn(
            "{} is empty: dockerd before 23.0 refuses to start with an empty file (moby#41268)".format(facts.location().path),
            "write `{{}}` into it: echo '{{}}' > {}".format(facts.location().path),
        )
    return ok("{} parses ({} top-level key{})".format(
        facts.location().path, len(document.value), "" if len(document.value) == 1 else "s"))


@check("config-schema", GROUP, "daemon.json keys and values dockerd accepts")
def config_schema(facts: Facts):
    from nvdocker_setup.core.schema import check_document

    value = facts.require_config()
    if facts.document() is None:
        return skip("{} does not exist: nothing to check".format(facts.location().path))
    problems = [
        problem for problem in check_document(value)
        if not (problem.code in ENTRY_CODES and problem.path.startswith("$.runtimes." + facts.runtime_name))
    ]
    errors = [problem for problem in problems if problem.severity == "error"]
    warnings = [problem for problem in problems if problem.severity != "error"]
    lines = ["{}: {}".format(problem.path, problem.message) for problem in errors + warnings]
    data: Dict[str, Any] = {
        "problems": [dict(path=p.path, message=p.message, severity=p.severity, code=p.code) for p in problems]}
    more = " (+{} more, see --json)".format(len(lines) - 1) if len(lines) > 1 else ""
    hint = "edit {} as described, then {}; `nvdocker-setup restore` puts a backup back".format(
        facts.location().path, facts.service_command("restart" if errors else "reload"))
    if errors:
        return fail(lines[0] + more, hint, **data)
    if warnings:
        return warn(lines[0] + more, hint, **data)
    return ok("{} key{} checked against dockerd's rules, no problem".format(len(value), "" if len(value) == 1 else "s"))


@check("config-runtime-entry", GROUP, "our runtime's entry in daemon.json")
def config_runtime_entry(facts: Facts):
    value = facts.require_config()
    name = facts.runtime_name
    runtimes = value.get("runtimes")
    entry = runtimes.get(name) if isinstance(runtimes, dict) else None
    if entry is None:
        installed, _evidence = facts.docker_installation()
        if installed is False and facts.document() is None:
            return fail(
                "runtimes.{} is not in {}, which does not exist: Docker is not installed yet".format(
                    name, facts.location().path),
                "install Docker first (see daemon-reachable), then `{}`".format(_install_hint(facts)),
                cause="daemon-reachable",
            )
        return fail(
            "runtimes.{} is not in {}: `docker run --runtime={}` fails with \"unknown or invalid runtime name: {}\"".format(
                name, facts.location().path, name, name),
            _install_hint(facts),
        )
    if not isinstance(entry, dict):
        return fail("runtimes.{} is not an object".format(name), _install_hint(facts))
    path = entry.get("path")
    problems: List[str] = []
    fixes: List[str] = []
    if not path:
        if entry.get("runtimeType"):
            return warn(
                "runtimes.{} uses runtimeType {!r}, not a path: our runtime is a path runtime".format(name, entry["runtimeType"]),
                _install_hint(facts),
            )
        return fail("runtimes.{} has no path".format(name), _install_hint(facts))
    if not isinstance(path, str):
        return fail("runtimes.{}.path is not a string".format(name), _install_hint(facts))
    owner = facts.entry_owner()
    if owner in ("nvidia", "snap"):
        return _foreign_entry(facts, entry, path, owner)
    if not path.startswith("/"):
        problems.append("path {!r} is relative, so it depends on dockerd's PATH (the shim may not find it: "
                        "'executable file not found in $PATH')".format(path))
        fixes.append(_install_hint(facts, " --runtime-path /usr/bin/" + facts.runtime_binary_name))
    if "args" in entry:
        problems.append("it has 'args', which dockerd ignores (nvidia-ctk writes it; dockerd reads 'runtimeArgs')")
        fixes.append("rename \"args\" to \"runtimeArgs\" in {}".format(facts.location().path))
    args = entry.get("runtimeArgs")
    shown = "runtimes.{} -> {}".format(name, path) + (" {}".format(" ".join(map(str, args))) if args else "")
    if problems:
        return warn("{}: {}".format(shown, "; ".join(problems)), "; ".join(fixes), path=path)
    return ok(shown + " (absolute path{})".format(", runtimeArgs" if args else ""), path=path)


def _foreign_entry(facts: Facts, entry: Dict[str, Any], path: str, owner: str):
    """config-runtime-entry for NVIDIA's or the snap's entry: theirs to keep, never ours to rewrite
    (install refuses it: exit 7, runtime-entry-foreign)."""
    name = facts.runtime_name
    whose = "NVIDIA's entry (as nvidia-ctk writes it)" if owner == "nvidia" else "the docker snap's own entry"
    shown = "runtimes.{} -> {}: {}, not made by nvdocker-setup".format(name, path, whose)
    data = {"path": path, "owner": owner}
    args = entry.get("args")
    if args:
        return warn(
            "{}; its 'args' {} are ignored by dockerd (it reads 'runtimeArgs')".format(shown, args),
            "rename \"args\" to \"runtimeArgs\" in {}; nvdocker-setup installs beside this entry, not over "
            "it: `{}`".format(facts.location().path, _install_hint(facts)),
            **data,
        )
    if owner == "snap":
        return warn(shown, facts.snap_advice(), **data)
    return ok(shown + " (runtime-binary checks its binary)", **data)


def _resolve_runtime(facts: Facts, path: str) -> Tuple[Optional[str], str]:
    """(host path to test, how it was found) for a runtime path; relative ones on dockerd's PATH."""
    if path.startswith("/"):
        return facts.host_file(path), path
    search, source = facts.dockerd_path_env()
    found = facts.which_in(path, search)
    if found is None:
        return None, "{} on dockerd's PATH ({})".format(path, source)
    return facts.host_file(found), found


@check("config-default-runtime", GROUP, "the default runtime can be executed")
def config_default_runtime(facts: Facts):
    value = facts.require_config()
    default = value.get("default-runtime")
    features = member_object(value, "features")
    buildkit = "BuildKit builds never use it" if features.get("buildkit") is not False else "the legacy builder uses it"
    if not isinstance(default, str) or default in STOCK_RUNTIMES:
        shown = default or "runc"
        return ok(
            "default runtime {} (dockerd's own): GPU containers need --runtime={} or --gpus; "
            "Kubernetes and `docker build` get no GPU".format(shown, facts.runtime_name),
            default=shown,
        )
    runtimes = member_object(value, "runtimes")
    entry = runtimes.get(default)
    if not isinstance(entry, dict):
        return fail(
            "default-runtime {!r} is not defined under runtimes: dockerd refuses to start".format(default),
            "define it (`{}`) or set \"default-runtime\": \"runc\"".format(_install_hint(facts)),
            default=default,
        )
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        return ok("default runtime {} (a containerd runtimeType, not checked here)".format(default), default=default)
    host, shown = _resolve_runtime(facts, path)
    if host is None or not os.path.isfile(host) or not os.access(host, os.X_OK):
        where = shown if host is None else path
        owner = facts.entry_owner(default)
        runc = "set \"default-runtime\": \"runc\" in {}, then {}".format(
            facts.location().path, facts.service_command("reload"))
        if owner == "nvidia":
            fix = "{}; or make runc the default again: {} (nvdocker-setup did not make this entry, so its " \
                  "uninstall leaves it alone)".format(INSTALL_NVIDIA_TOOLKIT, runc)
        elif owner == "snap":
            fix = "{} lets the snap's nvidia-support service rewrite it; or make runc the default again: {}".format(
                facts.service_command("restart"), runc)
        elif facts.install_record(default) is not None:
            fix = "reinstall nvdocker-setup's runtime (package {}); or `nvdocker-setup uninstall`, which undoes what " \
                  "install changed, or {}".format(PACKAGE, runc)
        elif owner == "ours":
            fix = "reinstall nvdocker-setup's runtime (package {}); or make runc the default again: {}".format(PACKAGE, runc)
        else:
            fix = "install the runtime it names; or make runc the default again: {}".format(runc)
        return fail(
            "default runtime {} points at {}, which is missing or not executable: EVERY container fails "
            "(exec: \"{}\": executable file not found)".format(default, where, os.path.basename(path)),
            fix,
            cause="runtime-binary" if default == facts.runtime_name else None,
            default=default, owner=owner,
        )
    return ok("default runtime {} -> {} (executable; {})".format(default, shown, buildkit), default=default)


def _conflicts(facts: Facts, value: Dict[str, Any]):
    from nvdocker_setup.core.schema import known_keys

    keys = known_keys()
    runtimes = member_object(value, "runtimes")
    seen = set()
    fatal: List[Tuple[str, str, str]] = []
    minor: List[Tuple[str, str, str]] = []
    for source in facts.flag_sources():
        for flag in parse_flags(source.argv[1:] if source.kind != "env-file" else source.argv, keys):
            if flag.key is None or flag.key not in value:
                continue
            if flag.key == "runtimes":
                name = (flag.value or "").split("=", 1)[0]
                if name not in runtimes:
                    continue  # --add-runtime and the file's runtimes are merged
                text = "runtime {!r} is defined both by --add-runtime in {} and in daemon.json".format(name, source.source)
                bucket = minor
            else:
                text = "{} in {} and {!r} in daemon.json".format(flag.flag, source.source, flag.key)
                bucket = minor if source.kind == "env-file" and source.source.endswith("/default/docker") else fatal
            marker = (flag.key, flag.value)
            if marker in seen:
                continue
            seen.add(marker)
            bucket.append((text, flag.flag, source.source))
    return fatal, minor


@check("config-flag-conflicts", GROUP, "no dockerd flag also set in daemon.json")
def config_flag_conflicts(facts: Facts):
    value = facts.require_config()
    sources = facts.flag_sources()
    fatal, minor = _conflicts(facts, value)
    where = ", ".join(source.source for source in sources) or "no running dockerd, unit or environment file found"
    if fatal:
        text, flag, source = fatal[0]
        more = " (+{} more)".format(len(fatal) - 1) if len(fatal) > 1 else ""
        return fail(
            "{}{}: dockerd refuses to start (\"the following directives are specified both as a flag and in "
            "the configuration file\")".format(text, more),
            "keep one: remove {} from {} (for a unit, a drop-in with `ExecStart=` then `ExecStart=/usr/bin/dockerd "
            "--containerd=/run/containerd/containerd.sock`), or the key from daemon.json; then "
            "`systemctl daemon-reload` and {}".format(flag, source, facts.service_command("restart")),
            conflicts=[item[0] for item in fatal + minor],
        )
    if minor:
        text, flag, source = minor[0]
        note = " (only the sysvinit/upstart script reads /etc/default/docker)" if source.endswith("/default/docker") else ""
        return warn(
            text + note,
            "define it in one place only: remove {} from {}".format(flag, source),
            conflicts=[item[0] for item in minor],
        )
    return ok("no conflict between daemon.json and the flags of {}".format(where))


@check("config-dockerd-validate", GROUP, "dockerd --validate accepts daemon.json")
def config_dockerd_validate(facts: Facts):
    from nvdocker_setup.adapters import dockerd

    snapshot = facts.require_snapshot()
    if not snapshot.exists:
        raise SkipCheck("{} does not exist".format(facts.location().path))
    binary = dockerd.find_dockerd(facts.ctx)
    if binary is None:
        return skip("dockerd is not on PATH here, so it cannot validate the file")
    if not binary.can_validate:
        return skip("dockerd {} has no --validate (it appeared in 23.0); the schema check stands in".format(binary.version))
    flags: List[str] = []
    for source in facts.flag_sources():
        if source.kind in ("systemd", "unit-file", "process"):
            words = list(source.argv[1:])
            keep: List[str] = []
            skip_next = False
            for word in words:
                if skip_next:
                    skip_next = False
                    continue
                if word == "--config-file":
                    skip_next = True
                    continue
                if word.startswith("--config-file="):
                    continue
                keep.append(word)
            flags = keep
            break
    verdict = dockerd.validate_config(facts.ctx, snapshot.real_path, flags=flags, binary=binary)
    if not verdict.ran:
        return skip(verdict.reason)
    if verdict.ok:
        return ok(verdict.reason)
    return fail(verdict.reason, "fix {} as dockerd says, then {}".format(
        facts.location().path, facts.service_command("restart")), messages=list(verdict.messages))


@check("config-packaging-leftovers", GROUP, "no package-manager copies next to daemon.json")
def config_packaging_leftovers(facts: Facts):
    real = os.path.realpath(facts.config_path)
    directory, base = os.path.split(real)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return skip("{} cannot be listed".format(directory))
    found = [name for name in names if name.startswith(base) and name[len(base):] in LEFTOVER_SUFFIXES]
    if not found:
        return ok("no .dpkg-old/.dpkg-dist/.rpmsave/.rpmnew copies next to {}".format(facts.location().path))
    shown = ", ".join(found)
    first = os.path.join(os.path.dirname(facts.location().path), found[0])
    return warn(
        "{} next to {}: a package replaced or wanted to replace daemon.json (nvidia-docker2 shipped a whole file), "
        "so settings may have been lost".format(shown, base),
        "compare `diff -u {} {}`, merge back what you need (`{}` re-adds the runtime), then delete the copy".format(
            first, facts.location().path, _install_hint(facts)),
        leftovers=found,
    )


def _owners_dpkg(facts: Facts, tool: str, path: str) -> Optional[List[str]]:
    result = facts.ctx.run([tool, "-S", path], timeout=facts.options.command_timeout, env=dict(facts.ctx.env))
    if result.returncode != 0:
        return []
    owners: List[str] = []
    for line in (result.stdout or "").splitlines():
        if line.startswith(("diversion by", "local diversion")):
            continue
        packages, sep, owned = line.rpartition(": ")
        if not sep or owned.strip() != path:
            continue
        owners.extend(part.strip().split(":")[0] for part in packages.split(",") if part.strip())
    return owners


def _owners_rpm(facts: Facts, tool: str, path: str) -> Optional[List[str]]:
    result = facts.ctx.run([tool, "-qf", path], timeout=facts.options.command_timeout, env=dict(facts.ctx.env))
    if result.returncode != 0:
        return []
    return [line.strip() for line in (result.stdout or "").splitlines() if line.strip() and " " not in line.strip()]


@check("config-package-owner", GROUP, "no package owns daemon.json")
def config_package_owner(facts: Facts):
    path = facts.location().path
    owners: List[str] = []
    asked: List[str] = []
    for name, query in (("dpkg", _owners_dpkg), ("rpm", _owners_rpm)):
        tool = facts.ctx.which(name)
        if tool is None:
            continue
        asked.append(name)
        try:
            found = query(facts, tool, path)
        except (OSError, subprocess.SubprocessError) as exc:
            return skip("could not ask {}: {}".format(name, exc))
        for owner in found or ():
            if owner not in owners:
                owners.append(owner)
    if not asked:
        return skip("neither dpkg nor rpm is installed")
    if not owners:
        return ok("no package owns {} ({} asked)".format(path, " and ".join(asked)))
    remove = "apt-get remove" if "dpkg" in asked else "rpm -e"
    if len(owners) > 1:
        return fail(
            "{} is owned by {} packages ({}): installing or upgrading one fails with a file conflict".format(
                path, len(owners), ", ".join(owners)),
            "keep a backup, then remove the package that should not own it (`{} {}`, never purge)".format(remove, owners[-1]),
            owners=owners,
        )
    return warn(
        "{} belongs to package {}: its upgrades may replace the file and a purge deletes it".format(path, owners[0]),
        "keep a backup (`nvdocker-setup backups`); remove the package, never purge it (`{} {}`; nvidia-docker2 "
        "2.14+ no longer ships the file)".format(remove, re.sub(r"-[0-9].*$", "", owners[0])),
        owners=owners,
    )


@check("config-install-record", GROUP, "the runtime nvdocker-setup installed is still there")
def config_install_record(facts: Facts):
    from nvdocker_setup.adapters import statedir
    from nvdocker_setup.adapters.state import StateStore
    from nvdocker_setup.errors import NvdockerError

    state_path = facts.ctx.state_path
    if not os.path.exists(state_path):
        return skip("nvdocker-setup has no install records in {}".format(facts.ctx.state_dir))
    snapshot = facts.require_snapshot()
    uids = statedir.trusted_uids(facts.ctx.euid)
    try:
        statedir.check_state_dir(facts.ctx.state_dir, uids, create=False)
        record = StateStore(state_path, trusted_uids=uids).load().get(snapshot.real_path, facts.runtime_name)
    except NvdockerError as error:
        return fail(error.message, error.hint or "inspect {}".format(facts.ctx.state_dir))
    if record is None:
        return skip("nvdocker-setup did not install runtime {} into {}".format(facts.runtime_name, facts.location().path))
    value = facts.require_config()
    runtimes = member_object(value, "runtimes")
    current = runtimes.get(facts.runtime_name)
    if current is None:
        return fail(
            "nvdocker-setup installed runtimes.{} into {}, and it is gone: the file was replaced "
            "(by a package such as nvidia-docker2, or by hand)".format(facts.runtime_name, facts.location().path),
            "`{}` puts it back; `nvdocker-setup backups` lists what the file held before".format(_install_hint(facts)),
        )
    if current != record.entry:
        return warn(
            "runtimes.{} changed since nvdocker-setup installed it ({} -> {})".format(facts.runtime_name, record.entry, current),
            "if that was not you, `{}` rewrites it".format(_install_hint(facts)),
        )
    return ok("runtimes.{} is as nvdocker-setup installed it".format(facts.runtime_name))
