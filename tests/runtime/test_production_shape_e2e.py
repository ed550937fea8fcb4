"""The runtime at driver root `/` on a host that looks like a GPU server (tests/support/production.py):
what a container gets, and what an unprivileged user (uid 65534) and an image author cannot make
root mount, write or run (issue #19; docs/security.md C23-C26)."""

import json
import os
import shutil
import subprocess

import pytest

from tests.support.production import NOBODY, production_host
from tests.support.sandbox import dockerd_or_skip

pytestmark = pytest.mark.dockerd

GPU = ("--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_DRIVER_CAPABILITIES=compute,utility")


@pytest.fixture(scope="module")
def host():
    dockerd_or_skip()
    for tool in ("unshare", "nsenter", "setpriv", "ldconfig", "gcc"):
        assert shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"), tool + " is needed"
    built = production_host()
    try:
        yield built
    finally:
        built.close()
        shutil.rmtree(built.work, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_tmp(host):
    """Each test starts with no /tmp/nvidia-mps on the namespace's host and the default runtime.conf."""
    host.sh("rm -rf /tmp/nvidia-mps")
    yield
    host.sh("rm -rf /tmp/nvidia-mps")


def sha(host, path):
    return host.run(["sha256sum", path]).stdout.split()[0]


def test_a_gpu_container_at_driver_root_slash_gets_nodes_libraries_and_nvidia_smi_on_path(host):
    done = host.docker_run(*GPU, "tiny", "sh", "-c", "ls /dev; ls /usr/lib/x86_64-linux-gnu; nvidia-smi -L")
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode().split()
    assert {"nvidiactl", "nvidia0", "nvidia1"} <= set(out)
    assert "libcuda.so." + host.sim.version in out and "libcuda.so.1" in out  # the ld hook ran
    assert "GPU 0:" in done.stdout.decode() and "GPU 1:" in done.stdout.decode()


def test_a_users_mps_symlink_to_a_host_path_is_never_mounted(host):
    """The exploit of the attacker review: `ln -s /etc /tmp/nvidia-mps` (or dockerd's socket dir) as
    a user, then any GPU container got that host path mounted at its own path."""
    socket_dir = os.path.dirname(host.sandbox.socket_path)
    for target in ("/etc", socket_dir):
        host.sh("rm -rf /tmp/nvidia-mps")
        host.as_user("ln -s {} /tmp/nvidia-mps".format(target))
        assert host.run(["stat", "-c", "%u", "/tmp/nvidia-mps"]).stdout.strip() == str(NOBODY)
        done = host.docker_run(*GPU, "tiny", "sh", "-c",
                               "test ! -e /tmp/nvidia-mps && test ! -e /etc/shadow && test ! -e {}/docker.sock && ls /dev".format(
                                   socket_dir))
        assert done.returncode == 0, (target, done.stdout.decode(), done.stderr.decode())
        assert "nvidia0" in done.stdout.decode().split()  # the container still got its GPU
    log = host.runtime_log_text()
    assert "left out /tmp/nvidia-mps: the symlink /tmp/nvidia-mps is owned by uid 65534" in log, log[-2000:]


def test_a_users_real_mps_directory_is_never_mounted(host):
    host.as_user("mkdir -m 777 /tmp/nvidia-mps && echo planted > /tmp/nvidia-mps/pipe")
    done = host.docker_run(*GPU, "tiny", "sh", "-c", "test ! -e /tmp/nvidia-mps && ls /dev")
    assert done.returncode == 0, done.stderr.decode()
    assert "nvidia0" in done.stdout.decode().split()


def test_roots_mps_directory_is_shared_writable(host):
    host.sh("mkdir -m 755 /tmp/nvidia-mps")
    done = host.docker_run(*GPU, "tiny", "sh", "-c", "echo from-the-container > /tmp/nvidia-mps/probe")
    assert done.returncode == 0, done.stderr.decode()
    assert host.run(["cat", "/tmp/nvidia-mps/probe"]).stdout == "from-the-container\n"


ROOTSH = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(void) { setresgid(0, 0, 0); setresuid(0, 0, 0); printf("euid=%d\\n", (int)geteuid()); return 0; }
"""


@pytest.fixture
def admin_mps(host):
    """runtime.conf names ``<work>/mps`` (root's, 0755, on the root file system) as the MPS pipe
    directory; restored afterwards."""
    conf = os.path.join(host.work, "runtime.conf")
    with open(conf) as handle:
        original = handle.read()
    mps = os.path.join(host.work, "mps")
    os.makedirs(mps, mode=0o755, exist_ok=True)
    with open(conf, "a") as handle:
        handle.write("mps-pipe-directory = {}\n".format(mps))
    try:
        yield mps
    finally:
        with open(conf, "w") as handle:
            handle.write(original)
        host.sh("umount {0} 2>/dev/null; rm -rf {0}".format(mps), check=False)


def test_the_admins_mps_directory_replaces_the_default(host, admin_mps):
    host.sh("mkdir -m 755 /tmp/nvidia-mps")
    host.sh("mount --bind {0} {0} && mount -o remount,bind,nosuid,nodev {0}".format(admin_mps))
    done = host.docker_run(*GPU, "tiny", "sh", "-c", "test ! -e /tmp/nvidia-mps && echo ok > {}/probe".format(admin_mps))
    assert done.returncode == 0, done.stderr.decode()
    assert host.run(["cat", admin_mps + "/probe"]).stdout == "ok\n"


def test_an_mps_directory_without_nosuid_nodev_is_not_shared(host, admin_mps):
    """The attacker review's exploit: a container's root copied a static set-uid root shell into a
    writable MPS directory on the root file system, and uid 65534 became root on the host with it.
    Such a directory is not shared; on a nosuid,nodev mount the same program gives no root."""
    source = os.path.join(host.work, "rootsh.c")  # outside /tmp: the namespace has its own
    with open(source, "w") as handle:
        handle.write(ROOTSH)
    rootsh = os.path.join(host.work, "rootsh")
    subprocess.run(["gcc", "-static", "-O2", "-o", rootsh, source], check=True)
    plant = "cp /rootsh {0}/control.x && chmod 4755 {0}/control.x".format(admin_mps)
    done = host.docker_run(*GPU, "-v", "{}:/rootsh:ro".format(rootsh), "tiny", "sh", "-c",
                           "test ! -e {} && ls /dev".format(admin_mps))
    assert done.returncode == 0 and "nvidia0" in done.stdout.decode().split(), done.stderr.decode()
    assert "nosuid,nodev" in host.runtime_log_text()
    host.sh("mount --bind {0} {0} && mount -o remount,bind,nosuid,nodev {0}".format(admin_mps))
    done = host.docker_run(*GPU, "-v", "{}:/rootsh:ro".format(rootsh), "tiny", "sh", "-c", plant)
    assert done.returncode == 0, done.stderr.decode()
    attempt = host.run([admin_mps + "/control.x"], user=NOBODY, check=False)
    assert "euid=0" not in attempt.stdout, attempt.stdout
    assert "euid={}".format(NOBODY) in attempt.stdout or attempt.returncode != 0, (attempt.stdout, attempt.stderr)


def test_cdi_generate_and_doctor_at_slash_leave_out_and_name_a_users_path(host):
    host.as_user("ln -s /etc /tmp/nvidia-mps")
    done = host.cli("cdi", "generate", "--output", "-", "--json")
    assert done.returncode == 0, done.stderr
    assert "/tmp/nvidia-mps" not in done.stdout.split("\n{")[0]  # the spec
    assert "left out /tmp/nvidia-mps" in done.stderr
    doctor = host.cli("doctor", "--check", "driver-host-paths", "--json")
    report = json.loads(doctor.stdout)
    (check,) = [c for c in report["checks"] if c["id"] == "driver-host-paths"]
    assert check["status"] == "fail" and any(item.startswith("/tmp/nvidia-mps:") for item in check["data"]["refused"]), check
    host.sh("rm -f /tmp/nvidia-mps && mkdir -m 755 /tmp/nvidia-mps")
    spec = host.cli("cdi", "generate", "--output", "-")
    assert spec.returncode == 0 and "/tmp/nvidia-mps" in spec.stdout and "left out" not in spec.stderr


def test_an_images_links_at_the_paths_we_write_never_change_a_host_file(host, tmp_path):
    """An image whose library directory and ld cache are symlinks to host paths: the host's
    /etc/shadow and ld cache keep their bytes, at driver root `/` as on a temp root (C6, C13)."""
    rootfs = str(tmp_path / "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for command in ("sh", "ls", "cat", "true"):
        os.symlink("busybox", os.path.join(rootfs, "bin", command))
    os.makedirs(os.path.join(rootfs, "usr", "lib"))
    os.makedirs(os.path.join(rootfs, "etc"))
    os.symlink("/etc", os.path.join(rootfs, "usr", "lib", "x86_64-linux-gnu"))
    os.symlink("/etc/shadow", os.path.join(rootfs, "etc", "ld.so.cache"))
    tar = subprocess.run(["tar", "--numeric-owner", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE, check=True).stdout
    host.sandbox.docker("import", "--change", "ENV PATH=/bin", "-", "links:latest", input=tar)
    before = {path: sha(host, path) for path in ("/etc/shadow", "/etc/ld.so.cache", "/etc/passwd")}
    listing = host.run(["ls", "-la", "/etc"]).stdout
    done = host.docker_run(*GPU, "links", "true")
    after = {path: sha(host, path) for path in before}
    assert after == before, done.stderr.decode()
    assert host.run(["ls", "-la", "/etc"]).stdout == listing


def test_a_runtime_conf_or_runtime_a_user_could_write_never_chooses_what_root_runs(host):
    """The second attacker review's exploit: with a runtime.conf uid 65534 could write, the C launcher
    ran the user's `runtimes` program as root for every container operation. Now such a file's
    runtimes do not count (the default runc runs plain containers; the Python step refuses GPU
    starts with the reason), and a runtime a user could replace is never executed."""
    conf = os.path.join(host.work, "runtime.conf")
    with open(conf) as handle:
        original = handle.read()
    evil = os.path.join(host.work, "evil")
    os.makedirs(evil, mode=0o777)
    os.chmod(evil, 0o777)
    marker = os.path.join(evil, "pwned")
    runc = host.sandbox.env["PATH"].split(os.pathsep)
    real_runc = [os.path.join(d, "runc") for d in runc if os.access(os.path.join(d, "runc"), os.X_OK)][0]
    try:
        host.as_user("printf '#!/bin/sh\\nid -u >> {m}\\nexec {r} \"$@\"\\n' > {e}/runc && chmod 755 {e}/runc".format(
            m=marker, r=real_runc, e=evil))
        # 1. the file is the user's: its runtimes do not count
        os.chown(conf, NOBODY, NOBODY)
        host.as_user("printf '[runtime]\\nruntimes = {}/runc\\n' > {}".format(evil, conf))
        plain = host.docker_run("--runtime", "nvidia", "tiny", "echo", "plain-ran")
        assert plain.returncode == 0 and b"plain-ran" in plain.stdout, plain.stderr.decode()
        refused = host.docker_run(*GPU, "tiny", "true")
        assert refused.returncode != 0 and b"not root's alone" in refused.stderr, refused.stderr.decode()
        # 2. root's file naming a runtime a user could replace: never executed either
        os.chown(conf, 0, 0)
        with open(conf, "w") as handle:
            handle.write("[runtime]\nruntimes = {}/runc runc\n".format(evil))
        plain = host.docker_run("--runtime", "nvidia", "tiny", "echo", "plain-ran")
        gpu = host.docker_run(*GPU, "tiny", "ls", "/dev")
        assert plain.returncode == 0 and gpu.returncode == 0 and b"nvidia0" in gpu.stdout, gpu.stderr.decode()
        assert not os.path.exists(marker), open(marker).read()
    finally:
        os.chown(conf, 0, 0)
        with open(conf, "w") as handle:
            handle.write(original)
        shutil.rmtree(evil, ignore_errors=True)
