"""The C ld cache hook (launcher/ldcache-hook.c) beyond what tests/hook runs against both
implementations: its parsers fuzzed differentially against the Python hook's under the
sanitizers, its deadline on ldconfig, and the runtime choosing it."""

import os
import random
import shutil
import subprocess
import time

import pytest

from nvdocker_setup.driver import compat, links
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.hook.main import _encodable, parse_dri_links
from tests.support.hooks import REPO, SANITIZE_CFLAGS, HookRunner, build_launcher

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
#: Bytes the parsers care about, and some they must pass through untouched.
ALPHABET = [b"a", b"Z", b"0", b"9", b".", b"/", b":", b"::", b"..", b"-", b"\x7f", b"\x80", b"\xc3\xa9",
            b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff", b"\x01", b" ", b"\\", b"\xe2\x82", b"libcuda.so."]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the fuzz harness") if os.environ.get("CI") == "true" else pytest.skip("no gcc")
    out = str(tmp_path_factory.mktemp("fuzz") / "fuzz_hook_args")
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror"] + SANITIZE_CFLAGS.split()
                   + ["-I", os.path.join(REPO, "launcher"), "-o", out,
                      os.path.join(REPO, "tests/hook/fuzz_hook_args.c"), os.path.join(REPO, "launcher/ldcache-hook.c")],
                   check=True)
    return out


def python_verdict(kind, raw):
    text = os.fsdecode(raw)
    if kind == "link":
        parsed = links.parse_link(text)
        return "-" if parsed is None else " ".join(os.fsencode(part).hex() for part in parsed)
    if kind == "dri":
        try:
            ((node, name),) = parse_dri_links([text])
        except GpuSetupError:
            return "-"
        return "{} {}".format(os.fsencode(node).hex(), os.fsencode(name).hex())
    if kind == "note":
        branches = compat.parse_driver_branches(raw)
        return "-" if branches is None else ",".join(str(branch) for branch in branches)
    if kind == "version":
        parsed = compat.parse_version(text)
        return "-" if parsed is None else ".".join(str(part) for part in parsed)
    if kind == "dir":
        return str(int(links.is_plain_directory(text)))
    if kind == "utf8":
        return str(int(_encodable(text)))
    return str(int(compat.is_elf_shared_object(raw)))


