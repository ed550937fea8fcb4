"""Driver version strings as numbers: shared by discovery and the requirement checks, which
import it from here rather than from each other (no import cycle)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import List, Tuple


def version_tuple(version: str) -> Tuple[int, ...]:
    """``"550.54.14"`` -> ``(550, 54, 14)``; non-numeric parts stop the tuple."""
    numbers: List[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)
