"""Check a parsed daemon.json the way dockerd would, before dockerd ever sees it.

The bundled ``daemon.schema.json`` describes every key and its type. This module turns jsonschema's
errors into one-line :class:`Problem` s and adds the rules a schema cannot express: the runtime rules
that ``dockerd --validate`` skips since 25.0 (they only fail at daemon start or reload), the keys dockerd
accepts but never reads, and the ``exec-opts`` that only newer releases refuse.

jsonschema is imported on first use only: the CLI imports this module on every start.
"""

import copy
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

SCHEMA_RESOURCE = "daemon.schema.json"

ERROR = "error"
WARNING = "warning"

#: Runtime names dockerd always knows, whatever ``runtimes`` says.
STOCK_RUNTIMES = frozenset({"runc", "io.containerd.runc.v2"})
#: The name dockerd reserves for its bundled runc.
RESERVED_RUNTIME_NAME = "runc"
#: Values of ``native.cgroupdriver`` that dockerd accepts (compared case-sensitively).
CGROUP_DRIVERS = ("cgroupfs", "systemd")

PathPart = Union[str, int]
JsonPath = Tuple[PathPart, ...]

_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_REFUSES_TO_START = "dockerd refuses to start"
_NO_SUCH_OPTION = "the following directives don't match any configuration option"


@dataclass(frozen=True)
class Problem:
    """One finding about a daemon.json; ``severity`` is "error" (dockerd refuses it) or "warning"."""

    path: str
    message: str
    severity: str
    code: str


_Finding = Tuple[JsonPath, Problem]


def format_path(parts: Sequence[PathPart]) -> str:
    """Render a JSON path: ``$.runtimes.nvidia.path``, ``$.dns[0]``, ``$['key.with.dots']``."""
    rendered = ["$"]
    for part in parts:
        if isinstance(part, int):
            rendered.append("[%d]" % part)
        elif _SIMPLE_KEY.match(part):
            rendered.append("." + part)
        else:
            rendered.append("['%s']" % part.replace("\\", "\\\\").replace("'", "\\'"))
    return "".join(rendered)


@functools.lru_cache(maxsize=None)
def _bundled_schema() -> Dict[str, Any]:
    from importlib import resources  # imported here: it costs more at startup than everything else

    text = resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def schema() -> Dict[str, Any]:
    """The bundled JSON Schema of Linux daemon.json (a copy: callers may change it freely)."""
    return copy.deepcopy(_bundled_schema())


@functools.lru_cache(maxsize=None)
def known_keys() -> FrozenSet[str]:
    """Every top-level key dockerd accepts, including the ones it accepts but ignores."""
    return frozenset(_bundled_schema()["properties"])


def _is_strict_integer(_checker: object, instance: object) -> bool:
    # Go cannot decode 3.0 into an int field, but jsonschema's draft-7 "integer" accepts it.
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.lru_cache(maxsize=None)
def _validator() -> Any:
    from jsonschema import Draft7Validator, validators

    type_checker = Draft7Validator.TYPE_CHECKER.redefine("integer", _is_strict_integer)
    validator_class = validators.extend(Draft7Validator, type_checker=type_checker)
    return validator_class(_bundled_schema())


def check_document(document: object) -> List[Problem]:
    """All problems in a parsed daemon.json, sorted by path, then code.

    ``None`` stands for an empty file (or a file holding ``null``), which dockerd reads as "no settings".
    """
    if document is None:
        return []
    if not isinstance(document, dict):
        message = "daemon.json must hold a JSON object ({...}), not %s: %s" % (_describe(document), _REFUSES_TO_START)
        return [Problem("$", message, ERROR, "wrong-type")]
    findings: List[_Finding] = []
    findings.extend(_schema_findings(document))
    findings.extend(_top_level_key_findings(document))
    findings.extend(_runtime_findings(document))
    findings.extend(_default_runtime_findings(document))
    findings.extend(_exec_opt_findings(document))
    findings.sort(key=lambda finding: (_path_sort_key(finding[0]), finding[1].code, finding[1].message))
    return [problem for _, problem in findings]


def _finding(path: Iterable[PathPart], message: str, severity: str, code: str) -> _Finding:
    parts = tuple(path)
    return parts, Problem(format_path(parts), message, severity, code)


def _path_sort_key(path: JsonPath) -> Tuple[Tuple[int, Any], ...]:
    # Array indexes sort numerically ("[2]" before "[10]"); keys alphabetically.
    return tuple((0, part) if isinstance(part, int) else (1, part) for part in path)


# --- schema errors -------------------------------------------------------------------------------


