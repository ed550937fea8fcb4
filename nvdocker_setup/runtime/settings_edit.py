"""Editing ``runtime.conf`` one line at a time (``nvdocker-setup config``), as an admin would.

Everything in the file that is not the value being set stays byte for byte: comments, blank
lines, the order, sections and keys we do not know, line endings. A key already in ``[runtime]``
has its (last, effective) line replaced in place, its spelling and separator kept and its
continuation lines dropped; a new key goes after the last key line of the last ``[runtime]``
section (right after its header when it has none, or into the keys before any section when the
file has only those); a file with neither gets a ``[runtime]`` section at its end.

Every value is checked for its key (booleans, absolute paths, the runtimes list, log levels,
capabilities) and the whole edited text must then be accepted by the runtime's own reader
(:func:`nvdocker_setup.runtime.config.from_values`), so nothing the runtime would refuse is
ever written. nvidia-ctk's spellings of the keys that have a meaning here are taken too
(:data:`ALIASES`). Standard library only, like the rest of the runtime package; the CLI side
(``nvdocker_setup/cli/config.py``) does the locking, the backup and the atomic write.
"""

from __future__ import annotations

import os

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import config as runtime_config

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Dict, List, Optional, Tuple

#: Kinds of values.
BOOLEAN = "boolean"
PATH = "path"  # absolute, or empty for the default
RUNTIMES = "runtimes"
LEVEL = "log-level"
CAPABILITIES = "capabilities"
MPS = "mps"
#: The longest line we write: the C launcher reads runtime.conf with a 4,096-byte line buffer.
MAX_LINE_BYTES = 4000


class SettingsError(GpuSetupError):
    """A refused edit or read: ``reference`` is the CLI's stable error id; ``usage`` says the
    command line is at fault (exit 2) rather than the file (exit 3)."""

    def __init__(self, message: str, hint: Optional[str] = None, reference: str = "config-value-invalid",
                 usage: bool = True) -> None:
        super().__init__(message, hint)
        self.reference = reference
        self.usage = usage


class Key:
    """A key the runtime reads: its kind, its default (as text) and what it means, in one line."""

    __slots__ = ("name", "kind", "default", "meaning")

    def __init__(self, name: str, kind: str, default: str, meaning: str) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.meaning = meaning


KEYS = (
    Key("runtimes", RUNTIMES, " ".join(runtime_config.DEFAULT_RUNTIMES),
        "the real OCI runtimes, first found wins (names on PATH or absolute paths)"),
    Key("driver-root", PATH, "/",
        "where the driver is installed (a driver container: /run/nvidia/driver); env NVDOCKER_DRIVER_ROOT overrides"),
    Key("log", PATH, "", "the runtime's own log file (empty: none)"),
    Key(runtime_config.LOG_LEVEL_KEY, LEVEL, runtime_config.DEFAULT_LOG_LEVEL,
        "what the log gets: error, warning, info (a line for each GPU container) or debug (every decision)"),
    Key("debug", BOOLEAN, "false", "the older switch: true means log-level debug while log-level is unset"),
    Key("hook-path", PATH, "", "the ld cache hook (empty: the C launcher itself, else this Python's hook)"),
    Key("ldconfig", PATH, "", "the host's ldconfig that the hook runs against the container's root"),
    Key(runtime_config.ENVVAR_UNPRIVILEGED_KEY, BOOLEAN, "true",
        "false: NVIDIA_VISIBLE_DEVICES counts only in a container with CAP_SYS_ADMIN (or from docker run --gpus)"),
    Key(runtime_config.VOLUME_MOUNTS_KEY, BOOLEAN, "false",
        "true: devices come from /dev/null mounts under /var/run/nvidia-container-devices (Kubernetes device plugin)"),
    Key(runtime_config.MPS_PIPE_DIR_KEY, MPS, "/tmp/nvidia-mps",
        "the MPS control daemon's pipe directory given to compute containers; env CUDA_MPS_PIPE_DIRECTORY overrides"),
    Key(runtime_config.DISABLE_REQUIRE_KEY, BOOLEAN, "false", "true: no NVIDIA_REQUIRE_* check for any container"),
    Key(runtime_config.NO_CGROUPS_KEY, BOOLEAN, "false",
        "true: device nodes without linux.resources.devices cgroup rules (rootless runtimes cannot set them)"),
    Key(runtime_config.SUPPORTED_CAPABILITIES_KEY, CAPABILITIES, "all",
        "the driver capabilities a container may ask for (comma list or all); others are refused"),
    Key(runtime_config.IGNORE_IMEX_KEY, BOOLEAN, "false",
        "true: NVIDIA_IMEX_CHANNELS and the IMEX device-list mounts are ignored"),
    Key(runtime_config.NO_ADDITIONAL_GIDS_KEY, BOOLEAN, "false",
        "true: the container's process does not get the groups of the device nodes it is given"),
)
BY_NAME = {key.name: key for key in KEYS}

