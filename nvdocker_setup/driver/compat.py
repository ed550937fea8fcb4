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
    from typing import List, Optional, Tuple

# The version rules and the compat directory live in the leaf module the runtime imports anyway.
from nvdocker_setup.driver.versions import COMPAT_DIR, MAX_VERSION_CHARS, MAX_VERSION_PARTS, parse_version  # noqa: E402,F401

#: How many entries of the compat directory are looked at, at most (CUDA's has about ten).
MAX_ENTRIES = 256
LIBRARY_PREFIX = "libcuda.so."
_ELF_HEADER_BYTES = 64
_ET_DYN = 3


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


#: NVIDIA's forward-compatibility note in a compat libcuda (``readelf -p .note.cuda.fwd_compatibility``):
#: a JSON description whose ``Driver`` list names the host driver branches the library may run on.
NOTE_SECTION = b".note.cuda.fwd_compatibility"
NOTE_OWNER = b"NVIDIA Corporation"
_SHT_NOTE = 7
#: Bounds on what is read of a container's file for the note: sections, the name table, the note.
MAX_SECTIONS = 4096
MAX_SECTION_BYTES = 64 << 10
MAX_DRIVER_BRANCHES = 64
_WHITESPACE = b" \t\r\n"


def parse_driver_branches(description: bytes) -> Optional[List[int]]:
    """The ``"driver": [535, 550, ...]`` list of the note's JSON description, read by a small
    scanner (the C hook reads it the same way: launcher/ldcache-hook.c): the first ``"driver"``
    key (any ASCII case) followed by ``:``, then ``[`` integers of 1 to 9 digits separated by ``,`` ``]``, JSON whitespace
    allowed between tokens. None when it is missing or not that shape (then the major-version
    rule decides)."""
    def skip(index: int) -> int:
        while index < len(description) and description[index:index + 1] in _WHITESPACE:
            index += 1
        return index

    # the key as Go's encoding/json matches it for NVIDIA's hook: any ASCII case ("driver" in the
    # notes NVIDIA ships), the first occurrence followed by ":"
    lowered = description.lower()
    at = lowered.find(b'"driver"')
    while at >= 0 and description[skip(at + 8):skip(at + 8) + 1] != b":":
        at = lowered.find(b'"driver"', at + 1)
    if at < 0:
        return None
    at = skip(at + 8)
    at = skip(at + 1)
    if description[at:at + 1] != b"[":
        return None
    at = skip(at + 1)
    branches: List[int] = []
    if description[at:at + 1] == b"]":
        return branches
    while True:
        start = at
        while at < len(description) and description[at:at + 1].isdigit():
            at += 1
        if not 1 <= at - start <= 9 or len(branches) >= MAX_DRIVER_BRANCHES:
            return None
        branches.append(int(description[start:at]))
        at = skip(at)
        token = description[at:at + 1]
        if token == b"]":
            return branches
        if token != b",":
            return None
        at = skip(at + 1)


def _align(size: int, to: int) -> int:
    to = to if to > 0 and to & (to - 1) == 0 and to <= 4096 else 1
    return (size + to - 1) & ~(to - 1)


def _trimmed(data: bytes, start: int, length: int) -> bytes:
    """Go's ``bytes.Trim(data[from:from+n], "\\x00")`` with NVIDIA's hook's bounds."""
    if not data:
        return b""
    start = min(len(data) - 1, start)
    return data[start:min(len(data), start + length)].strip(b"\0")


def note_branches(fd: int, header: bytes) -> Optional[List[int]]:
    """The driver branches of the forward-compatibility note of the ELF file open as ``fd``
    (``header``: its first 64 bytes), or None when it has no usable note. Everything read is
    bounded: at most :data:`MAX_SECTIONS` section headers, :data:`MAX_SECTION_BYTES` of the name
    table and of the note."""
    wide, order = header[4] == 2, "<" if header[5] == 1 else ">"
    if len(header) < (64 if wide else 52):
        return None
    if wide:
        shoff, = struct.unpack_from(order + "Q", header, 0x28)
        entsize, count, names_index = struct.unpack_from(order + "HHH", header, 0x3A)
    else:
        shoff, = struct.unpack_from(order + "I", header, 0x20)
        entsize, count, names_index = struct.unpack_from(order + "HHH", header, 0x2E)
    if entsize != (64 if wide else 40) or not 0 < count <= MAX_SECTIONS or names_index >= count:
        return None
    table = os.pread(fd, entsize * count, shoff)
    if len(table) != entsize * count:
        return None

    def section(index: int) -> Tuple[int, int, int, int, int]:
        """(name, type, offset, size, alignment) of section ``index``."""
        base = index * entsize
        if wide:
            name, kind = struct.unpack_from(order + "II", table, base)
            offset, size = struct.unpack_from(order + "QQ", table, base + 24)
            align, = struct.unpack_from(order + "Q", table, base + 48)
        else:
            name, kind = struct.unpack_from(order + "II", table, base)
            offset, size = struct.unpack_from(order + "II", table, base + 16)
            align, = struct.unpack_from(order + "I", table, base + 32)
        return name, kind, offset, size, align

    _, _, names_offset, names_size, _ = section(names_index)
    names = os.pread(fd, min(names_size, MAX_SECTION_BYTES), names_offset)
    for index in range(count):
        name, kind, offset, size, align = section(index)
        if kind != _SHT_NOTE or names[name:name + len(NOTE_SECTION) + 1] != NOTE_SECTION + b"\0":
            continue
        if size > MAX_SECTION_BYTES or size < 12:
            return None
        data = os.pread(fd, size, offset)
        if len(data) < 12:
            return None
        name_size, description_size, _ = struct.unpack_from(order + "III", data, 0)
        if name_size == 0 or description_size == 0:
            return None
        if _trimmed(data, 12, _align(name_size, align)) != NOTE_OWNER:
            return None
        return parse_driver_branches(_trimmed(data, 12 + _align(name_size, align), description_size))
    return None


def _read_library(dir_fd: int, name: str) -> Optional[Tuple[bytes, Optional[List[int]]]]:
    """(first 64 bytes, the note's driver branches) of regular file ``name`` under ``dir_fd``, or
    None: not opened at all unless it is a regular file (a device node is never opened), opened
    without following a symlink and without blocking, and checked again on the fd (it may have
    been swapped). The note is read only from an ELF shared object."""
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
        header = os.pread(fd, _ELF_HEADER_BYTES, 0)
        if not is_elf_shared_object(header):
            return header, None
        try:
            return header, note_branches(fd, header)
        except (OSError, struct.error, OverflowError):
            return header, None
    except OSError:
        return None
    finally:
        os.close(fd)


def compat_library_in(dir_fd: int, host_version: Tuple[int, ...]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """``(name, version)`` of the newest ``libcuda.so.<version>`` in the directory open as
    ``dir_fd`` that is a regular ELF shared object newer than ``host_version`` and usable on it:
    when its forward-compatibility note lists driver branches, the host's branch must be one of
    them (NVIDIA's rule since its hook reads the note); without a usable note,
    :func:`uses_compat` (a newer branch). None when there is none (then the container is left as
    it is). At most :data:`MAX_ENTRIES` entries are looked at; symlinks and odd entries are skipped."""
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
                if version is None or not version > host_version:
                    continue
                if best is not None and version <= best[1]:
                    continue
                found = _read_library(dir_fd, name)
                if found is None or not is_elf_shared_object(found[0]):
                    continue
                branches = found[1]
                if (host_version[0] in branches) if branches is not None else uses_compat(version, host_version):
                    best = (name, version)
    except OSError:
        return None
    return best