def _schema_findings(document: Mapping[str, Any]) -> Iterator[_Finding]:
    """One finding per offending value: a wrong type hides the other errors on the same value."""
    errors_by_path: Dict[JsonPath, List[Any]] = {}
    for error in _validator().iter_errors(document):
        errors_by_path.setdefault(tuple(error.absolute_path), []).append(error)
    for path, errors in errors_by_path.items():
        if _is_runtime_entry(path):
            # The runtime rules below explain shape errors (and a null entry) in dockerd's words.
            errors = [error for error in errors if error.validator != "oneOf" and error.instance is not None]
            if not errors:
                continue
        if errors[0].instance is None:
            yield _null_finding(path)
            continue
        type_errors = [error for error in errors if error.validator in ("type", "anyOf")]
        for error in type_errors[:1] or errors:
            yield from _convert_error(path, error)


def _is_runtime_entry(path: JsonPath) -> bool:
    return len(path) == 2 and path[0] == "runtimes"


def _null_finding(path: JsonPath) -> _Finding:
    message = "%s is null: dockerd ignores it, as if the key were absent" % _subject(path)
    return _finding(path, message, WARNING, "null-value")


def _convert_error(path: JsonPath, error: Any) -> Iterator[_Finding]:
    kind = error.validator
    hint = _hint(error.schema)
    if kind == "additionalProperties":
        yield from _unknown_key_findings(path, error)
    elif kind == "type":
        message = "%s must be %s, not %s: %s%s" % (
            _subject(path), _expected_types(error.validator_value), _describe(error.instance), _REFUSES_TO_START, hint)
        yield _finding(path, message, ERROR, "wrong-type")
    elif kind == "anyOf":
        message = "%s has an unsupported shape (%s): %s%s" % (
            _subject(path), _describe(error.instance), _REFUSES_TO_START, hint)
        yield _finding(path, message, ERROR, "wrong-type")
    elif kind == "enum":
        if _matches_enum_ignoring_case(error):
            return
        choices = ", ".join(value for value in error.validator_value if value)
        message = "%s is %s, which dockerd rejects; use one of: %s" % (
            _subject(path), _describe(error.instance), choices)
        yield _finding(path, message, ERROR, "invalid-value")
    elif kind in ("minimum", "maximum"):
        bound = "at least" if kind == "minimum" else "at most"
        message = "%s is %s, which dockerd rejects; it must be %s %s" % (
            _subject(path), _describe(error.instance), bound, error.validator_value)
        yield _finding(path, message, ERROR, "invalid-value")
    elif kind == "maxItems":
        message = "%s has %d entries; dockerd accepts at most %d" % (
            _subject(path), len(error.instance), error.validator_value)
        yield _finding(path, message, ERROR, "invalid-value")
    else:
        # "pattern" and anything the schema may add later: name the value, then the advice.
        message = "%s is %s, which dockerd rejects%s" % (_subject(path), _describe(error.instance), hint)
        yield _finding(path, message, ERROR, "invalid-value")


def _hint(subschema: object) -> str:
    if isinstance(subschema, dict) and subschema.get("x-hint"):
        return "; " + subschema["x-hint"]
    return ""


def _matches_enum_ignoring_case(error: Any) -> bool:
    """dockerd lower-cases some values (log-level) before comparing them."""
    if not (isinstance(error.schema, dict) and error.schema.get("x-case-insensitive")):
        return False
    return isinstance(error.instance, str) and error.instance.lower() in error.validator_value


def _unknown_key_findings(path: JsonPath, error: Any) -> Iterator[_Finding]:
    allowed = error.schema.get("properties", {})
    patterns = error.schema.get("patternProperties", {})
    for key in error.instance:
        if key in allowed or any(re.search(pattern, key) for pattern in patterns):
            continue
        if path:
            yield _nested_unknown_key(path, key, allowed)
        else:
            yield _top_level_unknown_key(key)


def _top_level_unknown_key(key: str) -> _Finding:
    document_schema = _bundled_schema()
    removed = document_schema["x-removed-keys"].get(key)
    rejected = document_schema["x-rejected-keys"].get(key)
    if removed is not None:
        message = "'%s' was removed in Docker %s: %s (%s)%s" % (
            key, removed["x-removed"], _REFUSES_TO_START, _NO_SUCH_OPTION, _replacement(removed))
        return _finding((key,), message, ERROR, "removed-key")
    if rejected is not None:
        message = ("'%s' is rejected by dockerd: it names a configuration field, but no dockerd flag has that name, "
                   "so the key check refuses it%s" % (key, _replacement(rejected)))
        return _finding((key,), message, ERROR, "rejected-key")
    suggestion = _did_you_mean(key, known_keys())
    message = "unknown key '%s': %s (%s)%s" % (key, _REFUSES_TO_START, _NO_SUCH_OPTION, suggestion)
    return _finding((key,), message, ERROR, "unknown-key")


