"""Hostile images on NVIDIA's real driver files (issue #20; Debian 12's 535.261.03 packages in the
Debian layout of tests/support/real_driver.py, with its absolute update-alternatives links) through
our runtime: a private dockerd 20.10 whose ``nvidia`` runtime is the C launcher (real runtime: runc),
the hook on its PATH as ``nvidia-container-runtime-hook``, ``NVDOCKER_DRIVER_ROOT`` = the fixture's
``debian/`` root. The approach of tests/runtime/test_hook_escape_e2e.py (whose payload helpers this
reuses), on the real driver instead of the simulated one.

Every image has in its ENV an ``LD_PRELOAD`` (relative and absolute host path), ``LD_AUDIT`` and
``LD_LIBRARY_PATH`` payload whose code, run by any host process, creates a marker file in a host
dir; the payload is first shown to be live in the interpreter our hook runs on. And each image has
where we mount or write -- ``/usr/lib/x86_64-linux-gnu``, ``/etc/ld.so.cache``, ``/etc/ld.so.conf.d``,
``/usr/bin/nvidia-smi``, ``/etc/alternatives`` -- a symlink to a host path (a scratch dir, the
driver fixture's own files, the path itself) or an odd file (directory, fifo, regular file).

For every image: no host file changes (the scratch dirs, the fixture's whole ``debian/`` tree, the
host's ``/etc/ld.so.cache``, ``/etc/ld.so.conf.d`` and nvidia/cuda names in its library dir and
``/usr/bin``), no marker, and the container either starts with the GPUs or fails cleanly (an error
message, no traceback, in seconds). The busybox images are quick; one Debian 12 image (the cached
debootstrap tree) whose alternatives links lead into the fixture on the host shows the real
``nvidia-smi`` and ``libcuda.so.1`` still work under the hostile environment. At the end, the
fixture's files are byte for byte what they were.
"""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from tests.runtime.test_hook_escape_e2e import compile_evil, expat_symbols, import_image, needs_expat, tiny_rootfs
from tests.support.real_driver import VERSION, real_driver_or_skip
from tests.support.sandbox import dockerd_or_skip, gpu_sandbox

pytestmark = pytest.mark.dockerd

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUEST = ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all"]
DEBIAN_IMAGE = "hostile-debian:real-driver"
CUINIT = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("dlopen failed: %s\n", dlerror()); return 2; }
    int (*cu_init)(unsigned int) = (int (*)(unsigned int))dlsym(cuda, "cuInit");
    if (!cu_init) { printf("no cuInit\n"); return 3; }
    printf("cuInit=%d\n", cu_init(0));
    return 0;
}
"""
#: What a busybox container prints: the GPUs, where libcuda.so.1 leads, what nvidia-smi and our conf are.
PROBE = ("ls /dev; echo ---; readlink {lib}/libcuda.so.1; echo ---; stat -c %F /usr/bin/nvidia-smi; echo ---; "
         "cat /etc/ld.so.conf.d/00-nvdocker.conf; true").format(lib=LIB_DIR)


def signature(paths):
    """{path: what it is} of files and directories, recursively, links not followed: a regular file's
    mode, size, inode, mtime and ctime (any write or chmod changes them), its sha256 when small; a
    link's target and inode (a link replaced by rename is another inode); a directory's entries and
    mtime (an entry added, removed or renamed over)."""
    found = {}
    for top in paths:
        if not os.path.lexists(top):
            found[top] = ("absent",)
            continue
        is_dir = os.path.isdir(top) and not os.path.islink(top)
        walked = os.walk(top) if is_dir else [(os.path.dirname(top), [], [os.path.basename(top)])]
        for base, dirs, files in walked:
            if is_dir:
                info = os.lstat(base)
                found[base] = ("dir", tuple(sorted(dirs + files)), info.st_mode, info.st_mtime_ns)
            for name in files + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
                path = os.path.join(base, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    digest = None
                    if info.st_size <= 1 << 20:
                        with open(path, "rb") as handle:
                            digest = hashlib.sha256(handle.read()).hexdigest()
                    found[path] = ("file", info.st_mode, info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, digest)
                elif stat.S_ISLNK(info.st_mode):
                    found[path] = ("link", os.readlink(path), info.st_ino)
                else:
                    found[path] = ("other", info.st_mode, info.st_rdev, info.st_ino)
    return found


def names_like_ours(directory):
    """The entries of a big host dir a runtime that followed an image's link would add."""
    try:
        return sorted(n for n in os.listdir(directory) if any(w in n.lower() for w in ("nvidia", "cuda", "nvdocker", "nvcuvid")))
    except OSError:
        return None


