"""containerd's config.toml as a position-keeping document (pure: no I/O).

tomlkit parses the text (strictly: duplicate keys and tables, control characters, bad syntax) and
gives the plain value; edits are made by :mod:`.plan` on the text itself, line by line, so that every
byte outside the edit stays as the admin wrote it whatever tomlkit version renders (Debian 12 ships
0.11.7). A small line scanner here tells where each table header and key line is.

Schema versions: 1 (no ``version`` key; CRI plugin ``cri``), 2 (``io.containerd.grpc.v1.cri``) and 3
(containerd 2.x; ``io.containerd.cri.v1.runtime``).
"""

import codecs
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from nvdocker_setup.errors import ConfigReadError

#: Bigger than any real config.toml by far (containerd's full default is 10 KiB).
MAX_BYTES = 4 * 1024 * 1024
SUPPORTED_VERSIONS = (1, 2, 3)

Path = Tuple[str, ...]

#: The CRI runtime plugin table of each schema version.
CRI_PLUGIN: Dict[int, Path] = {
    1: ("plugins", "cri"),
    2: ("plugins", "io.containerd.grpc.v1.cri"),
    3: ("plugins", "io.containerd.cri.v1.runtime"),
}
#: ``disabled_plugins`` entries that turn the CRI runtime off, per version.
CRI_DISABLE_NAMES: Dict[int, Tuple[str, ...]] = {
    1: ("cri", "io.containerd.grpc.v1.cri"),
    2: ("cri", "io.containerd.grpc.v1.cri"),
    3: ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"),
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WS = re.compile(r"[ \t]*")
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
_BAD_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))")
_SIMPLE_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def format_path(path: Sequence[str]) -> str:
    """A key path as TOML writes it: ``plugins."io.containerd.grpc.v1.cri".containerd``."""
    return ".".join(format_key(part) for part in path)


def format_key(key: str, literal: bool = False) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    if literal and "'" not in key and not _needs_escape(key):
        return "'" + key + "'"
    return basic_string(key)


def _needs_escape(text: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in text)


def basic_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or char == "\x7f":
            out.append("\\u{:04x}".format(ord(char)))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Line:
    """One physical line of the file and what it is.

    ``kind``: ``header`` (``[table]``), ``array-header`` (``[[table]]``), ``key`` (a key/value line),
    ``cont`` (the continuation of a multi-line value), ``comment`` or ``blank``. ``path`` is the table's
    path for headers, and for key lines the absolute path of the key (its table's path + the key).
    """

    index: int
    start: int
    end: int
    kind: str
    indent: str
    path: Path = ()
    #: Key lines: the table path of the header they sit under, and their key's raw text parts.
    table: Path = ()
    raw_parts: Tuple[str, ...] = ()
    #: Key lines with a single-line value: the value's span inside the line ([start, end)).
    value_span: Optional[Tuple[int, int]] = None
    #: Key lines: whether the value goes on over the next lines.
    multiline: bool = False
    text: str = ""

    @property
    def ending(self) -> str:
        if self.text.endswith("\r\n"):
            return "\r\n"
        return "\n" if self.text.endswith("\n") else ""


def _fail(source: str, what: str, line: Optional[int] = None, column: Optional[int] = None, *,
          reference: str = "containerd-config-invalid", hint: Optional[str] = None) -> ConfigReadError:
    where = source
    if line is not None:
        where += ":{}".format(line) + (":{}".format(column) if column is not None else "")
    return ConfigReadError(
        "{}: {}".format(where, what),
        reference=reference,
        hint=hint or "containerd would refuse this file too; fix it by hand (nothing was written)",
        details=["line {}{}".format(line, ", column {}".format(column) if column is not None else "")]
        if line is not None else (),
    )


def _decode_basic(body: str) -> str:
    def replace(match: "re.Match[str]") -> str:
        if match.group(1) or match.group(2):
            return chr(int(match.group(1) or match.group(2), 16))
        return _SIMPLE_ESCAPES.get(match.group(3), match.group(0))

    return _ESCAPE.sub(replace, body)


def _string_end(text: str, i: int, quote: str) -> int:
    """Index just past the single-line string opening at ``i`` (-1: not closed on this line)."""
    j = i + 1
    while j < len(text):
        char = text[j]
        if quote == '"' and char == "\\":
            j += 2
            continue
        if char == quote:
            return j + 1
        if char == "\n":
            return -1
        j += 1
    return -1