def _nested_unknown_key(path: JsonPath, key: str, allowed: Iterable[str]) -> _Finding:
    message = "unknown key '%s' in '%s': %s%s" % (key, path[-1], _REFUSES_TO_START, _did_you_mean(key, allowed))
    return _finding(path + (key,), message, ERROR, "unknown-key")


def _replacement(annotations: Mapping[str, Any]) -> str:
    if annotations.get("x-use-instead"):
        return "; use '%s' instead" % annotations["x-use-instead"]
    if annotations.get("x-hint"):
        return "; " + annotations["x-hint"]
    return ""


def _did_you_mean(key: str, candidates: Iterable[str]) -> str:
    import difflib

    matches = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.75)
    return "; did you mean '%s'?" % matches[0] if matches else ""


_TYPE_NAMES = {
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "integer": "an integer",
    "number": "a number",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _expected_types(validator_value: Union[str, List[str]]) -> str:
    names = [validator_value] if isinstance(validator_value, str) else list(validator_value)
    return " or ".join(_TYPE_NAMES.get(name, name) for name in names)


def _describe(value: object) -> str:
    """A short human description of a JSON value, e.g. 'the number 3', 'an object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "the boolean %s" % json.dumps(value)
    if isinstance(value, (int, float)):
        return "the number %s" % json.dumps(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return "the string %s" % json.dumps(shown)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _subject(path: JsonPath) -> str:
    if not path:
        return "daemon.json"
    last = path[-1]
    if _is_runtime_entry(path):
        return "runtime '%s'" % last
    if isinstance(last, int):
        return "entry %d of '%s'" % (last, path[-2]) if len(path) > 1 else "entry %d" % last
    return "'%s'" % last


# --- top-level keys dockerd accepts but ignores, deprecated keys, conflicts ------------------------


def _top_level_key_findings(document: Mapping[str, Any]) -> Iterator[_Finding]:
    properties = _bundled_schema()["properties"]
    for key in document:
        annotations = properties.get(key)
        if annotations is None:
            continue
        if "x-no-op" in annotations:
            yield _finding((key,), "'%s' has no effect: %s" % (key, annotations["x-no-op"]), WARNING, "no-op-key")
        if "x-deprecated" in annotations:
            replacement = annotations.get("x-use-instead")
            advice = "use '%s'" % replacement if replacement else "dockerd still accepts it, but remove it"
            message = "'%s' is deprecated since Docker %s; %s" % (key, annotations["x-deprecated"], advice)
            yield _finding((key,), message, WARNING, "deprecated-key")
        if annotations.get("x-legacy"):
            message = "'%s' is a legacy key that dockerd only tolerates for compatibility; remove it" % key
            yield _finding((key,), message, WARNING, "deprecated-key")
        for other in annotations.get("x-conflicts-with", ()):
            if other in document:
                message = "%s and %s must not both be specified in the config file: %s; keep only '%s'" % (
                    key, other, _REFUSES_TO_START, annotations.get("x-use-instead", other))
                yield _finding((key,), message, ERROR, "conflicting-keys")


# --- runtimes (checked by setupRuntimes at start and reload, not by dockerd --validate on 25+) ------


def _runtime_findings(document: Mapping[str, Any]) -> Iterator[_Finding]:
    runtimes = document.get("runtimes")
    if not isinstance(runtimes, dict):
        return
    for name, entry in runtimes.items():
        where = ("runtimes", name)
        if name == RESERVED_RUNTIME_NAME:
            message = "runtime name 'runc' is reserved: %s; give the runtime another name" % _REFUSES_TO_START
            yield _finding(where, message, ERROR, "runtime-reserved-name")
        if "/" in name:
            message = ("runtime name '%s' contains '/': dockerd uses the name as a file name and as a containerd "
                       "runtime name, where '/' makes it a path; use a plain name" % name)
            yield _finding(where, message, ERROR, "runtime-bad-name")
        if entry is None:
            entry = {}  # Go decodes a null entry as an empty runtime.
        if isinstance(entry, dict):
            yield from _runtime_entry_findings(name, entry)


def _runtime_field(entry: Mapping[str, Any], field: str) -> Tuple[str, Any]:
    """The key and value Go would decode into ``field``: names match case-insensitively, the last one wins."""
    found: Tuple[str, Any] = (field, None)
    for key, value in entry.items():
        if key.lower() == field.lower():
            found = (key, value)
    return found


def _is_set(value: object) -> bool:
    # dockerd tests Path != "", Type != "", len(Args) > 0, len(Options) > 0.
    return value is not None and value != "" and value != [] and value != {}


def _runtime_entry_findings(name: str, entry: Mapping[str, Any]) -> Iterator[_Finding]:
    where = ("runtimes", name)
    path_key, path = _runtime_field(entry, "path")
    _, runtime_type = _runtime_field(entry, "runtimeType")
    args_key, runtime_args = _runtime_field(entry, "runtimeArgs")
    options_key, options = _runtime_field(entry, "options")

    if not _is_set(path) and not _is_set(runtime_type):
        yield _shape_error(name, "either a runtimeType or a path must be configured", "set one of them")
    elif _is_set(path) and _is_set(runtime_type):
        yield _shape_error(name, "cannot configure both path and runtimeType for the same runtime",
                           "keep only one of them")
    if _is_set(path) and _is_set(options):
        yield _shape_error(name, "options cannot be used with a path runtime",
                           "options belong to a runtimeType runtime", options_key)
    if not _is_set(path) and _is_set(runtime_type) and _is_set(runtime_args):
        yield _shape_error(name, "args cannot be used with a runtimeType runtime",
                           "runtimeArgs belong to a path runtime", args_key)

    if isinstance(path, str) and path and not path.startswith("/"):
        message = ("runtime %s: path '%s' is not absolute, so dockerd looks it up on its own PATH; "
                   "an absolute path is recommended" % (name, path))
        yield _finding(where + (path_key,), message, WARNING, "runtime-path-relative")
    if "args" in entry:
        lost = "" if entry["args"] in ([], None) else " (these arguments are not passed to the runtime)"
        message = "runtime %s: dockerd ignores 'args'; use 'runtimeArgs'%s" % (name, lost)
        yield _finding(where + ("args",), message, WARNING, "runtime-args-ignored")


def _shape_error(name: str, rule: str, advice: str, field: Optional[str] = None) -> _Finding:
    """A runtime-shape error worded like setupRuntimes' own message, so it matches dockerd's log."""
    message = "runtime %s: %s (%s); %s" % (name, rule, _REFUSES_TO_START, advice)
    where: JsonPath = ("runtimes", name) if field is None else ("runtimes", name, field)
    return _finding(where, message, ERROR, "runtime-shape")


def _is_containerd_runtime_name(name: str) -> bool:
    """dockerd's isPermissibleC8dRuntimeName: a dotted shim name such as io.containerd.runsc.v1, no '/'."""
    return "/" not in name and "." in name and not name.startswith(".")


def _default_runtime_findings(document: Mapping[str, Any]) -> Iterator[_Finding]:
    default = document.get("default-runtime")
    if not isinstance(default, str) or default == "":
        return  # an empty value means runc; a wrong type is reported by the schema
    runtimes = document.get("runtimes")
    configured = runtimes if isinstance(runtimes, dict) else {}
    if default in STOCK_RUNTIMES or default in configured or _is_containerd_runtime_name(default):
        return
    message = ("specified default runtime '%s' does not exist: %s; add it under 'runtimes' or use 'runc'"
               % (default, _REFUSES_TO_START))
    yield _finding(("default-runtime",), message, ERROR, "default-runtime-unknown")


# --- exec-opts ----------------------------------------------------------------------------------


def _exec_opt_findings(document: Mapping[str, Any]) -> Iterator[_Finding]:
    exec_opts = document.get("exec-opts")
    if not isinstance(exec_opts, list):
        return
    for index, option in enumerate(exec_opts):
        if not isinstance(option, str):
            continue  # reported by the schema
        where = ("exec-opts", index)
        key, separator, value = option.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not separator or not key or not value:
            message = ("exec-opt '%s' is not formatted 'opt=value': dockerd 28.0+ refuses to start, older "
                       "releases ignore it" % option)
            yield _finding(where, message, WARNING, "exec-opt-unsupported")
        elif key != "native.cgroupdriver":
            message = ("exec-opt '%s' is not supported on Linux (only native.cgroupdriver is): dockerd 28.0+ "
                       "refuses to start (unknown option: '%s'), older releases ignore it" % (option, key))
            yield _finding(where, message, WARNING, "exec-opt-unsupported")
        elif value not in CGROUP_DRIVERS:
            message = "native.cgroupdriver option %s not supported: %s; use %s" % (
                value, _REFUSES_TO_START, " or ".join(CGROUP_DRIVERS))
            yield _finding(where, message, ERROR, "invalid-value")
