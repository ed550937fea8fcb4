"""CUDA forward compatibility (issue #11, item 3): the ld cache hook puts an image's
``/usr/local/cuda/compat`` first when its ``libcuda.so.<version>`` is a regular ELF shared object
of a newer driver branch than the host's, reading it only through O_NOFOLLOW from the root's fd;
anything else leaves the container as it is."""

import os
import shutil
import subprocess
import time

import pytest

from nvdocker_setup.driver import compat, ldcache
from nvdocker_setup.hook import main as hook_main
from tests.hook.test_hook_links import snapshot

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
COMPAT_DIR = compat.COMPAT_DIR
HOST_VERSION = "550.54.14"
CONF = "etc/ld.so.conf.d/" + hook_main.LD_CONF_NAME


def hook_args(root, version=HOST_VERSION, ldconfig="/sbin/ldconfig"):
    return ["update-ldcache", "--ldconfig", ldconfig, "--rootfs", str(root), "--folder", LIB_DIR,
            "--cuda-compat-dir", COMPAT_DIR, "--host-driver-version", version]


def stub_library(path, soname="libcuda.so.1", extra=("-shared", "-fPIC")):
    """A real ELF object (a shared object by default) with ``soname``."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build a stub libcuda")
    source = str(path) + ".c"
    with open(source, "w") as handle:
        handle.write("int cuInit(unsigned int flags) { return (int)flags; }\nint main(void) { return 0; }\n")
    subprocess.run(["gcc"] + list(extra) + ["-Wl,-soname," + soname, "-o", str(path), source], check=True)
    os.unlink(source)


@pytest.fixture
def rootfs(tmp_path, driver_root):
    """A container root with the host's driver libraries where the runtime mounts them and an
    empty ``/usr/local/cuda/compat``."""
    root = tmp_path / "rootfs"
    lib = root / LIB_DIR.lstrip("/")
    lib.mkdir(parents=True)
    for container_path in driver_root.libraries.values():
        shutil.copy2(driver_root.host(container_path), str(lib))
    (root / COMPAT_DIR.lstrip("/")).mkdir(parents=True)
    return root


def compat_path(root):
    return root / COMPAT_DIR.lstrip("/")


def conf_folders(root):
    return [line for line in (root / CONF).read_text().splitlines() if not line.startswith("#")]


def libcuda_in_cache(root):
    """The directories of ``libcuda.so.1`` in the container's ld cache, in the cache's order (the
    loader takes the first)."""
    return [os.path.dirname(e.path) for e in ldcache.read(str(root / "etc/ld.so.cache")) if e.name == "libcuda.so.1"]


# -- the rule --------------------------------------------------------------------------------------------


def test_versions_are_numeric_tuples_and_only_a_newer_branch_counts():
    assert compat.parse_version("550.54.14") == (550, 54, 14)
    assert compat.parse_version("600.1") == (600, 1)
    for bad in ("1", "", "550", "550.x", "550..1", "-1.2", "550.54.14.1.2", "5" * 40 + ".1", "٥٥٠.1", " 550.1"):
        assert compat.parse_version(bad) is None, bad
    host = (550, 54, 14)
    assert compat.uses_compat((600, 1), host) and compat.uses_compat((551, 0), host)
    # numeric, not textual: 1000 > 550 although "1000" < "550"
    assert compat.uses_compat((1000, 1), host)
    for older_or_same_branch in ((550, 54, 14), (550, 100), (550, 54, 15), (500, 1), (99, 999)):
        assert not compat.uses_compat(older_or_same_branch, host)


# -- what it does ----------------------------------------------------------------------------------------


def test_a_newer_compat_library_puts_the_compat_dir_first_in_conf_and_cache(run_hook, rootfs):
    stub_library(compat_path(rootfs) / "libcuda.so.600.1")
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [COMPAT_DIR, LIB_DIR]
    # the hook's ldconfig run indexed it, ahead of the host driver's libcuda.so.1
    assert libcuda_in_cache(rootfs) == [COMPAT_DIR, LIB_DIR]


def test_control_without_the_compat_step_the_host_driver_comes_first(run_hook, rootfs):
    stub_library(compat_path(rootfs) / "libcuda.so.600.1")
    done = run_hook(hook_args(rootfs)[:-4])
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]
    assert libcuda_in_cache(rootfs) == [LIB_DIR]


@pytest.mark.parametrize("name", ["libcuda.so.500.1", "libcuda.so.550.54.14", "libcuda.so.550.100.1"])
def test_an_older_equal_or_same_branch_compat_library_changes_nothing(run_hook, rootfs, name):
    stub_library(compat_path(rootfs) / name)
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]
    assert libcuda_in_cache(rootfs) == [LIB_DIR]


def test_a_missing_compat_dir_changes_nothing(rootfs):
    compat_path(rootfs).rmdir()
    assert hook_main.cuda_compat_dir_in(str(rootfs), COMPAT_DIR, (550, 54, 14)) is None
    assert not compat_path(rootfs).exists()


def test_the_newest_of_several_is_taken_and_a_real_one_beside_decoys_counts(rootfs):
    stub_library(compat_path(rootfs) / "libcuda.so.600.1")
    (compat_path(rootfs) / "libcuda.so.700.1").write_bytes(b"not ELF at all")
    os.symlink("libcuda.so.600.1", str(compat_path(rootfs) / "libcuda.so.999.1"))
    fd = os.open(str(compat_path(rootfs)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert compat.compat_library_in(fd, (550, 54, 14)) == ("libcuda.so.600.1", (600, 1))
    finally:
        os.close(fd)


# -- what an image planted ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["usr/local", "usr/local/cuda", "usr/local/cuda/compat"])
def test_a_compat_dir_that_is_a_symlink_to_a_host_dir_is_left_alone_and_nothing_is_read_there(
        run_hook, tmp_path, rootfs, where, monkeypatch):
    host = tmp_path / "host"
    rest = os.path.relpath(COMPAT_DIR.lstrip("/"), where)
    (host / rest).mkdir(parents=True)
    stub_library(host / rest / "libcuda.so.600.1")  # would qualify if it were followed
    before = snapshot(host)
    shutil.rmtree(str(rootfs / where))
    os.symlink(str(host), str(rootfs / where))

    touched = []
    real_open, real_stat, real_scandir = os.open, os.stat, os.scandir

    def where_of(name, dir_fd):
        base = os.readlink("/proc/self/fd/{}".format(dir_fd)) if isinstance(dir_fd, int) else ""
        return os.path.join(base, name) if isinstance(name, str) else os.readlink("/proc/self/fd/{}".format(name))

    def spy_open(name, flags, mode=0o777, *, dir_fd=None):
        touched.append(where_of(name, dir_fd))
        return real_open(name, flags, mode, dir_fd=dir_fd)

    def spy_stat(name, *, dir_fd=None, follow_symlinks=True):
        touched.append(where_of(name, dir_fd))
        return real_stat(name, dir_fd=dir_fd, follow_symlinks=follow_symlinks)

    def spy_scandir(path="."):
        touched.append(where_of(path, None))
        return real_scandir(path)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "stat", spy_stat)
    monkeypatch.setattr(os, "scandir", spy_scandir)
    try:
        found = hook_main.cuda_compat_dir_in(str(rootfs), COMPAT_DIR, (550, 54, 14))
    finally:
        monkeypatch.undo()
    assert found is None
    assert touched and not [path for path in touched if path.startswith(str(host))]
    # and the whole hook: the conf has no compat line, the host directory is byte-identical
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]
    assert snapshot(host) == before


@pytest.mark.parametrize("target", ["in_container", "on_host"])
def test_a_compat_library_that_is_a_symlink_is_ignored(run_hook, tmp_path, rootfs, target):
    if target == "in_container":
        stub_library(compat_path(rootfs) / "real.so")
        os.symlink("real.so", str(compat_path(rootfs) / "libcuda.so.999.1"))
    else:
        stub_library(tmp_path / "host-libcuda.so")
        os.symlink(str(tmp_path / "host-libcuda.so"), str(compat_path(rootfs) / "libcuda.so.999.1"))
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]


@pytest.mark.parametrize("content", [b"not an ELF file\n", b"\x7fELF", b"", b"\x7fELF\x02\x01" + b"\0" * 58])
def test_a_compat_library_that_is_not_an_elf_shared_object_is_ignored(run_hook, rootfs, content):
    (compat_path(rootfs) / "libcuda.so.600.1").write_bytes(content)
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]


def test_an_elf_executable_is_not_a_shared_object(run_hook, rootfs):
    stub_library(compat_path(rootfs) / "libcuda.so.600.1", extra=("-no-pie",))
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_odd_files_under_the_name_neither_block_nor_count(run_hook, rootfs, kind):
    path = str(compat_path(rootfs) / "libcuda.so.600.1")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        os.mkdir(path)
    else:
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # /dev/null's numbers
    started = time.monotonic()
    done = run_hook(hook_args(rootfs), timeout=20)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert conf_folders(rootfs) == [LIB_DIR]


def test_the_scan_is_bounded(rootfs, monkeypatch):
    for index in range(compat.MAX_ENTRIES * 3):
        (compat_path(rootfs) / "libcuda.so.600.{}".format(index)).write_bytes(b"x")
    read = []
    real = compat._read_library
    monkeypatch.setattr(compat, "_read_library", lambda fd, name: read.append(name) or real(fd, name))
    fd = os.open(str(compat_path(rootfs)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert compat.compat_library_in(fd, (550, 54, 14)) is None
    finally:
        os.close(fd)
    assert 0 < len(read) <= compat.MAX_ENTRIES


# -- the options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["--cuda-compat-dir", COMPAT_DIR],
    ["--host-driver-version", HOST_VERSION],
    ["--cuda-compat-dir", "usr/local/cuda/compat", "--host-driver-version", HOST_VERSION],
    ["--cuda-compat-dir", "/usr/local/../../etc", "--host-driver-version", HOST_VERSION],
    ["--cuda-compat-dir", COMPAT_DIR, "--host-driver-version", "550"],
    ["--cuda-compat-dir", COMPAT_DIR, "--host-driver-version", "9" * 5000 + ".1"],
])
def test_bad_compat_options_are_one_line_and_exit_1(run_hook, rootfs, args):
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(rootfs), "--folder", LIB_DIR] + args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and len(done.stderr) < 400
    assert not (rootfs / CONF).exists()


# -- NVIDIA's forward-compatibility note (.note.cuda.fwd_compatibility) --------------------------------------


def noted_library(path, description, owner="NVIDIA Corporation", bits=64):
    """A shared object with a ``.note.cuda.fwd_compatibility`` note as NVIDIA's compat libcuda
    carries (owner, then a JSON description), built by gcc from assembly."""
    def asm_string(data):
        return "".join("\\\\{:03o}".format(byte) for byte in data)

    description_bytes = description.encode() + b"\0"
    owner_bytes = owner.encode() + b"\0"
    note = (".section .note.cuda.fwd_compatibility,\\\"a\\\",@note\\n.balign 4\\n.long {}\\n.long {}\\n.long 1\\n"
            ".ascii \\\"{}\\\"\\n.balign 4\\n.ascii \\\"{}\\\"\\n.balign 4\\n.previous\\n").format(
                len(owner_bytes), len(description_bytes), asm_string(owner_bytes), asm_string(description_bytes))
    source = str(path) + ".c"
    with open(source, "w") as handle:
        handle.write('__asm__("{}");\nint cuInit(unsigned int flags) {{ return (int)flags; }}\n'.format(note))
    extra = ["-m32"] if bits == 32 else []
    done = subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(path), source] + extra,
                          stderr=subprocess.PIPE, universal_newlines=True)
    os.unlink(source)
    assert done.returncode == 0, done.stderr


def readelf_note(path):
    return subprocess.run(["readelf", "-p", ".note.cuda.fwd_compatibility", str(path)], stdout=subprocess.PIPE,
                          universal_newlines=True).stdout


NOTE = '{"format":1,"CUDA version":"13.1","driver":[535,550,570,575,580,590],"device":[1,2,7,8,9]}'


def test_the_note_is_read_as_nvidias_hook_reads_it(tmp_path):
    noted_library(tmp_path / "libcuda.so.590.44.01", NOTE)
    assert '"driver":[535,550,570' in readelf_note(tmp_path / "libcuda.so.590.44.01")  # a real note, as readelf sees it
    fd = os.open(str(tmp_path / "libcuda.so.590.44.01"), os.O_RDONLY)
    try:
        assert compat.note_branches(fd, os.pread(fd, 64, 0)) == [535, 550, 570, 575, 580, 590]
    finally:
        os.close(fd)


@pytest.mark.parametrize("name, note, used", [
    # the note lists the host's branch (550): used, a newer build of the host's own branch included
    ("libcuda.so.590.44.01", NOTE, True),
    ("libcuda.so.550.100.1", '{"driver":[550]}', True),
    # the note leaves the host's branch out: not used, though the major rule would have
    ("libcuda.so.590.44.01", '{"driver":[570,575,580,590]}', False),
    ("libcuda.so.590.44.01", '{"driver":[]}', False),
    # no usable note (another owner, no driver list, malformed): the major-version rule decides
    ("libcuda.so.590.44.01", '{"CUDA version":"13.1"}', True),
    ("libcuda.so.550.100.1", '{"driver":[535,550,}', False),
])
def test_the_notes_driver_branches_decide_when_the_library_has_them(run_hook, rootfs, name, note, used):
    noted_library(compat_path(rootfs) / name, note)
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == ([COMPAT_DIR, LIB_DIR] if used else [LIB_DIR])


def test_a_note_of_another_owner_counts_as_none(run_hook, rootfs):
    noted_library(compat_path(rootfs) / "libcuda.so.550.100.1", '{"driver":[550]}', owner="Someone Else")
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [LIB_DIR]  # the major rule: same branch, not used


@pytest.mark.parametrize("damage", ["section_table_offset", "section_count", "names_index", "note_size"])
def test_a_damaged_elf_never_breaks_the_hook(run_hook, rootfs, damage):
    path = compat_path(rootfs) / "libcuda.so.590.44.01"
    noted_library(path, NOTE)
    data = bytearray(path.read_bytes())
    if damage == "section_table_offset":
        data[0x28:0x30] = (0x7FFFFFFFFFFFFFF0).to_bytes(8, "little")
    elif damage == "section_count":
        data[0x3C:0x3E] = (65535).to_bytes(2, "little")
    elif damage == "names_index":
        data[0x3E:0x40] = (65534).to_bytes(2, "little")
    else:  # every section's size huge
        shoff = int.from_bytes(data[0x28:0x30], "little")
        count = int.from_bytes(data[0x3C:0x3E], "little")
        for index in range(count):
            base = shoff + index * 64 + 32
            data[base:base + 8] = (1 << 40).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    done = run_hook(hook_args(rootfs))
    assert done.returncode == 0, done.stderr
    assert conf_folders(rootfs) == [COMPAT_DIR, LIB_DIR]  # no usable note: the major rule, 590 > 550
