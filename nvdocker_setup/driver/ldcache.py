"""A reader for glibc's ``/etc/ld.so.cache``, so that finding the driver's libraries costs one
file read instead of a ``ldconfig -p`` process, and works on a driver root other than ``/``.

Layout (glibc ``sysdeps/generic/dl-cache.h``), all integers in the file's byte order:

* optional old format: ``"ld.so-1.7.0"``, ``uint32 nlibs``, then ``nlibs`` 12-byte entries;
* new format header (48 bytes): ``"glibc-ld.so.cache1.1"``, ``uint32 nlibs``, ``uint32
  len_strings``, ``uint8 flags`` (2 little endian, 3 big endian), 3 pad bytes, ``uint32
  extension_offset``, ``uint32 unused[3]``; then ``nlibs`` 24-byte entries ``int32 flags, uint32
  key, uint32 value, uint32 osversion, uint64 hwcap``. ``key`` (the SONAME) and ``value`` (the
  path) are offsets of NUL-terminated strings from the start of the new header.

Since glibc 2.32 ``ldconfig`` writes the new format only; the old one is read for older hosts.
"""

from __future__ import annotations

import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import List, Optional, Tuple

from nvdocker_setup.driver.errors import GpuSetupError  # noqa: E402 - after the TYPE_CHECKING guard

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
_NEW_HEADER_SIZE = 48
_NEW_ENTRY_SIZE = 24
_OLD_ENTRY_SIZE = 12

#: ``flags & FLAG_REQUIRED_MASK`` values (glibc ``ldconfig.h``) of 64-bit libraries; everything
#: else ELF (0x0000 i386/arm/ppc32, 0x0800 x32, 0x0900 armhf, ...) is 32-bit.
_FLAG_TYPE_MASK = 0x00FF
_FLAG_REQUIRED_MASK = 0xFF00
_FLAG_ELF_LIBC6 = 0x0003
_LIB64_FLAGS = frozenset((0x0100, 0x0200, 0x0300, 0x0400, 0x0500, 0x0700, 0x0A00, 0x0E00, 0x0F00, 0x1000, 0x1100, 0x1200))


class CacheEntry:
    """One library in the cache: SONAME (or link name), path as seen from the root, flags."""

    __slots__ = ("name", "path", "flags")

    def __init__(self, name: str, path: str, flags: int) -> None:
        self.name = name
        self.path = path
        self.flags = flags

    @property
    def word_size(self) -> int:
        """64 or 32: which ABI the library is for (compat32 wants the 32-bit ones)."""
        return 64 if (self.flags & _FLAG_REQUIRED_MASK) in _LIB64_FLAGS else 32

    @property
    def is_glibc_elf(self) -> bool:
        return (self.flags & _FLAG_TYPE_MASK) == _FLAG_ELF_LIBC6

    def __repr__(self) -> str:
        return "CacheEntry({!r}, {!r}, 0x{:04x})".format(self.name, self.path, self.flags)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CacheEntry) and (self.name, self.path, self.flags) == (other.name, other.path, other.flags)


def _string_at(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise ValueError("string offset {} outside the cache".format(offset))
    return os.fsdecode(data[offset:end])


def _parse_new(data: bytes, base: int, prefixes: Optional[Tuple[bytes, ...]]) -> List[CacheEntry]:
    if len(data) < base + _NEW_HEADER_SIZE:
        raise ValueError("truncated header")
    endian_flag = data[base + 28]
    order = {2: "<", 3: ">"}.get(endian_flag, "=")
    nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    start = base + _NEW_HEADER_SIZE
    if start + nlibs * _NEW_ENTRY_SIZE > len(data):
        raise ValueError("{} entries do not fit in {} bytes".format(nlibs, len(data)))
    strings = data[base:]
    entries = []
    for flags, key, value, _os, _hwcap in struct.iter_unpack(order + "iIIIQ", data[start:start + nlibs * _NEW_ENTRY_SIZE]):
        if prefixes is None or strings.startswith(prefixes, key):
            entries.append(CacheEntry(_string_at(strings, key), _string_at(strings, value), flags))
    return entries


def _parse_old(data: bytes, prefixes: Optional[Tuple[bytes, ...]]) -> List[CacheEntry]:
    (nlibs,) = struct.unpack_from("=I", data, 12)
    start = 16
    end = start + nlibs * _OLD_ENTRY_SIZE
    if end > len(data):
        raise ValueError("{} entries do not fit in {} bytes".format(nlibs, len(data)))
    new_at = data.find(NEW_MAGIC, end, end + 16)
    if new_at >= 0:
        return _parse_new(data, new_at, prefixes)
    strings = data[end:]
    return [
        CacheEntry(_string_at(strings, key), _string_at(strings, value), flags)
        for flags, key, value in struct.iter_unpack("=iII", data[start:end])
        if prefixes is None or strings.startswith(prefixes, key)
    ]


def parse(data: bytes, prefixes: Optional[Tuple[bytes, ...]] = None) -> List[CacheEntry]:
    """The entries of a cache file's bytes, in file order (glibc sorts them; we do not rely on
    it); with ``prefixes``, only names starting with one of them (decoding the rest costs ~1 ms
    on a host with a thousand libraries)."""
    try:
        if data.startswith(NEW_MAGIC):
            return _parse_new(data, 0, prefixes)
        if data.startswith(OLD_MAGIC):
            return _parse_old(data, prefixes)
    except (ValueError, struct.error) as exc:
        raise GpuSetupError("unreadable ld.so.cache: {}".format(exc), hint="regenerate it with ldconfig") from None
    raise GpuSetupError("not an ld.so.cache (unknown magic {!r})".format(data[:20]), hint="regenerate it with ldconfig")


def read(path: str, prefixes: Optional[Tuple[bytes, ...]] = None) -> List[CacheEntry]:
    """Parse the cache at ``path``; a missing or unreadable file is a :class:`GpuSetupError`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise GpuSetupError(
            "cannot read the dynamic linker cache {}: {}".format(path, exc.strerror or exc),
            hint="run ldconfig (with -r ROOT for a driver root) so that the driver's libraries are indexed",
        ) from None
    try:
        return parse(data, prefixes)
    except GpuSetupError as error:
        raise GpuSetupError("{}: {}".format(path, error.message), error.hint) from None
