"""ldconfig never leaves the container root through its /proc (found by an attacker's review).

When a createContainer hook runs, the container's procfs is already mounted at ROOTFS/proc, and
``/proc/1/root`` there is the host's /: through it, an image library's SONAME or an image /etc
link led `ldconfig -r ROOTFS` out of its chroot. These tests rebuild that moment (a pid namespace
whose procfs is mounted at ROOTFS/proc, as runc init's is) and run the real hook in it.
"""

import os
import shutil
import subprocess

import pytest

from nvdocker_setup.hook.main import proc_mounts_below

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = "/usr/lib/x86_64-linux-gnu"


@pytest.fixture
def lab(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("gcc"):
        pytest.skip("needs root, unshare and gcc")
    root, host = tmp_path / "rootfs", tmp_path / "host"
    for directory in (root / LIB.lstrip("/"), root / "proc", root / "etc", host / "etc"):
        directory.mkdir(parents=True)
    os.symlink("/bin/true", str(host / "victim-link"))
    (host / "etc" / "ld.so.cache").write_bytes(b"HOSTCACHE\n")
    return root, host


def evil_library(root, host, tmp_path):
    source = tmp_path / "evil.c"
    source.write_text("int f(void) { return 0; }\n")
    soname = "../../../proc/1/root{}/victim-link".format(host)
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname," + soname, "-o",
                    str(root / LIB.lstrip("/") / "libevil.so.1.0"), str(source)], check=True)


def in_container_moment(root, command):
    """Run ``command`` in a new pid and mount namespace with procfs mounted at ROOT/proc. The shell
    stays pid 1 (as runc init does, its root the host's /), the command runs as its child."""
    script = 'mount -t proc proc "$0/proc" && "$@"; status=$?; exit $status'
    return subprocess.run(["unshare", "-m", "-p", "-f", "--propagation", "private", "sh", "-c", script, str(root)]
                          + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO})


def hook(run_hook, root):
    return run_hook.command(["update-ldcache", "--rootfs", str(root), "--folder", LIB, "--ldconfig", "/sbin/ldconfig"])


def test_control_unconfined_ldconfig_follows_the_soname_out_of_the_root(lab, tmp_path):
    root, host = lab
    evil_library(root, host, tmp_path)
    done = in_container_moment(root, ["/sbin/ldconfig", "-r", str(root), LIB])
    assert os.readlink(str(host / "victim-link")) == "libevil.so.1.0", done.stderr  # the attack is live


def test_a_soname_through_proc_1_root_changes_nothing_on_the_host(run_hook, lab, tmp_path):
    root, host = lab
    evil_library(root, host, tmp_path)
    done = in_container_moment(root, hook(run_hook, root))
    assert done.returncode == 0, done.stderr
    assert os.readlink(str(host / "victim-link")) == "/bin/true"
    assert (root / "etc" / "ld.so.cache").exists()  # the container's own cache was still made


def test_an_etc_linked_through_proc_1_root_leaves_the_host_cache_alone(run_hook, lab):
    root, host = lab
    (root / "etc").rmdir()
    os.symlink("/proc/1/root{}/etc".format(host), str(root / "etc"))
    done = in_container_moment(root, hook(run_hook, root))
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert (host / "etc" / "ld.so.cache").read_bytes() == b"HOSTCACHE\n"
    assert sorted(os.listdir(str(host / "etc"))) == ["ld.so.cache"]


def test_proc_mounts_below_reads_mountinfo():
    mountinfo = (
        b"22 1 0:21 / /proc rw - proc proc rw\n"
        b"90 80 0:50 / /run/c/rootfs/proc rw - proc proc rw\n"
        b"91 90 0:50 /sys /run/c/rootfs/proc/sys ro - proc proc rw\n"
        b"92 80 0:51 / /run/c/rootfs/dev rw - tmpfs tmpfs rw\n"
        b"93 80 0:52 / /run/c/rootfs/with\\040space/proc rw - proc proc rw\n"
        b"94 80 0:53 / /run/c/rootfsX/proc rw - proc proc rw\n"
    )
    assert proc_mounts_below("/run/c/rootfs", mountinfo) == [
        b"/run/c/rootfs/with space/proc", b"/run/c/rootfs/proc/sys", b"/run/c/rootfs/proc"]


BLOAT = r'''
set -e
mkdir -p "$WORK/bloat" && mount -t tmpfs bloat "$WORK/bloat"
space=$(printf '%*s' 250 ''); d="$WORK/bloat"; for i in $(seq 15); do d="$d/$space"; done
mkdir -p "$d"; source=$(printf '%*s' 4000 '')
for i in $(seq 600); do mount -t tmpfs "$source" "$d"; done
echo "mountinfo $(wc -c < /proc/self/mountinfo)"
unshare -m -p -f --propagation private sh -c 'mount -t proc proc "$0/proc" && "$@"' "$ROOT" "$@"
'''


def test_a_mount_table_past_16_mib_does_not_hide_the_containers_proc(run_hook, lab, tmp_path):
    """Found by an attacker's review: a reader capped at 16 MiB missed the container's procfs (the
    last line), and ldconfig ran with /proc/1/root in reach. A local user can grow the table that
    far (FUSE mounts through set-uid fusermount3; here tmpfs mounts with long escaped names)."""
    root, host = lab
    evil_library(root, host, tmp_path)
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", "-c", BLOAT, "bloat"] + hook(run_hook, root),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WORK": str(tmp_path), "ROOT": str(root), "PYTHONPATH": REPO},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    size = int(done.stdout.split("mountinfo ", 1)[1].split()[0])
    assert size > 16 << 20, size  # the table really is past the old cap
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.readlink(str(host / "victim-link")) == "/bin/true"
