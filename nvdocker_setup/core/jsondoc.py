"""A strict, position-keeping JSON reader and a splicing editor for daemon.json.

Why not ``json.loads`` + ``json.dumps``: re-serialising a document reorders nothing in Python but it
still rewrites every number, escape, blank line and indentation choice the admin made. Here the file
is parsed into nodes that remember where they are in the text, and every edit replaces one span of
text. Bytes that the edit does not concern are never rewritten, so an install followed by an
uninstall gives back the original text.

The reader is stricter than Go's decoder on purpose (duplicate keys, NaN, comments, trailing commas,
concatenated documents) and every error names the line and column with the offending line.
"""

import codecs
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nvdocker_setup.errors import ConfigReadError

MAX_DEPTH = 64

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_STRING_CHUNK = re.compile(r'[^"\\\x00-\x1f]*')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BOMS: Sequence[Tuple[bytes, str]] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass
class Node:
    """A JSON value and the half-open span ``[start, end)`` of its text."""

    kind: str  # object, array, string, number, true, false, null
    start: int
    end: int
    value: Any = None
    members: List["Member"] = field(default_factory=list)  # objects only
    items: List["Node"] = field(default_factory=list)  # arrays only

    def member(self, key: str) -> Optional["Member"]:
        for candidate in self.members:
            if candidate.key == key:
                return candidate
        return None


@dataclass
class Member:
    key: str
    key_start: int
    key_end: int
    value: Node


@dataclass(frozen=True)
class Style:
    """How the admin formats the file, so that our insertions look like theirs."""

    indent: Optional[str]  # None: minified (no newlines inside the top-level object)
    newline: str
    key_separator: str  # text between a key and its value, e.g. ": " or ":"


class JsonSyntaxError(ConfigReadError):
    reference = "daemon-json-syntax"


