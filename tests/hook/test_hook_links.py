"""The ld cache hook's ``--link`` (issue #14, item 2): the host's library links (``libcuda.so ->
libcuda.so.1``) in the container, made with ``symlinkat`` in directories reached with O_NOFOLLOW
from the root, never through what the image planted."""

import hashlib
import json
import os
import shutil
import stat

import pytest

from nvdocker_setup.driver import ldcache
from nvdocker_setup.driver.links import MAX_LINKS, format_link, parse_link
from nvdocker_setup.hook import main as hook_main

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
VERSION = "550.54.14"
#: What the runtime passes for utility,compute on the simulated driver root.
LINKS = [
    ("libcuda.so.1", LIB_DIR, "libcuda.so"),
    ("libcuda.so." + VERSION, LIB_DIR, "libcuda.so.1"),
    ("libnvidia-ml.so.1", LIB_DIR, "libnvidia-ml.so"),
    ("libnvidia-ml.so." + VERSION, LIB_DIR, "libnvidia-ml.so.1"),
]


def link_args(links=LINKS):
    args = []
    for target, directory, name in links:
        args += ["--link", format_link(target, directory, name)]
    return args


@pytest.fixture
def rootfs(tmp_path, driver_root):
    """A container root with the versioned driver files where the runtime mounts them, no links."""
    root = tmp_path / "bundle" / "rootfs"
    lib = root / LIB_DIR.lstrip("/")
    lib.mkdir(parents=True)
    for container_path in driver_root.libraries.values():
        shutil.copy2(driver_root.host(container_path), str(lib))
    with open(str(tmp_path / "bundle" / "config.json"), "w") as handle:
        json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": []}}, handle)
    return root


def snapshot(top):
    """{path: what it is} under ``top``, not following links (files by content)."""
    found = {}
    for base, dirs, files in os.walk(str(top)):
        for name in dirs + files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                found[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    found[path] = ("file", hashlib.sha256(handle.read()).hexdigest())
            else:
                found[path] = ("other", stat.S_IFMT(info.st_mode))
    return found


# -- the links, and ldconfig indexing them -----------------------------------------------------------


def test_links_are_created_before_ldconfig_so_the_cache_lists_libcuda_so(run_hook, rootfs):
    done = run_hook(["update-ldcache", "--ldconfig", "/sbin/ldconfig", "--rootfs", str(rootfs), "--folder", LIB_DIR] + link_args())
    assert done.returncode == 0, done.stderr
    lib = rootfs / LIB_DIR.lstrip("/")
    assert os.readlink(str(lib / "libcuda.so")) == "libcuda.so.1"
    assert os.readlink(str(lib / "libnvidia-ml.so")) == "libnvidia-ml.so.1"
    assert os.readlink(str(lib / "libcuda.so.1")) == "libcuda.so." + VERSION
    entries = {e.name: e.path for e in ldcache.read(str(rootfs / "etc/ld.so.cache"))}
    # one ldconfig run indexes the development links too, as on the host
    assert entries["libcuda.so"] == LIB_DIR + "/libcuda.so" and entries["libnvidia-ml.so"] == LIB_DIR + "/libnvidia-ml.so"


def test_links_from_a_cdi_hook_use_the_root_from_the_state(run_hook, rootfs):
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": str(rootfs.parent)})
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--folder", LIB_DIR] + link_args(), stdin=state)
    assert done.returncode == 0, done.stderr
    assert os.readlink(str(rootfs / LIB_DIR.lstrip("/") / "libcuda.so")) == "libcuda.so.1"


def test_the_same_link_twice_is_no_error(rootfs):
    assert hook_main.create_links_in(str(rootfs), LINKS) == len(LINKS)
    assert hook_main.create_links_in(str(rootfs), LINKS) == 0


def test_a_missing_directory_is_not_created(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert hook_main.create_links_in(str(root), LINKS) == 0
    assert os.listdir(str(root)) == []


# -- what an image planted ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["usr", "usr/lib", "usr/lib/x86_64-linux-gnu"])
def test_a_library_directory_that_is_a_symlink_to_the_host_gets_nothing(tmp_path, where):
    host = tmp_path / "host" / "lib"
    rest = os.path.relpath(LIB_DIR.lstrip("/"), where)  # what a path walk would follow on the host side
    (host / rest).mkdir(parents=True)
    (host / "keep").write_text("host file\n")
    before = snapshot(tmp_path / "host")
    root = tmp_path / "root"
    link = root / where
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(str(host), str(link))
    assert hook_main.create_links_in(str(root), LINKS) == 0
    assert snapshot(tmp_path / "host") == before


def test_the_whole_hook_with_a_symlinked_library_directory_leaves_the_host_alone(run_hook, tmp_path):
    host = tmp_path / "host-lib"
    host.mkdir()
    (host / "libcuda.so.1").write_text("not a library\n")
    before = snapshot(host)
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink(str(host), str(root / LIB_DIR.lstrip("/")))
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(root), "--folder", LIB_DIR] + link_args())
    assert done.returncode == 0, done.stderr
    assert snapshot(host) == before