def _parse_key(text: str, i: int) -> Tuple[List[Tuple[str, str]], int]:
    """The dotted key at ``i``: [(raw, decoded)...] and the index after it (ValueError if none)."""
    parts: List[Tuple[str, str]] = []
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if i < len(text) and text[i] in "\"'":
            end = _string_end(text, i, text[i])
            if end < 0:
                raise ValueError("unterminated key")
            raw = text[i:end]
            parts.append((raw, _decode_basic(raw[1:-1]) if raw[0] == '"' else raw[1:-1]))
            i = end
        else:
            match = _BARE_KEY.match(text, i)
            if match is None:
                raise ValueError("no key")
            parts.append((match.group(0), match.group(0)))
            i = match.end()
        j = _WS.match(text, i).end()  # type: ignore[union-attr]
        if j < len(text) and text[j] == ".":
            i = j + 1
            continue
        return parts, j


class _ValueScanner:
    """Follows a value over lines: open brackets and multi-line strings."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: Optional[str] = None

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.multiline is not None

    def scan(self, text: str, i: int) -> int:
        """Scan from ``i``; return the end of the first complete top-level token (or -1)."""
        first_end = -1
        n = len(text)
        while i < n:
            if self.multiline is not None:
                delim = self.multiline
                j = i
                while True:
                    j = text.find(delim, j)
                    if j < 0:
                        return first_end
                    if delim == '"""':
                        slashes = 0
                        k = j - 1
                        while k >= i and text[k] == "\\":
                            slashes += 1
                            k -= 1
                        if slashes % 2:
                            j += 1
                            continue
                    break
                i = j + 3
                extra = 0
                while i < n and text[i] == delim[0] and extra < 2:
                    i += 1
                    extra += 1
                self.multiline = None
                if self.depth == 0 and first_end < 0:
                    first_end = i
                continue
            char = text[i]
            if char in "\r\n":
                break
            if char == "#":
                break
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.multiline = text[i:i + 3]
                i += 3
                continue
            if char in "\"'":
                end = _string_end(text, i, char)
                i = end if end > 0 else n
                if self.depth == 0 and first_end < 0:
                    first_end = i
                continue
            if char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth -= 1
                if self.depth == 0 and first_end < 0:
                    first_end = i + 1
            elif char not in " \t" and self.depth == 0 and first_end < 0:
                match = re.compile(r"[^\s#,\]}]+").match(text, i)
                assert match is not None
                first_end = match.end()
                i = first_end
                continue
            i += 1
        return first_end


def scan_lines(text: str) -> List[Line]:
    """Every line of ``text`` (already parsed by tomlkit, so valid TOML) and what it is."""
    lines: List[Line] = []
    table: Path = ()
    scanner = _ValueScanner()
    for index, match in enumerate(_LINE.finditer(text)):
        body = match.group(0)
        start = match.start()
        indent = _WS.match(body).group(0)  # type: ignore[union-attr]
        rest = body[len(indent):]
        if scanner.open:
            scanner.scan(body, 0)
            lines.append(Line(index, start, match.end(), "cont", indent, table, text=body))
            continue
        stripped = rest.strip()
        if not stripped:
            lines.append(Line(index, start, match.end(), "blank", indent, text=body))
        elif stripped.startswith("#"):
            lines.append(Line(index, start, match.end(), "comment", indent, text=body))
        elif rest.startswith("["):
            array = rest.startswith("[[")
            parts, _ = _parse_key(body, len(indent) + (2 if array else 1))
            table = tuple(decoded for _, decoded in parts)
            lines.append(Line(index, start, match.end(), "array-header" if array else "header", indent, table,
                              raw_parts=tuple(raw for raw, _ in parts), text=body))
        else:
            parts, after = _parse_key(body, len(indent))
            assert body[after] == "="
            value_start = _WS.match(body, after + 1).end()  # type: ignore[union-attr]
            value_end = scanner.scan(body, value_start)
            path = table + tuple(decoded for _, decoded in parts)
            lines.append(Line(
                index, start, match.end(), "key", indent, path, table=table,
                raw_parts=tuple(raw for raw, _ in parts),
                value_span=(value_start, value_end) if value_end > 0 and not scanner.open else None,
                multiline=scanner.open, text=body,
            ))
    return lines


