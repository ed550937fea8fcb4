"""Block-style YAML for CDI specs, written and read back without a YAML library.

``cdi generate`` writes a ``.yaml`` spec as YAML people can read (``cat``), in a subset every YAML
parser reads the same way: block mappings and sequences indented by two spaces, keys as plain
scalars when they are simple names (else JSON-quoted), every string value JSON-quoted (a JSON
string is a YAML double-quoted scalar), numbers, ``true``/``false``/``null``, and ``[]``/``{}`` for
empty collections. :func:`loads` reads exactly that subset back (our own specs), so that ``cdi
list`` and ``doctor`` need no PyYAML; YAML outside it raises :class:`ValueError` and the caller
tries PyYAML where it is installed.
"""

import json
import re
from typing import Any, List, Tuple

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_INDENT = "  "


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)) and not value:
        return "[]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError("not a scalar: {!r}".format(type(value)))


def _is_block(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple)) and bool(value)


def _emit(value: Any, indent: int, lines: List[str]) -> None:
    pad = _INDENT * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_block(item):
                lines.append("{}{}:".format(pad, _key(str(key))))
                _emit(item, indent + 1, lines)
            else:
                lines.append("{}{}: {}".format(pad, _key(str(key)), _scalar(item)))
        return
    for item in value:  # a sequence: "- " then the item, a mapping's first key on the dash line
        if isinstance(item, dict) and item:
            nested: List[str] = []
            _emit(item, indent + 1, nested)
            first = nested[0][len(_INDENT) * (indent + 1):]
            lines.append("{}- {}".format(pad, first))
            lines.extend(nested[1:])
        elif _is_block(item):
            lines.append("{}-".format(pad))
            _emit(item, indent + 1, lines)
        else:
            lines.append("{}- {}".format(pad, _scalar(item)))


def dumps(value: Any) -> str:
    """``value`` (a mapping) as block YAML, ending with a newline."""
    if not isinstance(value, dict):
        raise TypeError("a YAML document here is a mapping")
    lines: List[str] = []
    _emit(value, 0, lines)
    return "\n".join(lines) + "\n"


# -- reading our subset back -------------------------------------------------------------------------


def _value(text: str, where: int) -> Any:
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("line {}: not a JSON-style scalar: {!r}".format(where + 1, text[:80])) from None


def _split_key(text: str, where: int) -> Tuple[str, str]:
    if text.startswith('"'):
        decoder = json.JSONDecoder()
        try:
            key, end = decoder.raw_decode(text)
        except ValueError:
            raise ValueError("line {}: a bad quoted key".format(where + 1)) from None
        rest = text[end:]
    else:
        name, colon, rest = text.partition(":")
        if not colon or not _PLAIN_KEY.match(name):
            raise ValueError("line {}: not a key: {!r}".format(where + 1, text[:80]))
        key, rest = name, ":" + rest
    if not rest.startswith(":") or (len(rest) > 1 and rest[1] != " "):
        raise ValueError("line {}: a key must be followed by ': '".format(where + 1))
    if not isinstance(key, str):
        raise ValueError("line {}: a key must be a string".format(where + 1))
    return key, rest[1:].strip()


class _Reader:
    def __init__(self, text: str) -> None:
        self.lines: List[Tuple[int, str, int]] = []  # (indent, content, line number)
        for number, line in enumerate(text.splitlines()):
            stripped = line.rstrip()
            if not stripped.strip() or stripped.lstrip().startswith("#"):
                continue
            indent = len(stripped) - len(stripped.lstrip(" "))
            if "\t" in stripped[:indent + 1]:
                raise ValueError("line {}: tabs are not YAML indentation".format(number + 1))
            self.lines.append((indent, stripped[indent:], number))
        self.at = 0

    def block(self, indent: int) -> Any:
        if self.at >= len(self.lines):
            raise ValueError("a block ends early")
        first_indent, content, _ = self.lines[self.at]
        if first_indent != indent:
            raise ValueError("line {}: unexpected indentation".format(self.lines[self.at][2] + 1))
        return self.sequence(indent) if content == "-" or content.startswith("- ") else self.mapping(indent)

    def mapping(self, indent: int, first: Any = None) -> Any:
        found: dict = {}
        while self.at < len(self.lines):
            line_indent, content, number = self.lines[self.at]
            if first is not None:
                content, first = first, None
            elif line_indent < indent:
                break
            elif line_indent > indent or content.startswith("- ") or content == "-":
                raise ValueError("line {}: unexpected indentation".format(number + 1))
            key, rest = _split_key(content, number)
            if key in found:
                raise ValueError("line {}: duplicate key {!r}".format(number + 1, key))
            self.at += 1
            found[key] = _value(rest, number) if rest else self.block(self._next_indent(indent, number))
        return found

    def sequence(self, indent: int) -> Any:
        found: list = []
        while self.at < len(self.lines):
            line_indent, content, number = self.lines[self.at]
            if line_indent < indent:
                break
            if line_indent > indent or not (content == "-" or content.startswith("- ")):
                raise ValueError("line {}: unexpected indentation".format(number + 1))
            rest = content[1:].strip()
            quoted_key = False
            if rest.startswith('"'):
                try:
                    _, end = json.JSONDecoder().raw_decode(rest)
                    quoted_key = rest[end:].startswith(":")
                except ValueError:
                    pass
            if not rest:
                self.at += 1
                found.append(self.block(self._next_indent(indent, number)))
            elif (not quoted_key and rest.startswith(("{", "[", '"'))) or rest in ("true", "false", "null") \
                    or rest[:1].isdigit() or rest[:1] == "-":
                if rest not in ("[]", "{}") and rest[:1] in "{[":
                    raise ValueError("line {}: flow collections are not in this subset".format(number + 1))
                self.at += 1
                found.append(_value(rest, number))
            else:  # "- key: value": a mapping whose keys continue two columns further in
                found.append(self.mapping(indent + 2, first=rest))
        return found

    def _next_indent(self, indent: int, number: int) -> int:
        if self.at >= len(self.lines) or self.lines[self.at][0] <= indent:
            raise ValueError("line {}: a key without a value".format(number + 1))
        return self.lines[self.at][0]


def loads(text: str) -> Any:
    """A document in the subset :func:`dumps` writes; :class:`ValueError` for anything else."""
    reader = _Reader(text)
    if not reader.lines:
        raise ValueError("an empty document")
    value = reader.block(0)
    if reader.at != len(reader.lines):
        raise ValueError("line {}: text after the document".format(reader.lines[reader.at][2] + 1))
    return value