@pytest.mark.parametrize("kind", ["symlink_to_host_file", "dangling_symlink_to_host", "directory", "fifo", "file", "device"])
def test_whatever_the_image_has_under_the_name_is_left_alone_unopened(run_hook, tmp_path, kind):
    host = tmp_path / "host"
    host.mkdir()
    (host / "sentinel").write_text("host file, must not change\n")
    root = tmp_path / "root"
    lib = root / LIB_DIR.lstrip("/")
    lib.mkdir(parents=True)
    name = lib / "libcuda.so"
    if kind == "symlink_to_host_file":
        os.symlink(str(host / "sentinel"), str(name))
    elif kind == "dangling_symlink_to_host":
        os.symlink(str(host / "created-through-the-link"), str(name))
    elif kind == "directory":
        name.mkdir()
        (name / "keep").write_text("x")
    elif kind == "fifo":
        os.mkfifo(str(name))
    elif kind == "file":
        name.write_text("the image's own\n")
    else:
        os.mknod(str(name), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    before_host, before_root = snapshot(host), snapshot(root)
    # a process with a timeout: opening a FIFO would block forever
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(root), "--folder", LIB_DIR,
                     "--link", format_link("libcuda.so.1", LIB_DIR, "libcuda.so")], timeout=20)
    assert done.returncode == 0, done.stderr
    assert snapshot(host) == before_host
    after = snapshot(root)
    conf = str(root / "etc" / "ld.so.conf.d" / "00-nvdocker.conf")
    assert {path: what for path, what in after.items() if not path.startswith(str(root / "etc"))} == before_root
    assert conf in after


# -- bounded, checked arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "libcuda.so.1",  # no separator
        "::" + LIB_DIR + "/libcuda.so",  # empty target
        "../../etc/passwd::" + LIB_DIR + "/libcuda.so",
        "/etc/passwd::" + LIB_DIR + "/libcuda.so",
        "sub/libcuda.so.1::" + LIB_DIR + "/libcuda.so",
        "..::" + LIB_DIR + "/libcuda.so",
        "libcuda.so.1::" + LIB_DIR + "/..",
        "libcuda.so.1::" + LIB_DIR + "/",
        "libcuda.so.1::/usr/lib/../../etc/libcuda.so",
        "libcuda.so.1::usr/lib/libcuda.so",
        "libcuda.so.1::/libcuda.so",
        "libcuda.so.1::/usr//lib/libcuda.so",
        "libcuda.so.1::/usr/./lib/libcuda.so",
        "x" * 256 + "::" + LIB_DIR + "/libcuda.so",
        "libcuda.so.1::" + LIB_DIR + "/" + "y" * 256,
        "libcuda.so.1::/" + "d/" * 600 + "libcuda.so",
    ],
)
def test_bad_link_values_are_refused_before_anything_is_made(run_hook, rootfs, value):
    assert parse_link(value) is None
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(rootfs), "--folder", LIB_DIR, "--link", value])
    assert done.returncode == 1 and "--link must be TARGET::/absolute/dir/NAME" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr) < 2500
    assert not (rootfs / "etc").exists()


def test_a_name_the_file_system_cannot_encode_is_a_clean_error():
    """(argv cannot carry one; parsed values are checked all the same)"""
    with pytest.raises(hook_main.GpuSetupError, match="--link must be"):
        hook_main.parse_links(["libcuda.so.1::" + LIB_DIR + "/\ud800"])


def test_a_nul_in_a_link_is_refused():
    assert parse_link("libcuda.so.1\0x::" + LIB_DIR + "/libcuda.so") is None
    assert parse_link("libcuda.so.1::" + LIB_DIR + "/libcuda.so\0") is None