def corpus(seed, count):
    rng = random.Random(seed)
    cases = [
        ("link", b"libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"), ("link", b"a::/b/c"), ("link", b"::/b/c"),
        ("link", b"a::b/c"), ("link", b"a::/c"), ("link", b"../x::/b/c"), ("link", b"a::/b/.."), ("link", b"a::/b//c"),
        ("link", b"a:::/b/c"), ("link", b"x" * 255 + b"::/d/n"), ("link", b"x" * 256 + b"::/d/n"),
        ("dir", b"/" + b"d" * 255), ("dir", b"/" + b"d" * 256), ("dir", b"/" + b"/".join([b"d" * 200] * 5) + b"/dd"),
        ("dir", (b"/" + b"e" * 100) * 10 + b"/" + b"e" * 13), ("dir", (b"/" + b"\xc3\xa9" * 50) * 10 + b"/" + b"x" * 14),
        ("dir", b"/"), ("dir", b"//"), ("dir", b"/a/"), ("dir", b"/a/./b"),
        ("version", b"550.54.14"), ("version", b"1.2.3.4"), ("version", b"1.2.3.4.5"), ("version", b"550"),
        ("version", b"12345678.1"), ("version", b"123456789.1"), ("version", b"1..2"), ("version", b".1.2"),
        ("version", b"1.2."), ("version", b"\xd9\xa1.2"), ("version", b"+1.2"), ("version", b" 1.2"), ("version", b"1.2" + b"0" * 30),
        ("note", b'{"format":1,"CUDA version":"13.1","driver":[535,550,570,575,580,590],"device":[1,2,7]}'),
        ("note", b'{"Driver": [ 535 , 550 ]}'), ("note", b'{"DRIVER":[]}'), ("note", b'{"driver":"x","driver":[1]}'),
        ("note", b'{"driver":[1,]}'), ("note", b'{"driver":[1234567890]}'), ("note", b'{"driver":[' + b"1," * 64 + b'1]}'),
        ("note", b'{"driver":[' + b"1," * 63 + b'1]}'), ("note", b'"driver"\x00:[1]'), ("note", b'{"driver":[1 2]}'),
        ("dri", b"card1::pci-0000:01:00.0-card"), ("dri", b"renderD128::pci-0000:01:00.0-render"), ("dri", b"card::x"),
        ("dri", b"card12345678::x"), ("dri", b"renderD::x"), ("dri", b"render1::x"), ("dri", b"card1::a/b"), ("dri", b"card1::.."),
        ("dri", b"card1:::x"), ("dri", b"card1::a::b"), ("dri", b"cardx::y"), ("dri", b"card\xd9\xa1::y"),
        ("elf", b"\x7fELF\x02\x01" + b"\0" * 10 + b"\x03\x00"), ("elf", b"\x7fELF\x02\x02" + b"\0" * 10 + b"\x00\x03"),
        ("elf", b"\x7fELF\x02\x01" + b"\0" * 10 + b"\x02\x00"), ("elf", b"\x7fELF\x03\x01" + b"\0" * 10 + b"\x03\x00"),
        ("elf", b"\x7fELF\x01\x01" + b"\0" * 9 + b"\x03\x00"),
    ]
    cases += [("utf8", case) for case in (b"\xc0\x80", b"\xe0\x80\x80", b"\xed\x9f\xbf", b"\xed\xa0\x80", b"\xf4\x8f\xbf\xbf",
                                          b"\xf4\x90\x80\x80", b"\xc3", b"\xc3\xa9", b"\xf0\x9f\x98\x80")]
    for _ in range(count):
        kind = rng.choice(["link", "link", "dir", "version", "utf8", "elf", "dri", "note"])
        if kind == "elf":  # a valid ET_DYN header of either class and byte order, then mutated
            order = rng.choice([1, 2])
            header = bytearray(b"\x7fELF" + bytes([rng.choice([1, 2]), order]) + bytes(58))
            header[16:18] = (3).to_bytes(2, "little" if order == 1 else "big")
            for _ in range(rng.choice([0, 0, 1, 2])):
                header[rng.randrange(0, 18)] = rng.choice([0, 1, 2, 3, 0x7f, rng.randrange(256)])
            raw = bytes(header[:rng.choice([64, 64, 18, 17, rng.randrange(0, 64)])])
        elif kind == "note":
            raw = b"".join(rng.choice([b'"driver"', b'"Driver"', b'"drivers"', b":", b"[", b"]", b",", b" ", b"\n", b"535",
                                       b"1234567890", b"-1", b"{", b"}", b'"x"', b"\x00", b"\t"])
                           for _ in range(rng.randrange(0, 16)))
        elif kind == "dri":
            raw = rng.choice([b"card", b"renderD", b"render", b"", b"cardD"]) + b"".join(
                rng.choice([b"0", b"1", b"9", b"12345", b"x", b":", b"::", b"/", b".", b"..", b"\xc3\xa9", b"\xd9\xa1"])
                for _ in range(rng.randrange(0, 10)))
        elif kind == "version":
            raw = b"".join(rng.choice([b"0", b"1", b"9", b"12", b"550", b"12345678", b".", b".", b"a", b"\xd9\xa1", b"-"])
                           for _ in range(rng.randrange(0, 12)))
        else:
            raw = b"".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40)))
            if kind in ("link", "dir") and rng.random() < 0.7:
                raw = (b"t" + raw if kind == "link" else raw) + (b"::/usr/lib" + raw if kind == "link" else b"")
                raw = raw if kind == "link" else b"/" + raw
        cases.append((kind, raw))
    return cases


def test_the_c_parsers_agree_with_the_python_hook_on_a_fuzzed_corpus(harness):
    binary = ("elf", "note")  # length-delimited in the harness: they keep their NULs
    cases = [(kind, raw) for kind, raw in corpus(20261207, 20000) if b"\0" not in raw or kind in binary]
    lines = "".join("{} {}\n".format(kind, raw.hex()) for kind, raw in cases)
    done = subprocess.run([harness], input=lines, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = done.stdout.splitlines()
    assert len(got) == len(cases)
    wrong = [(kind, raw, c, python_verdict(kind, raw)) for (kind, raw), c in zip(cases, got) if c != python_verdict(kind, raw)]
    assert not wrong, wrong[:10]


@pytest.fixture(scope="module")
def short_deadline_hook(tmp_path_factory):
    return HookRunner("native", {"native": build_launcher(tmp_path_factory.mktemp("deadline"), "-DLDCONFIG_DEADLINE_S=1")})


def test_an_ldconfig_past_its_deadline_is_killed_and_the_hook_fails_in_one_line(short_deadline_hook, tmp_path):
    fake = tmp_path / "ldconfig"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    os.chmod(str(fake), 0o755)
    root = tmp_path / "root"
    root.mkdir()
    started = time.monotonic()
    done = short_deadline_hook(["update-ldcache", "--ldconfig", str(fake), "--rootfs", str(root), "--folder", LIB_DIR], timeout=20)
    assert time.monotonic() - started < 10
    assert done.returncode == 1 and "did not finish within 1 s and was killed" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1