#: nvidia-ctk's keys (``nvidia-ctk config --set``) that mean the same here.
ALIASES = {
    "nvidia-container-cli.no-cgroups": runtime_config.NO_CGROUPS_KEY,
    # NVIDIA's debug settings name a log file; ours is `log` (log-level debug for every decision)
    "nvidia-container-cli.debug": "log",
    "nvidia-container-runtime.debug": "log",
    "nvidia-container-cli.root": "driver-root",
    "nvidia-container-cli.ldconfig": "ldconfig",
    "nvidia-container-runtime.log-level": runtime_config.LOG_LEVEL_KEY,
    "nvidia-container-runtime.runtimes": "runtimes",
    "accept-nvidia-visible-devices-envvar-when-unprivileged": runtime_config.ENVVAR_UNPRIVILEGED_KEY,
    "accept-nvidia-visible-devices-as-volume-mounts": runtime_config.VOLUME_MOUNTS_KEY,
    "features.ignore-imex-channel-requests": runtime_config.IGNORE_IMEX_KEY,
    "features.no-additional-gids-for-device-nodes": runtime_config.NO_ADDITIONAL_GIDS_KEY,
    "nvidia-container-runtime-hook.disable-require": runtime_config.DISABLE_REQUIRE_KEY,
}
#: NVIDIA's log levels (logrus) that ours stand for.
_LEVEL_SPELLINGS = {"warn": "warning", "trace": "debug", "fatal": "error", "panic": "error"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def aliases_of(name: str) -> List[str]:
    return sorted(alias for alias, target in ALIASES.items() if target == name)


def resolve_key(given: str) -> str:
    """Our name of ``given`` (ours, or nvidia-ctk's); :class:`SettingsError` ``config-key-unknown``."""
    name = given.strip().lower()
    if name in BY_NAME:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name.startswith(("nvidia-container-", "features.")) or "." in name:
        why = "{!r} is nvidia-ctk's key with no counterpart in nvdocker's runtime".format(given[:100])
    else:
        why = "unknown key {!r}".format(given[:100])
    raise SettingsError(
        "{}; the keys are: {}".format(why, ", ".join(BY_NAME)),
        hint="see `nvdocker-setup config --list` for each key's meaning (nvidia-ctk's names: {})".format(
            ", ".join(sorted(ALIASES))),
        reference="config-key-unknown",
    )


def parse_assignment(text: str) -> Tuple[str, str]:
    """``KEY=VALUE`` -> (our key, the checked value as written to the file). ``KEY`` alone is
    ``KEY=true`` for a boolean key (nvidia-ctk's rule)."""
    given, sep, raw = text.partition("=")
    key = resolve_key(given)
    if not sep:
        if BY_NAME[key].kind != BOOLEAN:
            raise SettingsError("--set {} needs a value: {}=VALUE".format(given[:100], given[:100]),
                                hint="only a true/false key may be given alone (it means true)")
        raw = "true"
    return key, normalized_value(key, raw, given.strip())


def _unquoted(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def normalized_value(key: str, raw: str, given: Optional[str] = None) -> str:
    """The value of ``key`` as the file will hold it, or :class:`SettingsError` saying why not."""
    shown = given or key
    value = _unquoted(raw)
    if any(ord(char) < 32 or char == "\x7f" for char in value):
        raise SettingsError("the value of {} has a control character (a line break?)".format(shown),
                            hint="give the value on one line")
    kind = BY_NAME[key].kind

    def refuse(what: str, hint: Optional[str] = None) -> SettingsError:
        return SettingsError("{} must be {}, got {!r}".format(shown, what, value[:200]), hint=hint)

    if kind == BOOLEAN:
        lowered = value.lower()
        if lowered in _TRUE:
            return "true"
        if lowered in _FALSE:
            return "false"
        raise refuse("true or false")
    if kind == PATH:
        if key == "ldconfig" and value.startswith("@"):
            value = value[1:]  # nvidia-ctk's "@": a path on the host, which ours always is
        if value and not os.path.isabs(value):
            raise refuse("an absolute path (or empty for the default)")
        return value
    if kind == MPS:
        if value:
            try:
                runtime_config.checked_mps_pipe_dir(value, shown)
            except GpuSetupError as error:
                raise SettingsError(error.message, hint=error.hint) from None
        return value
    if kind == RUNTIMES:
        if value.startswith("[") and value.endswith("]"):  # a TOML array, as config.toml spells it
            value = value[1:-1]
        names = [_unquoted(item) for item in value.replace(",", " ").split()]
        for name in names:
            if not name or ("/" in name and not os.path.isabs(name)) or any(c in name for c in "\"'[]"):
                raise refuse("runtime names on PATH or absolute paths (space or comma separated)")
        return " ".join(names)
    if kind == LEVEL:
        lowered = _LEVEL_SPELLINGS.get(value.lower(), value.lower())
        if lowered and lowered not in runtime_config.LOG_LEVELS:
            raise refuse("one of {} (or empty for the default)".format(", ".join(runtime_config.LOG_LEVELS)))
        return lowered
    # CAPABILITIES
    names = []
    for item in value.lower().split(","):
        if item.strip() and item.strip() not in names:
            names.append(item.strip())
    from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES

    unknown = [name for name in names if name not in ALL_CAPABILITIES + ("all",)]
    if unknown:
        raise refuse("a comma list of {}, or all".format(", ".join(ALL_CAPABILITIES)))
    return "all" if not names or "all" in names else ",".join(names)


# -- the file's lines -----------------------------------------------------------------------------

class _Scan:
    """Where ``[runtime]``'s keys are: ``entries`` (key, first line, end line) and the line after
    which a new key goes (None: there is no ``[runtime]`` section to put one in)."""

    def __init__(self, lines: List[str], source: str) -> None:
        self.entries: List[List] = []
        self.insert_at: Optional[int] = None
        in_runtime = True  # keys before any section are [runtime]'s (parse_ini)
        current: Optional[List] = None
        for number, line in enumerate(lines):
            content = _content(line)
            stripped = content.strip()
            if not stripped or stripped[0] in "#;":
                current = None
                continue
            if content[0] in " \t" and current is not None:
                current[2] = number + 1
                if current[3]:
                    self.insert_at = number + 1
                continue
            if stripped.startswith("[") and stripped.endswith("]"):
                in_runtime = stripped[1:-1].strip().lower() == runtime_config.SECTION
                current = None
                if in_runtime:
                    self.insert_at = number + 1
                continue
            if _cut(stripped) < 0:
                raise SettingsError(
                    "{} line {}: expected 'key = value', got {!r}".format(source, number + 1, stripped[:200]),
                    hint="fix the file by hand first: the runtime refuses it as it is",
                    reference="runtime-config-invalid", usage=False)
            current = [stripped[:_cut(stripped)].strip().lower(), number, number + 1, in_runtime]
            if in_runtime:
                self.entries.append(current)
                self.insert_at = number + 1

    def last(self, key: str) -> Optional[List]:
        found = [entry for entry in self.entries if entry[0] == key]
        return found[-1] if found else None


def _content(line: str) -> str:
    parts = line.splitlines()
    return parts[0] if parts else ""


def _cut(stripped: str) -> int:
    return min((i for i in (stripped.find("="), stripped.find(":")) if i > 0), default=-1)


def _eol(lines: List[str]) -> str:
    for line in lines:
        ending = line[len(_content(line)):]
        if ending:
            return ending if ending in ("\n", "\r\n") else "\n"
    return "\n"


def _key_line(old: Optional[str], key: str, value: str) -> str:
    """``key = value``, or the old line with its key's spelling, separator and spacing kept."""
    if old is None:
        return "{} = {}".format(key, value) if value else "{} =".format(key)
    content = _content(old)
    indent = content[:len(content) - len(content.lstrip())]
    stripped = content.strip()
    cut = _cut(stripped)
    after = stripped[cut + 1:]
    spacing = after[:len(after) - len(after.lstrip())] or " "
    return indent + stripped[:cut + 1] + (spacing + value if value else "")


def values_of(text: str, source: str) -> Dict[str, str]:
    """``[runtime]``'s values, as the runtime reads them (a file it refuses: :class:`SettingsError`)."""
    try:
        values = runtime_config.parse_ini(text, source).get(runtime_config.SECTION, {})
        runtime_config.from_values(values, source)
    except SettingsError:
        raise
    except GpuSetupError as error:
        raise SettingsError(error.message, hint=error.hint or "fix the file by hand first: the runtime refuses it",
                            reference="runtime-config-invalid", usage=False) from None
    return values


def set_value(text: str, key: str, value: str, source: str = "runtime.conf") -> str:
    """``text`` with ``key = value`` in ``[runtime]``; every other byte as it was."""
    lines = text.splitlines(True)
    scan = _Scan(lines, source)
    eol = _eol(lines)
    entry = scan.last(key)
    if entry is not None:
        _key, first, end, _in_runtime = entry
        ending = lines[end - 1][len(_content(lines[end - 1])):]
        lines[first:end] = [_key_line(lines[first], key, value) + ending]
    elif scan.insert_at is not None:
        at = scan.insert_at
        if at > 0 and _content(lines[at - 1]) == lines[at - 1]:
            lines[at - 1] += eol  # the file's last line had no line break
        lines.insert(at, _key_line(None, key, value) + eol)
    else:
        if lines and _content(lines[-1]) == lines[-1]:
            lines[-1] += eol
        if lines and _content(lines[-1]).strip():
            lines.append(eol)
        lines += ["[{}]".format(runtime_config.SECTION) + eol, _key_line(None, key, value) + eol]
    edited = "".join(lines)
    for line in edited.splitlines():
        if len(line.encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
            raise SettingsError("the line for {} would be longer than {} bytes".format(key, MAX_LINE_BYTES),
                                hint="the runtime's launcher reads lines of at most 4,095 bytes")
    return edited


class Outcome:
    """What :func:`apply` made of the file: the new text, each setting and what it was before,
    notes (how an nvidia-ctk key was read) and warnings (a setting that does nothing as it stands)."""

    def __init__(self, text: str) -> None:
        self.text = text
        #: (our key, the value written, the value the runtime read before (None: unset), the key as given)
        self.settings: List[Tuple[str, str, Optional[str], str]] = []
        self.notes: List[str] = []
        self.warnings: List[str] = []


def apply(text: str, assignments: List[str], source: str = "runtime.conf") -> Outcome:
    """Every ``KEY[=VALUE]`` of ``assignments`` into ``text``, in order; checked one by one, then
    the result as the runtime reads it. Nothing is written here."""
    parsed = []
    for assignment in assignments:
        given = assignment.partition("=")[0].strip()
        key, value = parse_assignment(assignment)
        parsed.append((given, key, value))
    try:
        before = runtime_config.parse_ini(text, source).get(runtime_config.SECTION, {})
    except GpuSetupError as error:
        raise SettingsError(error.message, hint="fix the file by hand first: the runtime refuses it as it is",
                            reference="runtime-config-invalid", usage=False) from None
    edited = text
    outcome = Outcome(text)
    for given, key, value in parsed:
        edited = set_value(edited, key, value, source)
        read_back = runtime_config.parse_ini(edited, source).get(runtime_config.SECTION, {}).get(key)
        if read_back != value:  # never write what the runtime would read otherwise
            raise SettingsError("{} would read as {!r}, not {!r}, after the edit; nothing was written".format(
                key, read_back, value), hint="edit the file by hand", reference="config-edit-failed", usage=False)
        outcome.settings.append((key, value, before.get(key), given))
        if given.lower() != key:
            outcome.notes.append("{} is {} here".format(given, key) + (
                " (the runtime's own log; log-level = debug writes every decision)" if key == "log" else ""))
    after = values_of(edited, source)  # what is still wrong is the file's, not one of these values
    outcome.text = edited
    given_keys = {key for _given, key, _value in parsed}
    if "debug" in given_keys and after.get(runtime_config.LOG_LEVEL_KEY, "").strip():
        outcome.warnings.append("debug has no effect while log-level is set (log-level = {}): set log-level "
                                "instead".format(after[runtime_config.LOG_LEVEL_KEY].strip()))
    if given_keys & {runtime_config.LOG_LEVEL_KEY, "debug"} and not after.get("log", "").strip():
        outcome.warnings.append("no log file is set (log = /var/log/nvdocker-runtime.log, for one): "
                                "the runtime writes no log at any level")
    return outcome


def effective(text: str, source: str = "runtime.conf") -> List[Tuple[Key, str, bool]]:
    """Each key with the value the runtime uses from this file (its default when unset; the
    environment aside) and whether the file sets it."""
    values = values_of(text, source)
    config = runtime_config.from_values(values, source)
    shown = {
        "runtimes": " ".join(config.runtimes),
        "driver-root": config.driver_root,
        "log": config.log or "",
        runtime_config.LOG_LEVEL_KEY: config.log_level,
        "debug": _text(config.debug),
        "hook-path": config.hook_path or "",
        "ldconfig": config.ldconfig,
        runtime_config.ENVVAR_UNPRIVILEGED_KEY: _text(config.accept_envvar_unprivileged),
        runtime_config.VOLUME_MOUNTS_KEY: _text(config.accept_volume_mounts),
        runtime_config.MPS_PIPE_DIR_KEY: config.mps_pipe_dir or BY_NAME[runtime_config.MPS_PIPE_DIR_KEY].default,
        runtime_config.DISABLE_REQUIRE_KEY: _text(config.disable_require),
        runtime_config.NO_CGROUPS_KEY: _text(config.no_cgroups),
        runtime_config.SUPPORTED_CAPABILITIES_KEY: ",".join(config.supported_capabilities)
        if config.supported_capabilities is not None else "all",
        runtime_config.IGNORE_IMEX_KEY: _text(config.ignore_imex_channels),
        runtime_config.NO_ADDITIONAL_GIDS_KEY: _text(config.no_additional_gids),
    }
    return [(key, shown[key.name], bool(values.get(key.name, "").strip())) for key in KEYS]


def default_of(key: Key) -> str:
    """The default as text (ldconfig's depends on the host: ldconfig.real where Ubuntu has it)."""
    if key.name == "ldconfig":
        return runtime_config.default_ldconfig()
    return key.default


def _text(value: bool) -> str:
    return "true" if value else "false"
