"""Container escape through our hooks, tried for real (issue #9, items 1 and 7).

runc runs a ``createContainer`` hook from ``runc init`` after the container's environment has been
applied and with the container's rootfs as working directory, before pivot_root: a hook entry
without ``env`` starts the host's ``python3`` with the image's ``LD_PRELOAD``/``LD_AUDIT``/
``LD_LIBRARY_PATH`` in effect, and the host's dynamic loader runs the image's code as root on the
host (the class of NVIDIA's CVE-2025-23266). Here images plant such payloads, each a shared object
(or Python file) that creates a marker file at an absolute host path; the marker appearing on the
host is the escape. Every payload is first shown to be live (it does create its marker when the
hook's interpreter is started with the image's environment), so "no marker" means something.

Also: rootfs symlinks at every path we mount or write pointing at host paths, and non-regular
files where the hook writes; host files must stay byte for byte the same. The same images under
plain runc are the controls.

A private dockerd 20.10 whose ``nvidia`` runtime is the C launcher (real runtime: runc), the hook on
its PATH as ``nvidia-container-runtime-hook`` (so ``--gpus`` is registered), on the simulated
2-GPU driver root.
"""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from tests.support.sandbox import dockerd_or_skip, gpu_sandbox

pytestmark = pytest.mark.dockerd

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
BUSYBOX_COMMANDS = ("sh", "ls", "cat", "true", "readlink", "stat", "test")

EVIL_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static void mark(const char *how)
{
	char path[4096], exe[1024] = "?";
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0)
		exe[n] = '\0';
	snprintf(path, sizeof(path), "%s/pwned.%s.%s.%d", MARKER_DIR, TAG, how, (int)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dprintf(fd, "%s %s\n", TAG, exe);
		close(fd);
	}
}

__attribute__((constructor)) static void evil_init(void) { mark("ctor"); }

/* LD_AUDIT: the loader calls this first */
unsigned int la_version(unsigned int version) { mark("audit"); return version; }
"""

PYTHON_PAYLOAD = (
    "import posix\n"
    "posix.close(posix.open({marker!r} + '/pwned.' + {tag!r} + '.py.' + str(posix.getpid()), "
    "posix.O_WRONLY | posix.O_CREAT, 0o644))\n"
)


class Variant:
    """An image environment that would run code in a host process started with it."""

    def __init__(self, name, env, live_args=None, cwd_in_image=True):
        self.name = name
        self.env = env  # the image's ENV (besides PATH and the GPU request)
        self.live_args = live_args  # interpreter flags under which the payload is shown to be live
        self.cwd_in_image = cwd_in_image


#: {marker} is the host marker dir, {host} a host dir holding a planted copy of evil.so.
VARIANTS = [
    Variant("ld_preload_relative", ["LD_PRELOAD=./evil.so"], ["-I", "-S"]),
    Variant("ld_preload_absolute", ["LD_PRELOAD={host}/evil.so"], ["-I", "-S"]),
    Variant("ld_audit", ["LD_AUDIT=./evil.so"], ["-I", "-S"]),
    Variant("ld_library_path", ["LD_LIBRARY_PATH=./evil-lib"], ["-I", "-S"]),
    # -I ignores these; shown live for an interpreter started without -I (-S only)
    Variant("pythonpath", ["PYTHONPATH=./py", "PYTHONSTARTUP=./startup.py"], ["-S"]),
    Variant("pythonhome", ["PYTHONHOME=./home"], ["-S"]),
    # the interpreter's locale set-up loads a converter from GCONV_PATH
    Variant("gconv_path", ["GCONV_PATH=./gconv", "CHARSET=EVIL", "LC_ALL=C.UTF-8"], ["-I", "-S"]),
]


def compile_evil(directory, tag, marker, soname=None, extra_symbols=()):
    source = os.path.join(directory, "evil-{}.c".format(tag))
    with open(source, "w") as handle:
        handle.write(EVIL_C)
        for symbol in extra_symbols:  # a stand-in for a library the interpreter links
            handle.write("void {}(void) {{}}\n".format(symbol))
    output = os.path.join(directory, "evil-{}.so".format(tag))
    argv = ["gcc", "-shared", "-fPIC", "-o", output, source,
            '-DMARKER_DIR="{}"'.format(marker), '-DTAG="{}"'.format(tag)]
    if soname:
        argv.append("-Wl,-soname," + soname)
    subprocess.run(argv, check=True)
    os.unlink(source)
    return output


def expat_symbols(python):
    """The libexpat functions the hook's interpreter imports (a planted libexpat.so.1 must define them)."""
    listing = subprocess.run(["nm", "-D", "--undefined-only", python], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
    return sorted({line.split()[-1].split("@")[0] for line in listing.splitlines() if line.split()[-1].startswith("XML_")})


def needs_expat(python):
    listing = subprocess.run(["readelf", "-d", python], stdout=subprocess.PIPE, universal_newlines=True).stdout
    return "[libexpat.so.1]" in listing


def tiny_rootfs(directory):
    os.makedirs(os.path.join(directory, "bin"))
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(directory, "bin", "busybox"))
    for command in BUSYBOX_COMMANDS:
        os.symlink("busybox", os.path.join(directory, "bin", command))
    os.makedirs(os.path.join(directory, "tmp"))
    return directory


