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
