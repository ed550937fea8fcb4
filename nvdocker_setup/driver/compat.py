"""CUDA forward compatibility: an image's ``/usr/local/cuda/compat/libcuda.so.<version>`` first.

A CUDA image newer than the host driver can ship NVIDIA's forward-compatibility libraries in
``/usr/local/cuda/compat``; NVIDIA's ``enable-cuda-compat`` hook puts that directory first in the
container's ld cache when the library there belongs to a newer driver branch than the host's.
We do the same inside our ld cache hook (one interpreter start): the runtime and ``cdi
generate`` pass ``--cuda-compat-dir`` and ``--host-driver-version`` (driver/edits.py), and the
hook (hook/main.py) reaches the directory with O_NOFOLLOW per component from the root's fd and
hands it to :func:`compat_library_in`.

Everything here reads the container's files, which are hostile: only regular files are opened,
never through a symlink, never blocking (a FIFO), only a 64-byte header is read, and at most
:data:`MAX_ENTRIES` directory entries are looked at. Standard library only.
"""

from __future__ import annotations

import os
import stat
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Optional, Tuple

#: Where CUDA images keep the forward-compatibility libraries (NVIDIA's hook looks there too).
COMPAT_DIR = "/usr/local/cuda/compat"
#: How many entries of the compat directory are looked at, at most (CUDA's has about ten).
MAX_ENTRIES = 256
#: A driver version: at most this many characters and numeric components.
MAX_VERSION_CHARS = 32
MAX_VERSION_PARTS = 4
LIBRARY_PREFIX = "libcuda.so."
_ELF_HEADER_BYTES = 64
_ET_DYN = 3


def parse_version(text: str) -> Optional[Tuple[int, ...]]:
    """``"550.54.14"`` -> ``(550, 54, 14)``; None unless 2 to :data:`MAX_VERSION_PARTS` parts of
    ASCII digits (a driver version; ``libcuda.so.1``, the SONAME link, is not one)."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_CHARS:
        return None
    parts = text.split(".")
    if not 2 <= len(parts) <= MAX_VERSION_PARTS:
        return None
    if not all(part and len(part) <= 8 and part.isascii() and part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)


def uses_compat(compat: Tuple[int, ...], host: Tuple[int, ...]) -> bool:
    """Whether a compat library of version ``compat`` is used on a host driver ``host``: only
    when it is newer *and* of a newer driver branch (major), as NVIDIA's hook decides; a newer
    build of the host's own branch is not, the host's driver serves that CUDA already."""
    return compat > host and compat[0] > host[0]


def is_elf_shared_object(header: bytes) -> bool:
    """An ELF header (32 or 64 bit, either byte order) of type ET_DYN."""
    if len(header) < 18 or header[:4] != b"\x7fELF" or header[4] not in (1, 2) or header[5] not in (1, 2):
        return False
    (kind,) = struct.unpack_from("<H" if header[5] == 1 else ">H", header, 16)
    return kind == _ET_DYN


def _read_header(dir_fd: int, name: str) -> Optional[bytes]:
    """The first bytes of regular file ``name`` under ``dir_fd``, or None: not opened at all
    unless it is a regular file (a device node is never opened), opened without following a
    symlink and without blocking, and checked again on the fd (it may have been swapped)."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(before.st_mode):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or (found.st_dev, found.st_ino) != (before.st_dev, before.st_ino):
            return None
        return os.pread(fd, _ELF_HEADER_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)


def compat_library_in(dir_fd: int, host_version: Tuple[int, ...]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """``(name, version)`` of the newest ``libcuda.so.<version>`` in the directory open as
    ``dir_fd`` that is a regular ELF shared object and that :func:`uses_compat` on
    ``host_version``; None when there is none (then the container is left as it is).
    At most :data:`MAX_ENTRIES` entries are looked at; symlinks and other odd entries are skipped."""
    best: Optional[Tuple[str, Tuple[int, ...]]] = None
    try:
        with os.scandir(dir_fd) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_ENTRIES:
                    break
                name = entry.name
                if not name.startswith(LIBRARY_PREFIX):
                    continue
                version = parse_version(name[len(LIBRARY_PREFIX):])
                if version is None or not uses_compat(version, host_version):
                    continue
                if best is not None and version <= best[1]:
                    continue
                header = _read_header(dir_fd, name)
                if header is not None and is_elf_shared_object(header):
                    best = (name, version)
    except OSError:
        return None
    return best
