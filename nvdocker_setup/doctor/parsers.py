"""Pure parsers of the text doctor reads (dockerd's argv, unit ExecStart lines, environment
files, NVIDIA's config.toml, version strings): no I/O, so each is tested on its own and
:mod:`nvdocker_setup.doctor.facts` only gathers."""

import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

#: dockerd's one-letter flags and the long names they stand for.
SHORT_FLAGS = {"-H": "host", "-D": "debug", "-G": "group", "-l": "log-level", "-p": "pidfile",
               "-s": "storage-driver", "-b": "bridge", "-g": "graph"}
#: Flags that are not daemon.json keys (or are allowed in both places).
NON_CONFIG_FLAGS = frozenset({"config-file", "validate", "version", "help"})



@dataclass(frozen=True)
class FlagSource:
    """dockerd flags from one place: the running process, the unit, or an environment file."""

    #: Where they come from, in words ("the running dockerd (pid 42)", "/etc/sysconfig/docker").
    source: str
    #: ``process``, ``systemd``, ``unit-file`` or ``env-file``.
    kind: str
    argv: Tuple[str, ...]


@dataclass(frozen=True)
class Flag:
    """One dockerd flag mapped to the daemon.json key it sets (None: no such key)."""

    flag: str
    name: str
    value: Optional[str]
    key: Optional[str]


def parse_flags(argv: Tuple[str, ...], known_keys) -> List[Flag]:
    """The flags in a dockerd argv (``argv[0]`` may be a program or a flag), with their keys.

    A flag maps to the daemon.json key of the same name, or its plural (``--label`` -> ``labels``,
    ``--add-runtime`` -> ``runtimes``). Values are taken from ``--flag=value`` or the next word.
    """
    flags: List[Flag] = []
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            continue
        value: Optional[str] = None
        raw = word
        if "=" in word:
            raw, value = word.split("=", 1)
        if raw in SHORT_FLAGS:
            name = SHORT_FLAGS[raw]
        elif raw.startswith("--"):
            name = raw[2:]
        else:
            continue
        if value is None and index < len(words) and not words[index].startswith("-"):
            if name not in ("debug", "iptables", "ip6tables", "ip-masq", "icc", "live-restore", "selinux-enabled",
                            "userland-proxy", "experimental", "rootless", "init", "no-new-privileges"):
                value = words[index]
                index += 1
        key = None
        if name == "add-runtime":
            key = "runtimes"
        elif name == "host":
            key = "hosts"
        elif name not in NON_CONFIG_FLAGS:
            if name in known_keys:
                key = name
            elif name + "s" in known_keys:
                key = name + "s"
        flags.append(Flag(raw, name, value, key))
    return flags



def parse_unit_execstart(texts: List[str]) -> Optional[Tuple[str, ...]]:
    """The effective ExecStart of a unit file followed by its drop-ins (an empty one resets)."""
    execstart: Optional[Tuple[str, ...]] = None
    for text in texts:
        section = ""
        joined = re.sub(r"\\\n", " ", text)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]":
                continue
            key, sep, value = line.partition("=")
            if not sep or key.strip() != "ExecStart":
                continue
            value = value.strip()
            if not value:
                execstart = None
                continue
            value = value.lstrip("-@:+!")
            try:
                execstart = tuple(shlex.split(value))
            except ValueError:
                execstart = tuple(value.split())
    return execstart


def parse_env_file(text: str) -> Dict[str, str]:
    """``NAME=value`` assignments of a shell-style environment file (quotes removed)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        name, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name.strip()):
            continue
        try:
            words = shlex.split(value, comments=True)
        except ValueError:
            words = value.split()
        values[name.strip()] = " ".join(words)
    return values


def parse_toml_subset(text: str) -> Dict[str, Any]:
    """``section.key -> value`` for the flat TOML NVIDIA's config.toml uses (strings, booleans,
    numbers, one-line arrays); lines it cannot read are ignored. No tomllib before Python 3.11."""
    values: Dict[str, Any] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^\[\s*([^\]]+?)\s*\]$", line)
        if match:
            section = match.group(1).replace('"', "")
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().strip('"')
        value = value.strip()
        parsed: Any
        if value.startswith('"'):
            end = value.find('"', 1)
            parsed = value[1:end] if end > 0 else value[1:]
        elif value.startswith("'"):
            end = value.find("'", 1)
            parsed = value[1:end] if end > 0 else value[1:]
        else:
            value = value.split("#", 1)[0].strip()
            if value in ("true", "false"):
                parsed = value == "true"
            elif re.match(r"^-?\d+$", value):
                parsed = int(value)
            elif value.startswith("["):
                parsed = re.findall(r'"([^"]*)"', value)
            else:
                parsed = value
        values[(section + "." if section else "") + key] = parsed
    return values


def version_tuple(text: str) -> Tuple[int, ...]:
    """``"26.1.5+dfsg1"`` -> ``(26, 1, 5)``."""
    match = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", text.strip())
    if not match:
        return ()
    return tuple(int(part) for part in match.groups() if part is not None)
