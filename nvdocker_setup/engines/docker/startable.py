"""Could the running dockerd start again on a daemon.json? Judged before a reload or restart, for
the new file and for the file a rollback would restore, so that an apply never takes a running
dockerd down (issue #19, item 6).

dockerd checks a daemon.json the same way at start and on SIGHUP (moby's
``getConflictFreeConfiguration``): a key that matches no option ("the following directives don't
match any configuration option") and a key that is also given as a flag on its command line ("the
following directives are specified both as a flag and in the configuration file") make it refuse
the whole file. A dockerd that is running with such a file started before the file changed; a
restart takes it down, and a rollback that restores the same file cannot bring it back. A reload
of such a file is refused by dockerd (it keeps running on what it had), so it never takes either.

:func:`start_blockers` is the pure judgement (our schema's errors and the flag/file conflicts);
:func:`judge` adds the I/O: the running daemon's argv (and docker.service's ExecStart), and
``dockerd --validate`` with those flags where dockerd has it (23.0+).
"""

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nvdocker_setup.context import Context

#: flags whose daemon.json key is not the flag's name nor its plural with "s"
_IRREGULAR_KEYS = {"insecure-registry": "insecure-registries"}
#: dockerd merges --add-runtime with the file's runtimes (moby's skipDuplicates)
_MERGED_KEYS = frozenset({"runtimes"})
#: schema findings that ``dockerd --validate`` does not see (runtimes are checked when they are set
#: up, at start and on reload, not by --validate on 25+): kept even when --validate accepts the file
_NOT_SEEN_BY_VALIDATE = frozenset({"runtime-reserved-name", "runtime-bad-name", "runtime-shape", "default-runtime-unknown"})


@dataclass(frozen=True)
class Blocker:
    """One reason dockerd would refuse a daemon.json at start (and on reload)."""

    #: the top-level daemon.json key ("not-a-docker-key", "hosts"), a JSON path below it
    #: ("$.log-opts.bad"), or "$" for the whole file
    key: str
    #: what dockerd says or would say, in words
    reason: str
    #: unknown-key, removed-key, rejected-key, conflicting-keys, wrong-type, invalid-value,
    #: runtime-*, flag-conflict, dockerd-validate
    code: str
    #: the flag on dockerd's command line for a flag-conflict ("-H")
    flag: Optional[str] = None
    #: where that flag is ("the running dockerd (pid 42)", "docker.service's ExecStart")
    flag_source: Optional[str] = None

    def fix(self, path: str) -> str:
        """How to make the file startable, in words an admin can act on."""
        if self.code == "flag-conflict":
            return ("remove {key!r} from {path} or {flag} from {source}: dockerd refuses a setting given both as a "
                    "flag and in the file".format(key=self.key, path=path, flag=self.flag, source=self.flag_source))
        if self.code == "unknown-key" and not self.key.startswith("$"):
            return ("remove \"{key}\" from {path}: dockerd refuses unknown keys at start; it is running only because "
                    "it started before the key was added".format(key=self.key, path=path))
        if self.code == "dockerd-validate":
            return "fix {} as dockerd says ({}), then run again".format(path, self.reason)
        return "fix {} in {} ({}), then run again".format(self.key, path, self.reason)


def _top_level_key(path: str) -> str:
    """``$.hosts`` and ``$['a.b']`` -> the key; a deeper path (or ``$``) stays as it is."""
    simple = re.match(r"^\$\.([^.\[]+)$", path)
    if simple:
        return simple.group(1)
    quoted = re.match(r"^\$\['((?:[^'\\]|\\.)*)'\]$", path)
    if quoted:
        return re.sub(r"\\(.)", r"\1", quoted.group(1))
    return path


def _flag_key(flag: Any) -> Optional[str]:
    if flag.name in _IRREGULAR_KEYS:
        return _IRREGULAR_KEYS[flag.name]
    key: Optional[str] = flag.key
    return key


def flag_conflicts(value: Dict[str, Any], argv: Sequence[str], source: str) -> List[Blocker]:
    """Keys of ``value`` that ``argv`` (a dockerd command line, argv[0] included) also sets as flags."""
    from nvdocker_setup.core.schema import known_keys
    from nvdocker_setup.doctor.parsers import parse_flags

    known = known_keys()
    blockers: List[Blocker] = []
    seen = set()
    for flag in parse_flags(tuple(argv[1:]), known):
        key = _flag_key(flag)
        if key is None or key in _MERGED_KEYS or key not in value or key in seen:
            continue
        seen.add(key)
        blockers.append(Blocker(
            key, "{} on dockerd's command line and {!r} in daemon.json: \"the following directives are specified both "
            "as a flag and in the configuration file\"".format(flag.flag, key), "flag-conflict", flag.flag, source,
        ))
    return blockers


def start_blockers(value: Any, argvs: Sequence[Tuple[str, Sequence[str]]] = (),
                   validate_accepted: bool = False) -> List[Blocker]:
    """Why dockerd would refuse ``value`` (a parsed daemon.json) at start: our schema's errors, then the
    keys that the command lines in ``argvs`` ((source, argv) pairs) also set as flags. With
    ``validate_accepted`` (``dockerd --validate`` accepted this file, with the running daemon's flags), only
    the schema findings --validate cannot see are kept: dockerd's own verdict beats a schema that may lag
    behind it; pass then only the command lines --validate was not given."""
    from nvdocker_setup.core.schema import check_document

    blockers: List[Blocker] = []
    for problem in check_document(value):
        if problem.severity != "error":
            continue
        if validate_accepted and problem.code not in _NOT_SEEN_BY_VALIDATE:
            continue
        blockers.append(Blocker(_top_level_key(problem.path), problem.message, problem.code))
    if isinstance(value, dict):
        seen = {b.key for b in blockers if b.code == "flag-conflict"}
        for source, argv in argvs:
            for blocker in flag_conflicts(value, argv, source):
                if blocker.key not in seen:
                    seen.add(blocker.key)
                    blockers.append(blocker)
    return blockers


