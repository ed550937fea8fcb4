"""Production shape: the simulated driver at the host's own paths, driver root `/` (issue #19).

Every other runtime test points the runtime at a simulated driver root in a temp dir, where paths
resolve inside that root. Production runs with driver root `/`, where a path such as
``/tmp/nvidia-mps`` is whatever a user made it. This harness starts a private dockerd in a private
mount namespace (``unshare --mount --propagation private``) that looks like a GPU host:

- ``/proc/driver`` is the simulated driver's (a bind mount over procfs' directory);
- ``/dev`` is a fresh tmpfs with the host's null/zero/full/random/urandom/tty/ptmx/pts bound back
  and the simulated NVIDIA nodes made with mknod (majors 195 and 510, mode 0666, root's);
- ``/usr/lib`` and ``/usr/bin`` are read-only overlays of the simulated driver's files on the host's
  (``libcuda.so.1`` and friends in ``/usr/lib/x86_64-linux-gnu``, firmware in ``/usr/lib/firmware``,
  ``nvidia-smi`` in ``/usr/bin``), and ``/etc/ld.so.cache`` is one the real ``ldconfig`` wrote for
  that view of the system;
- ``/tmp`` is a private tmpfs (sticky, world-writable, like the host's), so an unprivileged user's
  ``/tmp/nvidia-mps`` exists only there; paths the tests need that live under the host's ``/tmp``
  (the checkout, its venv, when CI clones there) are bound back in.

The runtime is our C launcher (built into the work dir, outside ``/tmp``) with no driver-root
setting at all: it runs exactly as installed. Commands "on the host" of that namespace (a user's
``ln -s``, ``cdi generate``, ``doctor``) run through ``nsenter --mount`` into dockerd's namespace,
as root or, with :meth:`ProductionHost.as_user`, as uid 65534 through ``setpriv``. Nothing of it is
visible outside the namespace; it disappears with dockerd, which is stopped by its pid.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from tests.support.driver_root import CONTROL_NODES, DriverRoot, build_driver_root
from tests.support.sandbox import DockerdSandbox

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534
HOST_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")

SETUP = r"""
set -eu
W={work}
S={sim}
# keep a way to the host's /dev and /tmp before they are covered
mkdir -p "$W/hostdev" "$W/hosttmp"
mount --rbind /dev "$W/hostdev"
mount --rbind /tmp "$W/hosttmp"
# the driver's kernel side
mount --bind "$S/proc/driver" /proc/driver
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
for n in {host_nodes}; do touch "/dev/$n"; mount --bind "$W/hostdev/$n" "/dev/$n"; done
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount --bind "$W/hostdev/pts" /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
{mknods}
# the driver's files at the host's paths, and an ld cache that lists them
mount -t overlay overlay -o "lowerdir=$S/usr/lib:/usr/lib" /usr/lib
mount -t overlay overlay -o "lowerdir=$S/usr/bin:/usr/bin" /usr/bin
ldconfig -C "$W/ld.so.cache"
mount --bind "$W/ld.so.cache" /etc/ld.so.cache
# a private /tmp, with what the tests run from bound back
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
for keep in {keep}; do
  case "$keep" in /tmp/*)
    rel=${{keep#/tmp/}}; mkdir -p "/tmp/$rel"; mount --rbind "$W/hosttmp/$rel" "/tmp/$rel";;
  esac
done
umount -l "$W/hosttmp"
exec "$@"
"""


class ProductionHost:
    """A private dockerd whose mount namespace is a GPU host with driver root `/`."""

    def __init__(self, work: str, runtime_conf: str = "") -> None:
        self.work = work
        self.sim: Optional[DriverRoot] = None
        self.sandbox: Optional[DockerdSandbox] = None
        self.runtime_conf = runtime_conf

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "ProductionHost":
        from nvdocker_setup.runtime.config import hook_script

        sim = build_driver_root(os.path.join(self.work, "sim"))
        self.sim = sim
        bindir = os.path.join(self.work, "bin")
        os.makedirs(bindir, mode=0o755, exist_ok=True)
        built = subprocess.run(["bash", os.path.join(REPO, "scripts", "build-launcher.sh"), bindir],
                               env=dict(os.environ, PYTHON=sys.executable), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, check=False)
        assert built.returncode == 0, built.stderr
        launcher = built.stdout.strip().splitlines()[-1]
        hookdir = os.path.join(self.work, "hookbin")
        os.makedirs(hookdir, mode=0o755, exist_ok=True)
        hook = os.path.join(hookdir, "nvidia-container-runtime-hook")
        with open(hook, "w") as handle:
            handle.write('#!/bin/sh\nexec {} -I -S {} "$@"\n'.format(sys.executable, hook_script()))
        os.chmod(hook, 0o755)
        self.runtime_log = os.path.join(self.work, "runtime.log")
        conf = os.path.join(self.work, "runtime.conf")
        with open(conf, "w") as handle:
            handle.write("[runtime]\nruntimes = runc\nlog = {}\n{}".format(self.runtime_log, self.runtime_conf))
        keep = sorted({REPO, sys.prefix, os.path.realpath(sys.prefix), os.path.dirname(os.path.realpath(sys.executable))})
        nodes = dict(CONTROL_NODES)
        for gpu in sim.gpus:
            nodes["/dev/nvidia{}".format(gpu.minor)] = (195, gpu.minor)
        setup = SETUP.format(
            work=shlex.quote(self.work), sim=shlex.quote(sim.path), host_nodes=" ".join(HOST_DEV_NODES),
            mknods="\n".join("mknod -m 666 {} c {} {}".format(shlex.quote(p), ma, mi) for p, (ma, mi) in sorted(nodes.items())),
            keep=" ".join(shlex.quote(k) for k in keep),
        )
        script = os.path.join(self.work, "setup.sh")
        with open(script, "w") as handle:
            handle.write(setup)
        self.sandbox = DockerdSandbox(
            os.path.join(self.work, "dockerd"),
            daemon_json=('{"runtimes": {"nvidia": {"path": "%s"}}}\n' % launcher).encode(),
            path_prepend=[hookdir],
            env={"NVDOCKER_RUNTIME_CONFIG": conf},
            prefix=["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", script],
        )
        self.sandbox.start()
        self.sandbox.import_tiny_image()
        return self

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()

    # -- inside the namespace ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.sandbox is not None and self.sandbox.pid is not None
        return self.sandbox.pid

    def host_argv(self, argv: Sequence[str], user: Optional[int] = None) -> List[str]:
        """``argv`` on the namespace's host (its mounts; our pid, net and ipc namespaces), from /."""
        prefix = ["nsenter", "--target", str(self.pid), "--mount", "--wd=/"]
        if user is not None:
            prefix += ["setpriv", "--reuid={}".format(user), "--regid={}".format(user), "--clear-groups"]
        return prefix + list(argv)

    def run(self, argv: Sequence[str], user: Optional[int] = None, env: Optional[Dict[str, str]] = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(self.host_argv(argv, user), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError("{} failed ({}):\n{}{}".format(argv, done.returncode, done.stdout, done.stderr))
        return done

    def as_user(self, script: str) -> subprocess.CompletedProcess:
        """A shell script run by uid 65534 on the namespace's host."""
        return self.run(["/bin/sh", "-c", script], user=NOBODY)

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["/bin/sh", "-c", script], check=check)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        """``nvdocker-setup ARGS`` as root on the namespace's host, with driver root `/`."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO, "HOME": "/root", "LC_ALL": "C.UTF-8",
               "NVDOCKER_RUNTIME_CONFIG": os.path.join(self.work, "runtime.conf")}
        return self.run([sys.executable, "-m", "nvdocker_setup", *args], env=env, check=check)

    def docker_run(self, *args: str) -> subprocess.CompletedProcess:
        assert self.sandbox is not None
        return self.sandbox.docker("run", "--rm", "--network", "none", *args, check=False, timeout=120)

    def runtime_log_text(self) -> str:
        try:
            with open(self.runtime_log) as handle:
                return handle.read()
        except OSError:
            return ""


def production_host(tmp_root: Optional[str] = None, runtime_conf: str = "") -> ProductionHost:
    """A started :class:`ProductionHost` in a work dir outside /tmp (the namespace covers /tmp)."""
    work = tempfile.mkdtemp(prefix="nvp.", dir=tmp_root or "/var/tmp")
    os.chmod(work, 0o755)
    host = ProductionHost(work, runtime_conf)
    try:
        return host.start()
    except BaseException:
        host.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
