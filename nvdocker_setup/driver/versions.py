"""Driver version strings as numbers: shared by discovery and the requirement checks, which
import it from here rather than from each other (no import cycle)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import List, Optional, Tuple

#: Where CUDA images keep the forward-compatibility libraries (NVIDIA's hook looks there too).
COMPAT_DIR = "/usr/local/cuda/compat"
#: A driver version: at most this many characters and numeric components.
MAX_VERSION_CHARS = 32
MAX_VERSION_PARTS = 4


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"550.54.14"`` -> ``(550, 54, 14)``; non-numeric parts stop the tuple."""
    numbers: List[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def parse_version(text: str) -> Optional[Tuple[int, ...]]:
    """``"550.54.14"`` -> ``(550, 54, 14)``; None unless 2 to :data:`MAX_VERSION_PARTS` parts of
    ASCII digits (a driver version; ``libcuda.so.1``, the SONAME link, is not one). Here, in a leaf
    module, so that the runtime's create step need not import :mod:`compat` to check one."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_CHARS:
        return None
    parts = text.split(".")
    if not 2 <= len(parts) <= MAX_VERSION_PARTS:
        return None
    if not all(part and len(part) <= 8 and part.isascii() and part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)