# --- I/O: the running daemon's command lines, dockerd --validate -----------------------------------


@dataclass
class Judgement:
    """The verdict on one file."""

    label: str  # "the new daemon.json", "the current daemon.json (what a rollback restores)"
    blockers: List[Blocker] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _without_config_file(argv: Sequence[str]) -> List[str]:
    """dockerd's flags without argv[0], --config-file and --validate (we pass our own)."""
    out: List[str] = []
    words = list(argv[1:])
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--config-file":
            skip = True
            continue
        if word.startswith("--config-file=") or word in ("--validate", "--validate=true"):
            continue
        out.append(word)
    return out


def daemon_argvs(ctx: Context, socket_path: str, service: Any) -> List[Tuple[str, Tuple[str, ...]]]:
    """The command lines a restart may start dockerd with: the running one (found by the socket's peer
    credentials, else the service's main pid) and, for systemd, the unit's ExecStart."""
    from nvdocker_setup.adapters.docker_api import DockerAPI
    from nvdocker_setup.adapters.locate import dockerd_processes, parse_execstart

    argvs: List[Tuple[str, Tuple[str, ...]]] = []
    pid = DockerAPI(socket_path, timeout=2.0).peer_pid()
    if pid is None:
        try:
            pid = service.main_pid()
        except Exception:  # a service manager that cannot say: no pid, no flags to compare
            pid = None
    if pid:
        # only a dockerd of the host's own namespaces (adapters/hostproc.py): a peer in a container
        # (a socket bind-mounted from a dind container) has no say in what root runs or checks
        running = [tuple(proc.argv) for proc in dockerd_processes(ctx) if proc.pid == pid]
        argvs.extend(("the running dockerd (pid {})".format(pid), argv) for argv in running[:1])
    if getattr(service, "name", None) == "systemd":
        unit = getattr(service, "unit", "docker.service")
        systemctl = ctx.which("systemctl")
        if systemctl is not None:
            try:
                completed = ctx.run([systemctl, "show", unit, "-p", "ExecStart", "--value"], timeout=10.0,
                                    env=dict(ctx.env))
            except (OSError, subprocess.SubprocessError):
                completed = None
            if completed is not None and completed.returncode == 0:
                for words in parse_execstart(completed.stdout or ""):
                    argvs.append(("{}'s ExecStart".format(unit), tuple(words)))
    return argvs


def _binary_for(ctx: Context, argvs: Sequence[Tuple[str, Tuple[str, ...]]]):
    """The dockerd a restart would run: the running one's argv[0] when absolute, else dockerd on PATH."""
    from nvdocker_setup.adapters import dockerd
    from nvdocker_setup.adapters.trust import check_runtime_binary

    for _source, argv in argvs:
        if argv and os.path.isabs(argv[0]) and ctx.host_path(argv[0]) == argv[0] and os.access(argv[0], os.X_OK):
            if not check_runtime_binary(argv[0]).ok:  # root runs it: only a file nobody else can replace
                continue
            found = dockerd.probe_binary(ctx, argv[0])
            if found is not None:
                return found
    return dockerd.find_dockerd(ctx)


def judge(ctx: Context, files: Sequence[Tuple[str, Optional[bytes], Any]], socket_path: str,
          service: Any) -> List[Judgement]:
    """Judge each of ``files`` ((label, bytes, parsed value); bytes None: no file, dockerd starts with
    its defaults) as dockerd would at a restart by ``service``."""
    from nvdocker_setup.adapters import dockerd

    argvs = daemon_argvs(ctx, socket_path, service)
    binary = _binary_for(ctx, argvs)
    unread = [] if argvs else ["could not read the running dockerd's command line: flag/file conflicts not checked"]
    flags = _without_config_file(argvs[0][1]) if argvs else []
    verdicts: List[Judgement] = []
    workdir = tempfile.mkdtemp(prefix="nvdocker-judge.")
    try:
        for index, (label, data, value) in enumerate(files):
            judgement = Judgement(label, notes=list(unread))
            verdicts.append(judgement)
            if data is None:
                continue
            accepted = False
            if binary is not None and binary.can_validate:
                path = os.path.join(workdir, "daemon-{}.json".format(index))
                with open(path, "wb") as handle:
                    handle.write(data)
                verdict = dockerd.validate_config(ctx, path, flags=flags, binary=binary)
                if verdict.ran and verdict.ok:
                    accepted = True
                elif verdict.ran and verdict.messages:
                    judgement.blockers.extend(
                        Blocker("$", message, "dockerd-validate") for message in verdict.messages)
                elif verdict.ran:
                    judgement.notes.append(verdict.reason)
            elif binary is not None:
                judgement.notes.append("dockerd {} has no --validate; judged by our schema and its flags".format(
                    binary.version))
            # the running command line went to --validate; another one (the unit's ExecStart) is still ours to check
            schema = start_blockers(value, argvs[1:] if accepted else argvs, validate_accepted=accepted)
            known = {(b.code, b.key) for b in judgement.blockers}
            judgement.blockers.extend(b for b in schema if (b.code, b.key) not in known)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return verdicts