def _plain(value: Any) -> Any:
    """tomlkit's items as plain Python data (dict, list, str, int, float, bool, dates)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, bool):
        return bool(value)
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BYTES:
        raise _fail(source, "the file is {} bytes, more than the {} a containerd config.toml may have here".format(
            len(data), MAX_BYTES), reference="containerd-config-too-large",
            hint="this is not a containerd config; check --config")
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if data.startswith(bom):
            raise _fail(source, "the file starts with a byte order mark", 1, 1, reference="containerd-config-encoding",
                        hint="save it as UTF-8 without a BOM (nothing was written)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise _fail(source, "the file is not UTF-8 (byte {} is {:#04x})".format(error.start, data[error.start]),
                    line, column, reference="containerd-config-encoding",
                    hint="TOML files are UTF-8; convert it (iconv) and run again (nothing was written)") from None


def _parse_toml(text: str, source: str) -> Dict[str, Any]:
    bad = _BAD_CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise _fail(source, "control character {!r} is not allowed in TOML".format(bad.group(0)[0]), line, column)
    try:
        parsed = tomlkit.parse(text)
    except (TOMLKitError, ValueError, RecursionError) as error:
        # What the error *is* comes from our own scan, never from tomlkit's wording (it changes between
        # releases: 0.11 says "Key ... already exists", 0.15 "Redefinition of an existing table").
        duplicate = _duplicate_definition(text)
        if duplicate is not None:
            line, what = duplicate
            raise _fail(source, "invalid TOML: {} is defined twice".format(what), line,
                        reference="containerd-config-duplicate") from None
        where: Optional[int] = getattr(error, "line", None) if isinstance(error, ParseError) else None
        col: Optional[int] = getattr(error, "col", None) if isinstance(error, ParseError) else None
        message = str(error).rsplit(" at line ", 1)[0] if str(error) else type(error).__name__
        raise _fail(source, "invalid TOML: {}".format(message), where, col + 1 if col is not None else None) from None
    value = _plain(parsed)
    assert isinstance(value, dict)
    return value


def _duplicate_definition(text: str) -> Optional[Tuple[int, str]]:
    """The first line (1-based) that defines a key or table a second time, and what it defines; None
    when there is none or when the text is too broken for the line scanner to follow."""
    try:
        lines = scan_lines(text)
    except (ValueError, AssertionError, IndexError, RecursionError):
        return None
    headers: set = set()  # tables opened with [header]
    implicit: set = set()  # tables made by dotted keys (a.b = 1 makes a)
    keys: set = set()  # full paths of keys with values
    for line in lines:
        if line.kind == "array-header":  # each [[x]] starts a fresh element: forget what was under x
            prefix = line.path
            for known in (headers, implicit, keys):
                for path in [p for p in known if p[:len(prefix)] == prefix]:
                    known.discard(path)
        elif line.kind == "header":
            if line.path in headers or line.path in implicit or line.path in keys:
                return line.index + 1, "table [{}]".format(format_path(line.path))
            headers.add(line.path)
        elif line.kind == "key":
            if line.path in keys or line.path in headers or line.path in implicit:
                return line.index + 1, "key {}".format(format_path(line.path))
            keys.add(line.path)
            for cut in range(len(line.table) + 1, len(line.path)):
                if line.path[:cut] in keys:
                    return line.index + 1, "key {}".format(format_path(line.path[:cut]))
                implicit.add(line.path[:cut])
    return None


class ContainerdDocument:
    """A config.toml: its text (as read, CRLF kept), its plain value and its schema version."""

    def __init__(self, text: str, source: str, value: Dict[str, Any], implicit_version: Optional[int] = None):
        self.text = text
        self.source = source
        self._value = value
        #: A new or empty file: the version the edit should write (containerd's own default).
        self.implicit_version = implicit_version
        self._lines: Optional[List[Line]] = None
        self.version = self._version()
        self._check_shape()

    # -- reading -----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, source: str = "config.toml", empty_version: int = 2) -> "ContainerdDocument":
        """Parse ``data``; an empty (or blank) file is containerd's defaults: ``empty(source, empty_version)``."""
        text = _decode(data, source)
        if not text.strip():
            if text:
                value = _parse_toml(text, source)
                return cls(text, source, value, implicit_version=_check_new_version(empty_version))
            return cls.empty(source, empty_version)
        return cls(text, source, _parse_toml(text, source))

    @classmethod
    def empty(cls, source: str = "config.toml", version: int = 2) -> "ContainerdDocument":
        """A missing or empty file; edits write ``version = <version>`` (2 for containerd 1.x, 3 for 2.x)."""
        return cls("", source, {}, implicit_version=_check_new_version(version))

    def with_text(self, text: str) -> "ContainerdDocument":
        """The same file with ``text`` (parsed and checked again)."""
        implicit = self.implicit_version if "version" not in _parse_toml(text, self.source) else None
        return ContainerdDocument(text, self.source, _parse_toml(text, self.source), implicit_version=implicit)

    @property
    def value(self) -> Dict[str, Any]:
        return self._value

    def encode(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def newline(self) -> str:
        match = re.search(r"\r?\n", self.text)
        return match.group(0) if match else "\n"

    def lines(self) -> List[Line]:
        if self._lines is None:
            self._lines = scan_lines(self.text)
        return self._lines

    # -- schema ------------------------------------------------------------------------------------

    def _version(self) -> int:
        if "version" not in self._value:
            return self.implicit_version or 1
        version = self._value["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_VERSIONS:
            raise _fail(self.source, "unknown config version {!r}".format(version), self._key_line(("version",)),
                        reference="containerd-config-unknown-version",
                        hint="containerd reads versions 1, 2 and 3 (3 for containerd 2.x); fix 'version'")
        return version

    @property
    def cri_path(self) -> Path:
        return CRI_PLUGIN[self.version]

    @property
    def containerd_path(self) -> Path:
        return self.cri_path + ("containerd",)

    @property
    def runtimes_path(self) -> Path:
        return self.containerd_path + ("runtimes",)

    @property
    def default_runtime_name_path(self) -> Path:
        return self.containerd_path + ("default_runtime_name",)

    @property
    def enable_cdi_path(self) -> Path:
        return self.cri_path + ("enable_cdi",)

    @property
    def cdi_spec_dirs_path(self) -> Path:
        return self.cri_path + ("cdi_spec_dirs",)

    def get(self, path: Sequence[str]) -> Any:
        node: Any = self._value
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    @property
    def imports(self) -> List[str]:
        imports = self._value.get("imports")
        return list(imports) if isinstance(imports, list) else []

    def cri_disabled(self) -> Optional[str]:
        """The ``disabled_plugins`` entry that turns this version's CRI runtime off (None: it is on)."""
        disabled = self._value.get("disabled_plugins")
        if not isinstance(disabled, list):
            return None
        for entry in disabled:
            if entry in CRI_DISABLE_NAMES[self.version]:
                return str(entry)
        return None

    def _key_line(self, path: Path) -> Optional[int]:
        try:
            for line in self.lines():
                if line.path == path and line.kind in ("key", "header", "array-header"):
                    return line.index + 1
        except (ValueError, AssertionError, IndexError):
            return None
        return None

    def _check_shape(self) -> None:
        """Refuse a file where a table on our path is something else, or a value has the wrong type."""
        for path in (self.cri_path, self.containerd_path, self.runtimes_path):
            for cut in range(1, len(path) + 1):
                node = self.get(path[:cut])
                if node is not None and not isinstance(node, dict):
                    raise _fail(self.source, "{} must be a table, found {}".format(
                        format_path(path[:cut]), _kind(node)), self._key_line(path[:cut]),
                        reference="containerd-config-bad-table",
                        hint="containerd refuses this file too; make {} a table by hand".format(format_path(path[:cut])))
        for checked, kinds, what in (
            (self.default_runtime_name_path, (str,), "a string"),
            (self.enable_cdi_path, (bool,), "true or false"),
            (("disabled_plugins",), (list,), "a list"),
            (("imports",), (list,), "a list"),
        ):
            node = self.get(checked)
            if node is not None and not isinstance(node, kinds):
                raise _fail(self.source, "{} must be {}, found {}".format(format_path(checked), what, _kind(node)),
                            self._key_line(checked), reference="containerd-config-bad-value",
                            hint="containerd refuses this file too; fix {} by hand".format(format_path(checked)))
        runtimes = self.get(self.runtimes_path)
        if isinstance(runtimes, dict):
            for name, entry in runtimes.items():
                if not isinstance(entry, dict):
                    path = self.runtimes_path + (name,)
                    raise _fail(self.source, "{} must be a table, found {}".format(format_path(path), _kind(entry)),
                                self._key_line(path), reference="containerd-config-bad-table",
                                hint="containerd refuses this file too; fix {} by hand".format(format_path(path)))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _check_new_version(version: int) -> int:
    if version not in (2, 3):
        raise ValueError("a new containerd config is version 2 or 3, not {!r}".format(version))
    return version