def test_format_and_parse_round_trip():
    assert parse_link(format_link("libcuda.so.1", LIB_DIR, "libcuda.so")) == ("libcuda.so.1", LIB_DIR, "libcuda.so")


def test_too_many_links_are_refused(run_hook, rootfs):
    links = [("t", LIB_DIR, "n{}".format(index)) for index in range(MAX_LINKS + 1)]
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(rootfs), "--folder", LIB_DIR] + link_args(links))
    assert done.returncode == 1 and "{} --link options; at most {} are accepted".format(MAX_LINKS + 1, MAX_LINKS) in done.stderr
    assert not os.path.lexists(str(rootfs / LIB_DIR.lstrip("/") / "n0"))


def test_links_are_never_made_in_the_host_root(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("links made with the host root")

    monkeypatch.setattr(hook_main, "create_links_in", forbidden)
    with pytest.raises(hook_main.GpuSetupError, match="host's root directory"):
        hook_main.update_ldcache(["--rootfs", "/", "--folder", LIB_DIR] + link_args(), None)


# -- /dev/dri/by-path links (--dri-link NODE::NAME, issue #20) -------------------------------------------

DRI = ["--dri-link", "card1::pci-0000:3b:00.0-card", "--dri-link", "renderD128::pci-0000:3b:00.0-render"]


def dri_root(tmp_path):
    root = tmp_path / "root"
    (root / "dev" / "dri").mkdir(parents=True)
    return root


def test_dri_links_are_made_in_by_path(run_hook, tmp_path):
    root = dri_root(tmp_path)
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/false", "--rootfs", str(root)] + DRI)
    assert done.returncode == 0, done.stderr  # no --folder: links only, ldconfig never runs
    by_path = root / "dev" / "dri" / "by-path"
    assert sorted(os.listdir(str(by_path))) == ["pci-0000:3b:00.0-card", "pci-0000:3b:00.0-render"]
    assert os.readlink(str(by_path / "pci-0000:3b:00.0-card")) == "../card1"
    assert os.readlink(str(by_path / "pci-0000:3b:00.0-render")) == "../renderD128"


@pytest.mark.parametrize("where", ["dev", "dri", "by-path"])
def test_dri_links_never_go_through_an_images_symlink(run_hook, tmp_path, where):
    host = tmp_path / "host"
    host.mkdir()
    root = tmp_path / "root"
    parent = {"dev": root, "dri": root / "dev", "by-path": root / "dev" / "dri"}[where]
    parent.mkdir(parents=True)
    os.symlink(str(host), str(parent / where))
    done = run_hook(["update-ldcache", "--rootfs", str(root)] + DRI)
    assert done.returncode == 0, done.stderr
    assert os.listdir(str(host)) == []


def test_no_dev_dri_means_no_links_and_no_error(run_hook, tmp_path):
    (tmp_path / "root" / "dev").mkdir(parents=True)
    done = run_hook(["update-ldcache", "--rootfs", str(tmp_path / "root")] + DRI)
    assert done.returncode == 0, done.stderr
    assert os.listdir(str(tmp_path / "root" / "dev")) == []


def test_what_the_image_has_under_a_dri_link_name_stays(run_hook, tmp_path):
    root = dri_root(tmp_path)
    by_path = root / "dev" / "dri" / "by-path"
    by_path.mkdir()
    os.symlink("/etc/shadow", str(by_path / "pci-0000:3b:00.0-card"))
    done = run_hook(["update-ldcache", "--rootfs", str(root)] + DRI)
    assert done.returncode == 0, done.stderr
    assert os.readlink(str(by_path / "pci-0000:3b:00.0-card")) == "/etc/shadow"
    assert os.readlink(str(by_path / "pci-0000:3b:00.0-render")) == "../renderD128"


@pytest.mark.parametrize("value", ["card1", "card::x", "card1::a/b", "card1::..", "render1::x", "card1/..::x",
                                   "../../etc::x", "renderD12345678::x", "card1::"])
def test_bad_dri_links_are_refused_before_anything_is_made(run_hook, tmp_path, value):
    root = dri_root(tmp_path)
    done = run_hook(["update-ldcache", "--rootfs", str(root), "--dri-link", value])
    assert done.returncode == 1 and "--dri-link must be" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert os.listdir(str(root / "dev" / "dri")) == []
