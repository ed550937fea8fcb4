"""The library links a container gets besides the driver files (``libcuda.so -> libcuda.so.1``).

Discovery (:meth:`nvdocker_setup.driver.discovery.Driver.library_links`) finds them on the host,
the runtime and ``cdi generate`` pass them to our ``update-ldcache`` hook as
``--link TARGET::/container/dir/NAME`` (the spelling NVIDIA's ``create-symlinks`` hook uses), and
the hook creates them inside the container root. This module is the one definition of what such a
link may look like, shared by both ends; standard library only (the hook imports it).

A link is a bare name in a directory pointing at a bare name in the same directory: no ``/``, no
``.`` or ``..``, no NUL, at most 255 bytes each. Anything else is refused, so a link can never
point out of the directory it is made in, whatever the container's files are.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Optional, Tuple

#: Separates the target from the link path in ``--link`` (NVIDIA's create-symlinks syntax).
SEPARATOR = "::"
#: The most links one hook creates: a driver has ~60 libraries, each with a SONAME link and maybe
#: a development link; anything near this bound is not a driver.
MAX_LINKS = 256
#: Longest file name (NAME_MAX) and directory path we accept, in bytes (the C hook counts the same).
MAX_NAME_BYTES = 255
MAX_DIR_BYTES = 1024
#: Links NVIDIA's toolkit creates whether or not the host has them, because applications
#: ``dlopen`` these names (toolkit #944, #1456): link name -> SONAME prefix of the library it
#: points at (the library's SONAME link, which the hook's ldconfig creates in any case).
NVIDIA_LINKS = (
    ("libcuda.so", "libcuda.so."),
    ("libnvidia-opticalflow.so", "libnvidia-opticalflow.so."),
    ("libGLX_indirect.so.0", "libGLX_nvidia.so."),  # GLVND's indirect GLX
)


def is_plain_name(name: object) -> bool:
    """A single directory entry name: not empty, no ``/`` or NUL, not ``.``/``..``, short, and a
    file name this system can encode."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        return False
    try:
        return len(os.fsencode(name)) <= MAX_NAME_BYTES
    except UnicodeError:
        return False


def is_plain_directory(path: object) -> bool:
    """An absolute, normalized directory path other than ``/``: plain names after ``/``."""
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    try:
        if len(os.fsencode(path)) > MAX_DIR_BYTES:
            return False
    except UnicodeError:
        return False
    return all(is_plain_name(part) for part in path[1:].split("/"))


def format_link(target: str, directory: str, name: str) -> str:
    return "{}{}{}/{}".format(target, SEPARATOR, directory, name)


def parse_link(value: str) -> Optional[Tuple[str, str, str]]:
    """``(target, directory, name)`` of a ``--link`` value, or None when it is not a valid one."""
    target, sep, path = value.partition(SEPARATOR)
    directory, slash, name = path.rpartition("/")
    if not sep or not slash or not is_plain_name(target) or not is_plain_name(name) or not is_plain_directory(directory):
        return None
    return target, directory, name
