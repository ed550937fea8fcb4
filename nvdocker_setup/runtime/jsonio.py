"""JSON for the hot path, without importing the ``json`` package.

``import json`` pulls in ``re``, ``enum``, ``functools`` and ``collections``: about 5 ms, a
third of an interpreter start, on every GPU container create. The work itself is done by the C
accelerator ``_json`` either way, so we call it directly: same parser, same encoder, same
results as ``json.loads`` and ``json.dumps(separators=(",", ":"), ensure_ascii=False)``. Errors,
and interpreters without ``_json``, go through ``json`` itself (its messages, its behaviour).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Union

_WHITESPACE = " \t\n\r"


class _DecoderSettings:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


def _unencodable(value: Any) -> Any:
    raise TypeError("Object of type {} is not JSON serializable".format(type(value).__name__))


_scan: Any
_encode: Any
try:
    import _json

    _scan = _json.make_scanner(_DecoderSettings())  # type: ignore[arg-type]  # duck-typed settings
    _encode = _json.make_encoder(None, _unencodable, _json.encode_basestring, None, ":", ",", False, False, True)
except (ImportError, AttributeError, TypeError):  # another interpreter: use the json package
    _scan = None
    _encode = None


class TooDeep(ValueError):
    """Nesting beyond the interpreter's recursion limit (~1000 levels): a ValueError like any
    other malformed input, never a RecursionError that escapes as a traceback."""

    def __init__(self) -> None:
        super().__init__("JSON nested too deeply")


def loads(data: Union[bytes, str]) -> Any:
    """``json.loads`` for UTF-8 bytes or text; every malformed input raises ``ValueError``
    (``UnicodeDecodeError`` and :class:`TooDeep` included). Time and memory stay linear in the
    input: the C scanner gives up at the recursion limit, whatever the depth."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if _scan is not None and not text.startswith("\ufeff"):
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except (StopIteration, ValueError):
            value, end = None, -1
        except RecursionError:
            raise TooDeep() from None
        if end >= 0 and not text[end:].strip(_WHITESPACE):
            return value
    import json  # the error path (or no accelerator): json's own behaviour and messages

    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep() from None


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``: compact, as containerd writes."""
    if _encode is not None:
        try:
            return "".join(_encode(value, 0))
        except RecursionError:
            raise TooDeep() from None
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