def import_image(sandbox, rootfs, tag, env):
    tar = subprocess.run(["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE, check=True).stdout
    changes = []
    for entry in [PATH_ENV] + list(env):
        changes += ["--change", "ENV " + entry]
    sandbox.docker("import", *changes, "-", tag, input=tar)
    return tag


def hashes_of(paths):
    """{path: (kind, sha256 or listing)} of host files and directories, recursively, not following links."""
    found = {}
    for top in paths:
        walked = os.walk(top) if os.path.isdir(top) and not os.path.islink(top) else [(os.path.dirname(top), [], [os.path.basename(top)])]
        for base, dirs, files in walked:
            found[base] = ("dir", tuple(sorted(dirs + files)))
            for name in files:
                path = os.path.join(base, name)
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode):
                    with open(path, "rb") as handle:
                        found[path] = ("file", stat.S_IMODE(info.st_mode), hashlib.sha256(handle.read()).hexdigest())
                elif stat.S_ISLNK(info.st_mode):
                    found[path] = ("link", os.readlink(path))
                else:
                    found[path] = ("other", info.st_mode)
    return found


class EscapeLab:
    def __init__(self, sandbox, work, marker, host, python, driver_root):
        self.sandbox = sandbox
        self.work = work
        self.marker = marker  # host dir where a payload that ran leaves its file
        self.host = host  # host dir with files a symlink in an image points at
        self.python = python  # the interpreter our hook runs on
        self.driver_root = driver_root
        self.images = {}  # variant name -> rootfs dir (kept for the live check)

    def markers(self):
        return sorted(os.listdir(self.marker))

    def clear_markers(self):
        for name in os.listdir(self.marker):
            os.unlink(os.path.join(self.marker, name))

    def run(self, *args, timeout=60.0):
        started = time.monotonic()
        done = self.sandbox.docker("run", "--rm", "--network", "none", *args, check=False, timeout=timeout)
        return done, time.monotonic() - started

    def variant_env(self, variant):
        return [entry.format(marker=self.marker, host=self.host) for entry in variant.env]


def plant(rootfs, name, lab_marker, lab_host, python):
    """The payload files of variant ``name`` in an image rootfs."""
    if name in ("ld_preload_relative", "ld_audit"):
        shutil.copy2(compile_evil(rootfs, name, lab_marker), os.path.join(rootfs, "evil.so"))
        os.unlink(os.path.join(rootfs, "evil-{}.so".format(name)))
    elif name == "ld_preload_absolute":
        shutil.move(compile_evil(lab_host, name, lab_marker), os.path.join(lab_host, "evil.so"))
    elif name == "ld_library_path":
        lib = os.path.join(rootfs, "evil-lib")
        os.makedirs(lib)
        built = compile_evil(lib, name, lab_marker, soname="libexpat.so.1", extra_symbols=expat_symbols(python))
        os.rename(built, os.path.join(lib, "libexpat.so.1"))
    elif name in ("pythonpath", "pythonhome"):
        version = "python{}.{}".format(*sys.version_info[:2])
        package = os.path.join(rootfs, "py", "encodings") if name == "pythonpath" else os.path.join(rootfs, "home",
                "lib", version, "encodings")
        os.makedirs(package)
        payload = PYTHON_PAYLOAD.format(marker=lab_marker, tag=name)
        for path in (os.path.join(package, "__init__.py"), os.path.join(rootfs, "startup.py")):
            with open(path, "w") as handle:
                handle.write(payload)
    elif name == "gconv_path":
        gconv = os.path.join(rootfs, "gconv")
        os.makedirs(gconv)
        os.rename(compile_evil(gconv, name, lab_marker), os.path.join(gconv, "EVIL.so"))
        with open(os.path.join(gconv, "gconv-modules"), "w") as handle:
            handle.write("module INTERNAL EVIL// EVIL 1\nmodule EVIL// INTERNAL EVIL 1\nalias UTF-8// EVIL//\n")


class SlashRoot:
    """The production shape's driver root `/` (tests/support/production.py) as the tests see it from
    outside its mount namespace: a path ``p`` of that host is ``/proc/<dockerd>/root/p`` here."""

    path = "/"

    def __init__(self, production):
        self.production = production
        self.version = production.sim.version
        self.smi_listing = production.sim.smi_listing

    def host(self, container_path):
        return "/proc/{}/root/{}".format(self.production.pid, container_path.lstrip("/"))


@pytest.fixture(scope="module", params=["temp-root", "driver-root-slash"])
def lab(request, tmp_path_factory, driver_root, launcher):
    """One private dockerd whose nvidia runtime is our launcher: on a simulated driver root in a temp
    dir, and (issue #19) at driver root `/` in the production shape, where the hostile images must
    hold just the same."""
    dockerd_or_skip()
    for tool in ("gcc", "nm", "readelf", "tar"):
        assert shutil.which(tool), tool + " is needed to build the payloads"
    production = None
    if request.param == "driver-root-slash":
        from tests.support.production import production_host

        production = production_host()
        work = os.path.join(production.work, "escape")  # outside /tmp: the namespace has its own
        os.makedirs(work, mode=0o755)
        sandbox, root = production.sandbox, SlashRoot(production)
    else:
        work = str(tmp_path_factory.mktemp("escape"))
        os.chmod(work, 0o755)
        sandbox, root = gpu_sandbox(work, launcher, driver_root.path, gpus_hook=True), driver_root
    marker = os.path.join(work, "marker")
    host = os.path.join(work, "host")
    for directory in (marker, host):
        os.makedirs(directory, mode=0o777)
        os.chmod(directory, 0o777)
    try:
        if production is None:
            sandbox.start()
        assert "nvidia" in sandbox.info()["Runtimes"]
        python = os.path.realpath(sys.executable)  # what the hook runs on: the runtime's interpreter
        lab = EscapeLab(sandbox, work, marker, host, python, root)
        for variant in VARIANTS:
            rootfs = tiny_rootfs(os.path.join(work, "image-" + variant.name))
            plant(rootfs, variant.name, marker, host, python)
            env = lab.variant_env(variant)
            import_image(sandbox, rootfs, "esc-{}:env".format(variant.name.replace("_", "-")), env + ["NVIDIA_VISIBLE_DEVICES=all"])
            import_image(sandbox, rootfs, "esc-{}:plain".format(variant.name.replace("_", "-")), env)
            lab.images[variant.name] = rootfs
        yield lab
    finally:
        if production is not None:
            production.close()
            shutil.rmtree(production.work, ignore_errors=True)
        else:
            sandbox.close()


def tag(variant, kind):
    return "esc-{}:{}".format(variant.name.replace("_", "-"), kind)


LIVE = [v for v in VARIANTS if v.live_args]


@pytest.mark.parametrize("variant", LIVE, ids=[v.name for v in LIVE])
def test_the_payload_is_live_in_the_hooks_interpreter(lab, variant):
    """Control: the host interpreter, started the way the hook is, with the image's environment and
    the rootfs as working directory (what runc gives a hook that has no env), runs the payload."""
    if variant.name == "ld_library_path" and not needs_expat(lab.python):
        pytest.skip("this interpreter does not link libexpat.so.1")
    lab.clear_markers()
    env = dict(entry.split("=", 1) for entry in [PATH_ENV] + lab.variant_env(variant))
    subprocess.run([lab.python] + variant.live_args + ["-c", "pass"], env=env, cwd=lab.images[variant.name],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    assert [m for m in lab.markers() if variant.name in m], "the payload did not run: the escape tests would prove nothing"
    lab.clear_markers()


@pytest.mark.parametrize("request_by", ["env", "gpus"])
@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_image_environment_never_reaches_a_host_process(lab, variant, request_by):
    lab.clear_markers()
    script = "ls /dev; readlink {}/libcuda.so.1".format(LIB_DIR)
    if request_by == "env":
        done, _ = lab.run("--runtime", "nvidia", tag(variant, "env"), "sh", "-c", script)
    else:
        done, _ = lab.run("--runtime", "nvidia", "--gpus", "all", tag(variant, "plain"), "sh", "-c", script)
    escaped = lab.markers()
    assert escaped == [], "code from the image ran on the host: {}".format(escaped)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode()
    assert "nvidia0" in out.split() and "libcuda.so." + lab.driver_root.version in out  # the GPU and the ld hook worked


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_control_the_same_images_under_plain_runc(lab, variant):
    lab.clear_markers()
    done, _ = lab.run("--runtime", "runc", tag(variant, "env"), "true")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    if shutil.which("nvidia-container-cli", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") is None:
        # dockerd's --gpus prestart hook is ours under runc: it refuses, with the fix
        done, _ = lab.run("--runtime", "runc", "--gpus", "all", tag(variant, "plain"), "true")
        assert done.returncode != 0 and b"--default-runtime" in done.stderr
    assert lab.markers() == []


# -- the rootfs points at the host where we mount or write ---------------------------------------------


def layout(lab, name):
    """An image rootfs whose paths we touch are links to host paths (or odd files); the host paths."""
    rootfs = tiny_rootfs(os.path.join(lab.work, "links-" + name))
    host = os.path.join(lab.host, name)
    os.makedirs(host)
    sentinel = os.path.join(host, "sentinel")
    with open(sentinel, "w") as handle:
        handle.write("host file, must not change\n")
    etc = os.path.join(rootfs, "etc")
    if name == "etc_is_a_link":
        os.makedirs(os.path.join(host, "etc", "ld.so.conf.d"))
        shutil.copy2(sentinel, os.path.join(host, "etc", "ld.so.cache"))
        os.symlink(os.path.join(host, "etc"), etc)
    elif name == "paths_are_links":
        os.makedirs(os.path.join(host, "conf.d"))
        os.makedirs(os.path.join(host, "lib"))
        shutil.copy2(sentinel, os.path.join(host, "lib", "keep"))
        os.makedirs(etc)
        os.symlink(os.path.join(host, "conf.d"), os.path.join(etc, "ld.so.conf.d"))
        # the driver root's cache as a path of the host the runtime runs on (at `/`: the host's own)
        os.symlink(os.path.join(lab.driver_root.path, "etc/ld.so.cache"), os.path.join(etc, "ld.so.cache"))
        os.makedirs(os.path.join(rootfs, "usr", "lib"))
        os.symlink(os.path.join(host, "lib"), os.path.join(rootfs, LIB_DIR.lstrip("/")))
        os.makedirs(os.path.join(rootfs, "usr", "bin"))
        os.symlink(sentinel, os.path.join(rootfs, "usr", "bin", "nvidia-smi"))
    elif name == "conf_is_a_link":
        os.makedirs(os.path.join(etc, "ld.so.conf.d"))
        os.symlink(sentinel, os.path.join(etc, "ld.so.conf.d", "00-nvdocker.conf"))
    elif name == "conf_is_a_directory":
        os.makedirs(os.path.join(etc, "ld.so.conf.d", "00-nvdocker.conf"))
    elif name == "conf_is_a_fifo":
        os.makedirs(os.path.join(etc, "ld.so.conf.d"))
        os.mkfifo(os.path.join(etc, "ld.so.conf.d", "00-nvdocker.conf"))
    elif name == "conf_is_a_device":
        os.makedirs(os.path.join(etc, "ld.so.conf.d"))
        os.mknod(os.path.join(etc, "ld.so.conf.d", "00-nvdocker.conf"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return rootfs, host


LAYOUTS = ["etc_is_a_link", "paths_are_links", "conf_is_a_link", "conf_is_a_directory", "conf_is_a_fifo", "conf_is_a_device"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_rootfs_links_and_odd_files_never_touch_the_host(lab, name):
    rootfs, host = layout(lab, name)
    image = import_image(lab.sandbox, rootfs, "links-{}:latest".format(name.replace("_", "-")), ["NVIDIA_VISIBLE_DEVICES=all"])
    watched = [host, lab.driver_root.host("/etc"), lab.driver_root.host(LIB_DIR), lab.driver_root.host("/usr/bin"),
            "/etc/ld.so.cache", "/etc/ld.so.conf.d"]
    before = hashes_of(watched)
    script = "readlink {}/libcuda.so.1; stat -c %F /etc/ld.so.conf.d/00-nvdocker.conf; nvidia-smi -L".format(LIB_DIR)
    done, took = lab.run("--runtime", "nvidia", image, "sh", "-c", script, timeout=60)
    assert hashes_of(watched) == before
    assert took < 30, "docker run took {:.1f} s".format(took)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "libcuda.so." + lab.driver_root.version  # the ld cache was still refreshed
    if name in ("conf_is_a_link", "conf_is_a_fifo", "conf_is_a_device"):
        assert lines[1] == "regular file"  # replaced by rename, never opened
    assert lab.driver_root.smi_listing.splitlines()[0] in lines
    # and under plain runc the image runs, untouched
    done, _ = lab.run("--runtime", "runc", image, "true")
    assert done.returncode == 0 and hashes_of(watched) == before


# -- what the image has where the hook makes the library links (issue #14, item 2) ---------------------


def link_layout(lab, name):
    """An image whose library directory, or whose ``libcuda.so``, is something planted; the host dir
    its symlinks point at."""
    rootfs = tiny_rootfs(os.path.join(lab.work, "libs-" + name))
    host = os.path.join(lab.host, "libs-" + name)
    os.makedirs(os.path.join(host, "x86_64-linux-gnu"))
    sentinel = os.path.join(host, "sentinel")
    with open(sentinel, "w") as handle:
        handle.write("host file, must not change\n")
    lib = os.path.join(rootfs, LIB_DIR.lstrip("/"))
    if name == "lib_dir_is_a_link":
        os.makedirs(os.path.dirname(lib))
        os.symlink(os.path.join(host, "x86_64-linux-gnu"), lib)
    elif name == "usr_lib_is_a_link":
        os.makedirs(os.path.join(rootfs, "usr"))
        os.symlink(host, os.path.join(rootfs, "usr", "lib"))
    else:
        os.makedirs(lib)
        planted = os.path.join(lib, "libcuda.so")
        if name == "libcuda_so_is_a_link":
            os.symlink(sentinel, planted)
        elif name == "libcuda_so_is_a_dangling_link":
            os.symlink(os.path.join(host, "created-through-the-link"), planted)
        elif name == "libcuda_so_is_a_directory":
            os.makedirs(os.path.join(planted, "keep"))
        elif name == "libcuda_so_is_a_fifo":
            os.mkfifo(planted)
    return rootfs, host


LINK_LAYOUTS = ["lib_dir_is_a_link", "usr_lib_is_a_link", "libcuda_so_is_a_link", "libcuda_so_is_a_dangling_link",
                "libcuda_so_is_a_directory", "libcuda_so_is_a_fifo"]


@pytest.mark.parametrize("name", LINK_LAYOUTS)
def test_planted_library_links_and_directories_never_touch_the_host(lab, name):
    rootfs, host = link_layout(lab, name)
    image = import_image(lab.sandbox, rootfs, "libs-{}:latest".format(name.replace("_", "-")), ["NVIDIA_VISIBLE_DEVICES=all"])
    watched = [host, lab.driver_root.host(LIB_DIR), lab.driver_root.host("/etc")]
    before = hashes_of(watched)
    script = "stat -c %F {0}/libcuda.so; readlink {0}/libcuda.so; readlink {0}/libcuda.so.1".format(LIB_DIR)
    done, took = lab.run("--runtime", "nvidia", image, "sh", "-c", script, timeout=60)
    assert hashes_of(watched) == before
    assert not os.path.lexists(os.path.join(host, "created-through-the-link"))
    assert not os.path.lexists(os.path.join(host, "x86_64-linux-gnu", "libcuda.so"))
    assert took < 30, "docker run took {:.1f} s".format(took)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode()
    assert "libcuda.so." + lab.driver_root.version in out.splitlines()  # the ld cache hook still ran
    kind = {"libcuda_so_is_a_directory": "directory", "libcuda_so_is_a_fifo": "fifo"}.get(name)
    if kind:  # the image's own entry is left as it was
        assert out.splitlines()[0] == kind, out
    if name == "libcuda_so_is_a_link":
        assert out.splitlines()[1] == os.path.join(host, "sentinel")  # the image's link, not ours, not followed
