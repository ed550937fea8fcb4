"""The ld.so.cache reader against caches written by the real ldconfig, and synthetic ones."""

import os
import struct
import subprocess

import pytest

from nvdocker_setup.driver import ldcache
from nvdocker_setup.driver.errors import GpuSetupError


def ldconfig_listing(cache: str):
    """``ldconfig -p -C CACHE`` as {(name, path)}: the reference our parser must agree with."""
    out = subprocess.run(["ldconfig", "-p", "-C", cache], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    pairs = set()
    for line in out.splitlines()[1:]:
        if "=>" not in line:
            continue
        left, path = line.split("=>")
        pairs.add((left.strip().split(" (")[0], path.strip()))
    return pairs


def test_reads_the_cache_ldconfig_wrote_for_the_simulated_root(driver_root):
    cache = os.path.join(driver_root.path, "etc/ld.so.cache")
    entries = ldcache.read(cache)
    assert {(e.name, e.path) for e in entries} == ldconfig_listing(cache)
    by_name = {e.name: e for e in entries}
    assert by_name["libcuda.so.1"].path == "/usr/lib/x86_64-linux-gnu/libcuda.so.1"
    assert all(e.word_size == 64 and e.is_glibc_elf for e in entries)


@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_every_format_ldconfig_can_write(driver_root, fmt):
    inside = "/etc/ld.so.cache.test-" + fmt  # -C is a path inside the root with -r
    subprocess.run(["ldconfig", "-r", driver_root.path, "-c", fmt, "-C", inside], check=True, stderr=subprocess.DEVNULL)
    written = os.path.join(driver_root.path, inside.lstrip("/"))
    try:
        entries = ldcache.read(written)
        assert {(e.name, e.path) for e in entries} == ldconfig_listing(written)
        assert "libcuda.so.1" in {e.name for e in entries}
    finally:
        os.unlink(written)


def test_the_hosts_own_cache_matches_ldconfig_p():
    if not os.path.exists("/etc/ld.so.cache"):
        pytest.skip("no /etc/ld.so.cache")
    assert {(e.name, e.path) for e in ldcache.read("/etc/ld.so.cache")} == ldconfig_listing("/etc/ld.so.cache")


def test_prefixes_skip_other_libraries_unread(driver_root):
    cache = os.path.join(driver_root.path, "etc/ld.so.cache")
    names = [e.name for e in ldcache.read(cache, (b"libcuda.so", b"libnvidia-ml.so"))]
    # the development links (libcuda.so) are in the cache as well, like on a real host
    assert sorted(names) == ["libcuda.so", "libcuda.so.1", "libnvidia-ml.so", "libnvidia-ml.so.1"]


def synthetic_cache(entries, endian="<"):
    """A new-format cache: (name, path, flags) triples; strings after the entries."""
    strings = b""
    offsets = []
    header_size = 48 + 24 * len(entries)
    for name, path, _ in entries:
        name_at = header_size + len(strings)
        strings += name.encode() + b"\0"
        path_at = header_size + len(strings)
        strings += path.encode() + b"\0"
        offsets.append((name_at, path_at))
    flag_byte = 2 if endian == "<" else 3
    header = ldcache.NEW_MAGIC + struct.pack(endian + "II", len(entries), len(strings)) + bytes([flag_byte, 0, 0,
            0]) + struct.pack(endian + "IIII", 0, 0, 0, 0)
    body = b"".join(struct.pack(endian + "iIIIQ", flags, n, p, 0, 0) for (n, p), (_, _, flags) in zip(offsets, entries))
    return header + body + strings


def test_32_and_64_bit_entries_are_told_apart_and_big_endian_is_read():
    entries = [
        ("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", 0x0303),
        ("libcuda.so.1", "/usr/lib/i386-linux-gnu/libcuda.so.1", 0x0003),
        ("libcuda.so.1", "/usr/lib/aarch64-linux-gnu/libcuda.so.1", 0x0A03),
    ]
    for endian in ("<", ">"):
        parsed = ldcache.parse(synthetic_cache(entries, endian))
        assert [(e.path, e.word_size) for e in parsed] == [(p, 64 if "i386" not in p else 32) for _, p, _ in entries]


@pytest.mark.parametrize(
    "data",
    [b"", b"not a cache at all", ldcache.NEW_MAGIC + b"\x05", ldcache.NEW_MAGIC + struct.pack("<II", 1000, 0) + b"\x02" + bytes(27)],
)
def test_garbage_is_a_clear_error(data):
    with pytest.raises(GpuSetupError) as caught:
        ldcache.parse(data)
    assert "ldconfig" in caught.value.hint


def test_a_string_offset_outside_the_file_is_an_error():
    data = bytearray(synthetic_cache([("libcuda.so.1", "/x", 0x0303)]))
    struct.pack_into("<I", data, 48 + 4, 10 ** 6)  # key offset of entry 0
    with pytest.raises(GpuSetupError):
        ldcache.parse(bytes(data))


def test_a_missing_cache_says_to_run_ldconfig(tmp_path):
    with pytest.raises(GpuSetupError) as caught:
        ldcache.read(str(tmp_path / "ld.so.cache"))
    assert "ldconfig" in caught.value.hint and "cannot read" in caught.value.message