def _line_col(text: str, pos: int) -> Tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def fail(self, pos: int, what: str, hint: Optional[str] = None) -> "JsonSyntaxError":
        line, col = _line_col(self.text, pos)
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        shown = self.text[start : end if end != -1 else len(self.text)].rstrip("\r")
        caret_col = col - 1
        if len(shown) > 160:
            lo = max(0, caret_col - 80)
            shown, caret_col = shown[lo : lo + 160], caret_col - lo
        details = ["line {}: {}".format(line, shown), " " * (len("line {}: ".format(line)) + caret_col) + "^"]
        return JsonSyntaxError(
            "{}: {} at line {}, column {}".format(self.source, what, line, col),
            details=details,
            hint=hint or "fix the file by hand (nothing was written), or restore a backup",
        )

    def skip_ws(self, pos: int) -> int:
        return _WHITESPACE.match(self.text, pos).end()  # type: ignore[union-attr]

    def parse_document(self) -> Optional[Node]:
        pos = self.skip_ws(0)
        if pos == len(self.text):
            return None
        node = self.parse_value(pos, 0)
        rest = self.skip_ws(node.end)
        if rest != len(self.text):
            if self.text.startswith(("/", "#"), rest):
                raise self.comment_error(rest)
            raise self.fail(
                rest,
                "unexpected data after the end of the top-level value",
                hint="the file holds more than one JSON document (two objects pasted one after the other?); merge them into one object",
            )
        return node

    def comment_error(self, pos: int) -> JsonSyntaxError:
        return self.fail(pos, "daemon.json does not allow comments", hint="remove the comment (dockerd refuses it too)")

    def parse_value(self, pos: int, depth: int) -> Node:
        text = self.text
        if pos >= len(text):
            raise self.fail(pos, "unexpected end of file, expected a value")
        char = text[pos]
        if char == "{":
            return self.parse_object(pos, depth + 1)
        if char == "[":
            return self.parse_array(pos, depth + 1)
        if char == '"':
            string, end = self.parse_string(pos)
            return Node("string", pos, end, string)
        for literal, constant in (("true", True), ("false", False), ("null", None)):
            if text.startswith(literal, pos):
                return Node(literal, pos, pos + len(literal), constant)
        for word in ("NaN", "Infinity", "-Infinity"):
            if text.startswith(word, pos):
                raise self.fail(pos, "{} is not valid JSON".format(word), hint="use a number or a string instead")
        match = _NUMBER.match(text, pos)
        if match and match.end() > pos:
            raw = match.group()
            number = int(raw) if raw.lstrip("-").isdigit() else float(raw)
            return Node("number", pos, match.end(), number)
        if char in "/#":
            raise self.comment_error(pos)
        if char == "'":
            raise self.fail(pos, "strings must use double quotes")
        raise self.fail(pos, "expected a value, found {!r}".format(char))

    def check_depth(self, pos: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(
                pos, "nesting deeper than {} levels".format(MAX_DEPTH), hint="daemon.json never needs this depth; the file is damaged"
            )

    def parse_object(self, start: int, depth: int) -> Node:
        self.check_depth(start, depth)
        text = self.text
        node = Node("object", start, start, {})
        seen: Dict[str, int] = {}
        pos = self.skip_ws(start + 1)
        if pos < len(text) and text[pos] == "}":
            node.end = pos + 1
            return node
        while True:
            if pos >= len(text):
                raise self.fail(pos, "unexpected end of file inside an object (missing '}')")
            if text[pos] != '"':
                if text[pos] == "}" and node.members:
                    raise self.fail(pos, "trailing comma before '}'", hint="remove the last comma (JSON does not allow it)")
                if text[pos] in "/#":
                    raise self.comment_error(pos)
                raise self.fail(pos, "expected a double-quoted key, found {!r}".format(text[pos]))
            key, key_end = self.parse_string(pos)
            if key in seen:
                first_line, _ = _line_col(text, seen[key])
                raise self.fail(
                    pos,
                    "duplicate key {!r} (first defined at line {})".format(key, first_line),
                    hint="dockerd silently keeps only the last one; delete the copy you do not want",
                )
            seen[key] = pos
            colon = self.skip_ws(key_end)
            if colon >= len(text) or text[colon] != ":":
                raise self.fail(colon, "expected ':' after key {!r}".format(key))
            value = self.parse_value(self.skip_ws(colon + 1), depth)
            node.members.append(Member(key, pos, key_end, value))
            node.value[key] = value.value
            pos = self.skip_ws(value.end)
            if pos < len(text) and text[pos] == ",":
                pos = self.skip_ws(pos + 1)
                continue
            if pos < len(text) and text[pos] == "}":
                node.end = pos + 1
                return node
            if pos < len(text) and text[pos] in "/#":
                raise self.comment_error(pos)
            if pos < len(text) and text[pos] == '"':
                raise self.fail(pos, "missing ',' between members")
            raise self.fail(pos, "expected ',' or '}' in an object")

    def parse_array(self, start: int, depth: int) -> Node:
        self.check_depth(start, depth)
        text = self.text
        node = Node("array", start, start, [])
        pos = self.skip_ws(start + 1)
        if pos < len(text) and text[pos] == "]":
            node.end = pos + 1
            return node
        while True:
            if pos < len(text) and text[pos] == "]" and node.items:
                raise self.fail(pos, "trailing comma before ']'", hint="remove the last comma (JSON does not allow it)")
            item = self.parse_value(pos, depth)
            node.items.append(item)
            node.value.append(item.value)
            pos = self.skip_ws(item.end)
            if pos < len(text) and text[pos] == ",":
                pos = self.skip_ws(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                node.end = pos + 1
                return node
            if pos < len(text) and text[pos] in "/#":
                raise self.comment_error(pos)
            raise self.fail(pos, "expected ',' or ']' in an array")

    def parse_string(self, start: int) -> Tuple[str, int]:
        text = self.text
        pos = start + 1
        parts: List[str] = []
        while True:
            chunk = _STRING_CHUNK.match(text, pos).end()  # type: ignore[union-attr]
            parts.append(text[pos:chunk])
            pos = chunk
            if pos >= len(text):
                raise self.fail(start, "unterminated string")
            char = text[pos]
            if char == '"':
                return "".join(parts), pos + 1
            if char == "\\":
                esc = text[pos + 1 : pos + 2]
                if esc in _ESCAPES:
                    parts.append(_ESCAPES[esc])
                    pos += 2
                elif esc == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[pos + 2 : pos + 6]):
                    code = int(text[pos + 2 : pos + 6], 16)
                    pos += 6
                    if 0xD800 <= code < 0xDC00 and text.startswith("\\u", pos):
                        low = text[pos + 2 : pos + 6]
                        if re.fullmatch(r"[dD][c-fC-F][0-9a-fA-F]{2}", low):
                            code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                            pos += 6
                    parts.append(chr(code))
                else:
                    raise self.fail(pos, "invalid escape sequence in a string")
            else:
                what = "NUL byte" if char == "\x00" else "control character U+{:04X}".format(ord(char))
                raise self.fail(pos, "{} inside a string".format(what), hint="escape it (e.g. \\n) or remove it")


def _decode(data: bytes, source: str) -> Tuple[str, str, bytes]:
    """Return (text, encoding, bom). dockerd accepts UTF-8 (BOM optional) and UTF-16 with a BOM."""
    for bom, encoding in _BOMS:  # noqa: B007 - the matching pair is used after the loop
        if data.startswith(bom):
            break
    else:
        bom, encoding = b"", "utf-8"
    body = data[len(bom) :]
    if encoding == "utf-8" and b"\x00" in body:
        offset = body.index(b"\x00")
        prefix = body[:offset].decode("utf-8", "replace")
        line, col = _line_col(prefix, len(prefix))
        looks_utf16 = body.count(b"\x00") * 3 >= len(body)
        raise ConfigReadError(
            "{}: NUL byte at line {}, column {}".format(source, line, col),
            reference="daemon-json-nul-byte",
            hint="the file looks like UTF-16 without a byte-order mark; save it as UTF-8"
            if looks_utf16
            else "the file is damaged (binary data); restore a backup or rewrite it",
        )
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        prefix = body[: exc.start].decode(encoding, "replace")
        line, col = _line_col(prefix, len(prefix))
        raise ConfigReadError(
            "{}: invalid {} at line {}, column {} (byte offset {})".format(
                source, encoding.upper(), line, col, exc.start + len(bom)
            ),
            reference="daemon-json-encoding",
            hint="save the file as UTF-8",
        ) from None
    if encoding != "utf-8" and "\x00" in text:
        line, col = _line_col(text, text.index("\x00"))
        raise ConfigReadError(
            "{}: NUL character at line {}, column {}".format(source, line, col), reference="daemon-json-nul-byte"
        )
    return text, encoding, bom


def _detect_style(text: str, root: Optional[Node]) -> Style:
    newline = "\r\n" if "\r\n" in text else "\n"
    indent: Optional[str] = "  "
    key_separator = ": "
    if root is not None and root.kind == "object" and root.members:
        first = root.members[0]
        key_separator = text[first.key_end : first.value.start]
        if "\n" in key_separator or "\r" in key_separator:
            key_separator = ": "
        before = text[root.start + 1 : first.key_start]
        if "\n" in before:
            indent = before[before.rfind("\n") + 1 :] or "  "
        elif "\n" not in text[root.start : root.end]:
            indent = None
    return Style(indent=indent, newline=newline, key_separator=key_separator)


@dataclass
class JsonDocument:
    """daemon.json as text plus a node tree; ``value`` is the plain Python value (``{}`` if empty)."""

    text: str
    encoding: str
    bom: bytes
    root: Optional[Node]
    style: Style
    source: str = "daemon.json"

    @classmethod
    def parse(cls, data: bytes, source: str = "daemon.json") -> "JsonDocument":
        text, encoding, bom = _decode(data, source)
        root = _Parser(text, source).parse_document()
        if root is not None and root.kind != "object":
            raise ConfigReadError(
                "{}: the top level must be a JSON object, found {}".format(source, _kind_name(root)),
                reference="daemon-json-not-object",
                hint='daemon.json holds one object, e.g. {"log-level": "info"}',
            )
        return cls(text, encoding, bom, root, _detect_style(text, root), source)

    @property
    def is_empty(self) -> bool:
        """True when the file is empty or whitespace only (dockerd reads that as ``{}``)."""
        return self.root is None

    @property
    def value(self) -> Dict[str, Any]:
        return self.root.value if self.root is not None else {}

    def encode(self, text: Optional[str] = None) -> bytes:
        """The bytes of ``text`` (default: this document) in the file's own encoding and BOM."""
        return self.bom + (self.text if text is None else text).encode(self.encoding)

    def node_at(self, path: Sequence[str]) -> Optional[Node]:
        node = self.root
        for key in path:
            if node is None or node.kind != "object":
                return None
            member = node.member(key)
            node = member.value if member else None
        return node

    # -- editing: each returns a new, re-parsed document; the original is untouched --------------

    def with_member(self, path: Sequence[str], key: str, value: Any) -> "JsonDocument":
        """Set ``path.key`` to ``value``, creating missing parent objects; other text is kept."""
        if self.root is None:
            return self._replaced(0, len(self.text), self._dump({}, "") + self.style.newline).with_member(path, key, value)
        parent = self.node_at(path)
        if parent is None:
            return self.with_member(path[:-1], path[-1], {key: value})
        if parent.kind != "object":
            raise ValueError("{} is not an object".format(".".join(path)))
        member = parent.member(key)
        if member is not None:
            base = self._line_indent(member.key_start)
            return self._replaced(member.value.start, member.value.end, self._dump(value, base))
        if not parent.members:
            base = self._line_indent(parent.start)
            if self.style.indent is None:
                body = "{" + self._member_text(key, value, base) + "}"
            else:
                inner = base + self.style.indent
                body = "{" + self.style.newline + inner + self._member_text(key, value, inner) + self.style.newline + base + "}"
            return self._replaced(parent.start, parent.end, body)
        last = parent.members[-1]
        separator = self.text[self._previous_separator_end(parent, len(parent.members) - 1) : last.key_start]
        if separator == "" and len(parent.members) == 1 and self.style.key_separator.endswith(" "):
            separator = " "  # {"a": 1} -> {"a": 1, "b": 2}, as a spaced style writes it
        base = self._line_indent(last.key_start)
        return self._replaced(last.value.end, last.value.end, "," + separator + self._member_text(key, value, base))

    def without_member(self, path: Sequence[str], key: str) -> "JsonDocument":
        """Remove ``path.key`` with exactly the separator text an insertion at the end adds."""
        parent = self.node_at(path)
        member = parent.member(key) if parent is not None and parent.kind == "object" else None
        if parent is None or member is None:
            return self
        index = parent.members.index(member)
        if len(parent.members) == 1:
            return self._replaced(parent.start, parent.end, "{}")
        if index > 0:
            return self._replaced(parent.members[index - 1].value.end, member.value.end, "")
        return self._replaced(member.key_start, parent.members[1].key_start, "")

    # -- helpers ----------------------------------------------------------------------------------

    def _previous_separator_end(self, parent: Node, index: int) -> int:
        """Offset right after the ``{`` or ``,`` that precedes member ``index``."""
        if index == 0:
            return parent.start + 1
        return self.text.index(",", parent.members[index - 1].value.end) + 1

    def _line_indent(self, pos: int) -> str:
        line_start = self.text.rfind("\n", 0, pos) + 1
        return re.match(r"[ \t]*", self.text[line_start:pos]).group()  # type: ignore[union-attr]

    def _member_text(self, key: str, value: Any, base: str) -> str:
        return json.dumps(key, ensure_ascii=False) + self.style.key_separator + self._dump(value, base)

    def _dump(self, value: Any, base: str) -> str:
        separator = self.style.key_separator.strip() + (" " if self.style.key_separator.endswith(" ") else "")
        if self.style.indent is None:
            item_separator = ", " if self.style.key_separator.endswith(" ") else ","
            return json.dumps(value, ensure_ascii=False, separators=(item_separator, separator))
        dumped = json.dumps(value, ensure_ascii=False, indent=self.style.indent, separators=(",", separator))
        return dumped.replace("\n", self.style.newline + base)

    def _replaced(self, start: int, end: int, replacement: str) -> "JsonDocument":
        text = self.text[:start] + replacement + self.text[end:]
        parsed = JsonDocument.parse(self.encode(text), self.source)
        return parsed


def _kind_name(node: Node) -> str:
    return {"object": "an object", "array": "an array", "string": "a string", "number": "a number"}.get(
        node.kind, node.kind
    )


def empty_document(source: str = "daemon.json") -> JsonDocument:
    """The document for a missing file (written as UTF-8 with two-space indentation)."""
    return JsonDocument("", "utf-8", b"", None, Style("  ", "\n", ": "), source)


def member_object(value: Any, key: str) -> Dict[str, Any]:
    """``value[key]`` when ``value`` is an object and that member is one too, else ``{}``: how the
    engine reads ``runtimes`` and ``features``, whose wrong shapes ``check_shape`` reports."""
    member = value.get(key) if isinstance(value, dict) else None
    return member if isinstance(member, dict) else {}