def content_digest(root):
    """sha256 over every file of a tree (paths, link targets, modes, bytes): the end-of-module check."""
    digest = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(base, d))]):
            path = os.path.join(base, name)
            info = os.lstat(path)
            digest.update("{}\0{:o}\0".format(os.path.relpath(path, root), info.st_mode).encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            else:
                digest.update(str(info.st_rdev).encode())
    return digest.hexdigest()


class Lab:
    def __init__(self, sandbox, work, driver, marker, host, python, cuinit):
        self.sandbox = sandbox
        self.work = work
        self.driver = driver
        self.root = driver.debian
        self.marker = marker  # host dir where a payload that ran leaves its file
        self.host = host  # host dir the images' links point into
        self.python = python
        self.cuinit = cuinit
        self.fixture_digest = None
        self.images = {}  # name -> (image, host dir)

    def markers(self):
        return sorted(os.listdir(self.marker))

    def watched(self):
        return [self.host, self.root, "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d"]

    def snapshot(self):
        return (signature(self.watched()), names_like_ours(LIB_DIR), names_like_ours("/usr/bin"),
                os.path.lexists("/usr/bin/nvidia-smi"))

    def run(self, *args, timeout=90.0):
        started = time.monotonic()
        done = self.sandbox.docker("run", "--rm", "--network", "none", *args, check=False, timeout=timeout)
        return done, time.monotonic() - started


def plant_payloads(rootfs, host, marker, python):
    """The payload files in an image rootfs (and one in ``host``); the image ENV that points at them."""
    shutil.move(compile_evil(rootfs, "preload-relative", marker), os.path.join(rootfs, "evil.so"))
    shutil.move(compile_evil(rootfs, "audit", marker), os.path.join(rootfs, "audit.so"))
    absolute = os.path.join(host, "evil-absolute.so")
    if not os.path.exists(absolute):
        shutil.move(compile_evil(host, "preload-absolute", marker), absolute)
    lib = os.path.join(rootfs, "evil-lib")
    os.makedirs(lib)
    built = compile_evil(lib, "library-path", marker, soname="libexpat.so.1", extra_symbols=expat_symbols(python))
    os.rename(built, os.path.join(lib, "libexpat.so.1"))
    return ["LD_PRELOAD=./evil.so:" + absolute, "LD_AUDIT=./audit.so", "LD_LIBRARY_PATH=./evil-lib"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, launcher):
    dockerd_or_skip()
    driver = real_driver_or_skip()
    for tool in ("gcc", "nm", "readelf", "tar"):
        assert shutil.which(tool), tool + " is needed to build the payloads"
    work = str(tmp_path_factory.mktemp("hostile"))
    os.chmod(work, 0o755)
    marker, host = os.path.join(work, "marker"), os.path.join(work, "host")
    for directory in (marker, host):
        os.makedirs(directory)
        os.chmod(directory, 0o777)
    cuinit = os.path.join(work, "cuinit")
    with open(cuinit + ".c", "w") as handle:
        handle.write(CUINIT)
    subprocess.run(["gcc", "-O2", "-o", cuinit, cuinit + ".c", "-ldl"], check=True)
    sandbox = gpu_sandbox(work, launcher, driver.debian, gpus_hook=True)
    lab = Lab(sandbox, work, driver, marker, host, os.path.realpath(sys.executable), cuinit)
    lab.fixture_digest = content_digest(driver.debian)
    sandbox.start()
    try:
        assert "nvidia" in sandbox.info()["Runtimes"]
        yield lab
    finally:
        sandbox.close()


def test_the_payload_is_live_in_the_hooks_interpreter(lab):
    """Control: the host interpreter, started as our hook is (``-I -S``) with an image's environment and
    its rootfs as working directory (what runc gives a hook without env), runs every payload."""
    rootfs = tiny_rootfs(os.path.join(lab.work, "live"))
    env = dict(entry.split("=", 1) for entry in [PATH_ENV] + plant_payloads(rootfs, lab.host, lab.marker, lab.python))
    subprocess.run([lab.python, "-I", "-S", "-c", "pass"], env=env, cwd=rootfs, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
    ran = {name.split(".")[1] for name in lab.markers()}
    wanted = {"preload-relative", "preload-absolute", "audit"} | ({"library-path"} if needs_expat(lab.python) else set())
    assert wanted <= ran, "a payload did not run: the tests below would prove nothing ({})".format(sorted(ran))
    for name in lab.markers():
        os.unlink(os.path.join(lab.marker, name))


def hostile_image(lab, name):
    """A busybox image with the payloads and, where we mount or write, what ``name`` says; the host
    dir its links point into (built once)."""
    if name not in lab.images:
        lab.images[name] = _build_hostile_image(lab, name)
    return lab.images[name]


def _build_hostile_image(lab, name):
    rootfs = tiny_rootfs(os.path.join(lab.work, "image-" + name))
    env = plant_payloads(rootfs, lab.host, lab.marker, lab.python)
    host = os.path.join(lab.host, name)
    os.makedirs(os.path.join(host, "lib"))
    os.makedirs(os.path.join(host, "conf.d"))
    sentinel = os.path.join(host, "sentinel")
    with open(sentinel, "w") as handle:
        handle.write("host file, must not change\n")
    shutil.copy2(sentinel, os.path.join(host, "lib", "keep"))
    shutil.copy2(sentinel, os.path.join(host, "conf.d", "keep.conf"))

    def at(path):
        inside = os.path.join(rootfs, path.lstrip("/"))
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        return inside

    root = lab.root
    lib, cache, conf_d, smi = at(LIB_DIR), at("/etc/ld.so.cache"), at("/etc/ld.so.conf.d"), at("/usr/bin/nvidia-smi")
    if name == "lib_dir_links_to_a_host_dir":
        os.symlink(os.path.join(host, "lib"), lib)
    elif name == "lib_dir_links_to_the_drivers":
        os.symlink(os.path.join(root, LIB_DIR.lstrip("/"), "nvidia/current"), lib)
    elif name == "lib_dir_links_to_itself":
        os.symlink(LIB_DIR, lib)
    elif name == "lib_dir_is_a_file":
        shutil.copy2(sentinel, lib)
    elif name == "ld_cache_links_to_the_drivers":
        os.symlink(os.path.join(root, "etc/ld.so.cache"), cache)
    elif name == "ld_cache_links_to_a_host_file":
        os.symlink(sentinel, cache)
    elif name == "ld_cache_is_a_directory":
        os.makedirs(os.path.join(cache, "keep"))
    elif name == "ld_cache_is_a_fifo":
        os.mkfifo(cache)
    elif name == "ld_conf_d_links_to_the_drivers":
        os.symlink(os.path.join(root, "etc/ld.so.conf.d"), conf_d)
    elif name == "ld_conf_d_links_to_a_host_dir":
        os.symlink(os.path.join(host, "conf.d"), conf_d)
    elif name == "ld_conf_d_is_a_file":
        shutil.copy2(sentinel, conf_d)
    elif name == "nvidia_smi_links_to_the_drivers":
        os.symlink(os.path.join(root, "usr/lib/nvidia/current/nvidia-smi"), smi)
    elif name == "nvidia_smi_links_to_a_host_file":
        os.symlink(sentinel, smi)
    elif name == "nvidia_smi_through_alternatives_to_the_driver":
        # Debian's own chain, as in the fixture, with the image's /etc/alternatives the fixture's dir
        os.symlink("/etc/alternatives/nvidia--nvidia-smi", smi)
        os.symlink(os.path.join(root, "etc/alternatives"), at("/etc/alternatives"))
    elif name == "nvidia_smi_is_a_directory":
        os.makedirs(os.path.join(smi, "keep"))
    elif name == "nvidia_smi_is_a_fifo":
        os.mkfifo(smi)
    elif name == "everything_links_to_the_driver":
        os.symlink(os.path.join(root, LIB_DIR.lstrip("/"), "nvidia/current"), lib)
        os.symlink(os.path.join(root, "etc/ld.so.cache"), cache)
        os.symlink(os.path.join(root, "etc/ld.so.conf.d"), conf_d)
        os.symlink("/etc/alternatives/nvidia--nvidia-smi", smi)
        os.symlink(os.path.join(root, "etc/alternatives"), at("/etc/alternatives"))
    else:
        raise AssertionError(name)
    image = import_image(lab.sandbox, rootfs, "hostile-{}:latest".format(name.replace("_", "-")), env + REQUEST)
    return image, host


#: image -> the container path it makes hostile. Links (to a host dir or file, to the fixture's own
#: files, through /etc/alternatives) must not stop the container: runc resolves them inside the
#: rootfs. An odd file (or a link loop) where we mount or where ldconfig renames its cache may stop
#: it, with an error that names the path (seen: a directory /etc/ld.so.cache, a regular file or a
#: loop for the library dir, a directory nvidia-smi).
NAMES = {
    "lib_dir_links_to_a_host_dir": LIB_DIR,
    "lib_dir_links_to_the_drivers": LIB_DIR,
    "lib_dir_links_to_itself": LIB_DIR,
    "lib_dir_is_a_file": LIB_DIR,
    "ld_cache_links_to_the_drivers": "/etc/ld.so.cache",
    "ld_cache_links_to_a_host_file": "/etc/ld.so.cache",
    "ld_cache_is_a_directory": "/etc/ld.so.cache",
    "ld_cache_is_a_fifo": "/etc/ld.so.cache",
    "ld_conf_d_links_to_the_drivers": "/etc/ld.so.conf.d",
    "ld_conf_d_links_to_a_host_dir": "/etc/ld.so.conf.d",
    "ld_conf_d_is_a_file": "/etc/ld.so.conf.d",
    "nvidia_smi_links_to_the_drivers": "/usr/bin/nvidia-smi",
    "nvidia_smi_links_to_a_host_file": "/usr/bin/nvidia-smi",
    "nvidia_smi_through_alternatives_to_the_driver": "/usr/bin/nvidia-smi",
    "nvidia_smi_is_a_directory": "/usr/bin/nvidia-smi",
    "nvidia_smi_is_a_fifo": "/usr/bin/nvidia-smi",
    "everything_links_to_the_driver": LIB_DIR,
}
MAY_FAIL = {"lib_dir_links_to_itself", "lib_dir_is_a_file", "ld_cache_is_a_directory", "nvidia_smi_is_a_directory"}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_a_hostile_image_changes_nothing_on_the_host(lab, name):
    image, _ = hostile_image(lab, name)
    before = lab.snapshot()
    done, took = lab.run("--runtime", "nvidia", image, "sh", "-c", PROBE)
    after = lab.snapshot()
    assert after == before, "host files changed: {}".format(sorted(
        k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k))[:20] or after[1:])
    assert lab.markers() == [], "code from the image ran on the host: {}".format(lab.markers())
    assert took < 30, "docker run took {:.1f} s".format(took)
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    if done.returncode != 0:
        # a clean refusal: runc's or our hook's message naming the hostile path, nothing half-done
        assert name in MAY_FAIL, "{} did not start: {}".format(name, err[-1500:])
        assert NAMES[name] in err, err[-1500:]
        return
    sections = done.stdout.decode().split("---\n")
    assert {"nvidia0", "nvidia1", "nvidiactl"} <= set(sections[0].split()), sections[0]
    # the ld cache hook made its links in the image's library dir, wherever that leads inside the rootfs
    assert sections[1].strip() == "libcuda.so." + VERSION, (name, sections[1])


@pytest.mark.parametrize("name", ["ld_cache_links_to_the_drivers", "nvidia_smi_through_alternatives_to_the_driver"])
def test_the_same_images_under_plain_runc(lab, name):
    """Control: no GPU runtime, the image runs untouched and the host is untouched."""
    image, _ = hostile_image(lab, name)
    before = lab.snapshot()
    done, _ = lab.run("--runtime", "runc", image, "true")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert lab.snapshot() == before and lab.markers() == []


@pytest.fixture(scope="module")
def debian_image(lab):
    """Debian 12 (the cached debootstrap tree) with the payloads in its ENV and /evil.so, /audit.so in
    it, and the Debian alternatives chain of the driver pointing at the fixture's host paths:
    ``/usr/bin/nvidia-smi -> /etc/alternatives/nvidia--nvidia-smi -> <fixture>/usr/lib/nvidia/current/
    nvidia-smi``, the same for ``libcuda.so.1`` and ``libnvidia-ml.so.1``; ``/etc/ld.so.cache`` a link
    to the fixture's cache."""
    from tests.packaging.support import cache_dir, pristine_tarball

    with open(str(pristine_tarball(cache_dir())), "rb") as handle:
        lab.sandbox.docker("import", "-", "bookworm:pristine", input=handle.read(), timeout=600)
    stage = os.path.join(lab.work, "debian-stage")
    os.makedirs(stage)
    os.chmod(stage, 0o755)
    env = plant_payloads(stage, lab.host, lab.marker, lab.python)
    root = lab.root
    alternatives = {
        "nvidia--nvidia-smi": (os.path.join(root, "usr/lib/nvidia/current/nvidia-smi"), "/usr/bin/nvidia-smi"),
        "nvidia--libcuda.so.1-x86_64-linux-gnu": (os.path.join(root, LIB_DIR.lstrip("/"), "nvidia/current/libcuda.so.1"),
                                                  LIB_DIR + "/libcuda.so.1"),
        "nvidia--libnvidia-ml.so.1-x86_64-linux-gnu": (os.path.join(root, LIB_DIR.lstrip("/"), "nvidia/current/libnvidia-ml.so.1"),
                                                       LIB_DIR + "/libnvidia-ml.so.1"),
    }
    script = ["cp -a /stage/evil.so /stage/audit.so /stage/evil-lib /"]
    for name, (target, link) in alternatives.items():
        script.append("ln -sfn {} /etc/alternatives/{}".format(target, name))
        script.append("ln -sfn /etc/alternatives/{} {}".format(name, link))
    script.append("rm -f /etc/ld.so.cache && ln -s {} /etc/ld.so.cache".format(os.path.join(root, "etc/ld.so.cache")))
    lab.sandbox.docker("run", "--name", "hostile-debian-prep", "--network", "none", "-v", stage + ":/stage:ro",
                       "bookworm:pristine", "sh", "-c", " && ".join(script), timeout=120)
    changes = []
    for entry in [PATH_ENV] + env + REQUEST:
        changes += ["--change", "ENV " + entry]
    lab.sandbox.docker("commit", *changes, "hostile-debian-prep", DEBIAN_IMAGE, timeout=120)
    lab.sandbox.docker("rm", "hostile-debian-prep")
    return DEBIAN_IMAGE


def test_the_real_driver_still_works_in_a_hostile_debian_image(lab, debian_image):
    before = lab.snapshot()
    script = ("echo smi-path=$(command -v nvidia-smi); nvidia-smi; echo smi-rc=$?; /cuinit; echo cuinit-rc=$?; "
              "ldconfig -p | grep -E 'libcuda.so.1 |libnvidia-ml.so.1 '; readlink -f {lib}/libcuda.so.1; "
              "readlink /etc/ld.so.cache; true").format(lib=LIB_DIR)
    done, took = lab.run("--runtime", "nvidia", "-v", "{}:/cuinit:ro".format(lab.cuinit), debian_image, "sh", "-c", script)
    assert lab.snapshot() == before
    assert lab.markers() == [], "code from the image ran on the host: {}".format(lab.markers())
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert took < 30, "docker run took {:.1f} s".format(took)
    lines = out.splitlines()
    assert lines[0] == "smi-path=/usr/bin/nvidia-smi", out
    assert "couldn't communicate with the NVIDIA driver" in out and "smi-rc=9" in lines, out
    assert "cuinit-rc=0" in lines and [line for line in lines if line.startswith("cuInit=") and line != "cuInit=0"], out
    assert "{}/libcuda.so.{}".format(LIB_DIR, VERSION) in lines, out  # our link replaced the image's chain
    cache = {line.split()[0] for line in lines if "=>" in line}
    assert {"libcuda.so.1", "libnvidia-ml.so.1"} <= cache, out


def test_the_real_driver_files_are_byte_for_byte_the_same(lab):
    """Last: every file of the fixture's Debian layout, bytes and links, as before the first image."""
    assert content_digest(lab.root) == lab.fixture_digest
    assert lab.markers() == []
