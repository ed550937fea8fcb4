"""The one exception the hot-path packages raise for failures a user can fix.

It lives here, not in :mod:`nvdocker_setup.errors`, so that the runtime and the hooks import
nothing but the standard library (that module pulls in ``enum``); the CLI turns it into an
:class:`~nvdocker_setup.errors.NvdockerError` where it needs one.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Optional


class GpuSetupError(Exception):
    """What went wrong (``message``) and how to fix it (``hint``), both one line."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return "{} (hint: {})".format(self.message, self.hint)
        return self.message


#: How many characters of a value that comes from the container an error message echoes: a
#: message must stay far below a pipe buffer (64 KiB), or writing it can block the runtime.
ECHO_LIMIT = 200


def quoted(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of a (container-supplied) value, cut to ``limit`` characters with its length."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return "{}... ({} characters)".format(repr(text[:limit]), len(text))


def shorten(text: str, limit: int = 2000) -> str:
    """A whole message, bounded: the last line of defence for what we print or log."""
    if len(text) <= limit:
        return text
    return "{}... ({} characters)".format(text[:limit], len(text))
