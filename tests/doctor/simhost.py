"""A simulated host for doctor: a root laid out like ``/`` holding the simulated NVIDIA driver
(``tests/support/driver_root.py``), a healthy daemon.json, our runtime and hook, runc, a docker unit
file and a fake ``/proc`` entry for a running dockerd. Every check reads it through the Context
(``root``), so nothing of this machine's own /etc, /proc or /dev is looked at.

Each test gets its own copy (device nodes are re-created with mknod) and breaks it one way.
"""

import json
import os
import shutil
import stat
import time
from typing import Any, Dict, Optional

from nvdocker_setup.context import Context
from nvdocker_setup.doctor.checks import all_checks, run_one
from nvdocker_setup.doctor.facts import DoctorOptions, Facts
from tests.support.fakeproc import namespace_links

RUNTIME = "/usr/bin/nvdocker-runtime"
HOOK = "/usr/bin/nvdocker-runtime-hook"
GPU_HOOK = "/usr/bin/nvidia-container-runtime-hook"
RUNC = "/usr/sbin/runc"
CONFIG = "/etc/docker/daemon.json"
UNIT = "/lib/systemd/system/docker.service"
DOCKERD_PID = 4242
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HEALTHY_CONFIG = {"log-driver": "json-file", "runtimes": {"nvidia": {"path": RUNTIME}}}
UNIT_TEXT = (
    "[Unit]\nDescription=Docker Application Container Engine\n\n[Service]\nType=notify\n"
    "ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n"
    "ExecReload=/bin/kill -s HUP $MAINPID\n"
)
SCRIPT = "#!/bin/sh\nexit 0\n"


def clone_tree(source: str, target: str) -> None:
    """Copy a driver root: regular files, symlinks as links, character devices re-created."""
    os.makedirs(target, exist_ok=True)
    os.chmod(target, 0o755)
    for directory, dirs, files in os.walk(source):
        relative = os.path.relpath(directory, source)
        destination = os.path.join(target, relative) if relative != "." else target
        for name in dirs:
            path = os.path.join(directory, name)
            made = os.path.join(destination, name)
            if os.path.islink(path):
                os.symlink(os.readlink(path), made)
            else:
                os.makedirs(made, exist_ok=True)
                os.chmod(made, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            made = os.path.join(destination, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(path), made)
            elif stat.S_ISCHR(info.st_mode):
                os.mknod(made, stat.S_IFCHR | stat.S_IMODE(info.st_mode), info.st_rdev)
                os.chmod(made, stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                shutil.copy2(path, made)


class SimHost:
    def __init__(self, base: str, driver_template) -> None:
        self.base = base
        self.root = os.path.join(base, "host")
        clone_tree(driver_template.path, self.root)
        self.driver = driver_template
        self.state_dir = os.path.join(base, "state")
        self.home = os.path.join(base, "home")
        self.fakebin = os.path.join(base, "fakebin")
        self.socket = os.path.join(base, "no-dockerd.sock")
        for directory in (self.home, self.fakebin):
            os.makedirs(directory, mode=0o755)
            os.chmod(directory, 0o755)
        # the simulated nvidia-smi needs cat; nothing else of this machine is on the checks' PATH
        os.symlink(shutil.which("cat") or "/bin/cat", os.path.join(self.fakebin, "cat"))
        self.write(RUNTIME, SCRIPT, 0o755)
        self.write(HOOK, SCRIPT, 0o755)
        os.symlink("nvdocker-runtime-hook", self.path(GPU_HOOK))
        self.write(RUNC, SCRIPT, 0o755)
        self.write_config(HEALTHY_CONFIG)
        self.write(UNIT, UNIT_TEXT)
        self.write("/proc/devices", "Character devices:\n  1 mem\n195 nvidia-frontend\n510 nvidia-uvm\n\nBlock devices:\n  8 sd\n")
        self.write("/proc/stat", "cpu  1 2 3 4\nbtime {}\n".format(int(time.time()) - 100000))
        self.add_dockerd()
        self.env: Dict[str, str] = {
            "PATH": ":".join([self.fakebin, self.path("/usr/bin"), self.path("/usr/sbin")]),
            "HOME": self.home,
            "DOCKER_CONFIG": os.path.join(self.home, ".docker"),
        }
        self.docker_socket: Optional[str] = self.socket

    # -- files ---------------------------------------------------------------------------------

    def path(self, host_path: str) -> str:
        return os.path.join(self.root, host_path.lstrip("/"))

    def write(self, host_path: str, text: str, mode: int = 0o644) -> str:
        path = self.path(host_path)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
        return path

    def remove(self, host_path: str) -> None:
        path = self.path(host_path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def write_config(self, value: Any, raw: Optional[str] = None) -> str:
        return self.write(CONFIG, raw if raw is not None else json.dumps(value, indent=2) + "\n")

    def fake_tool(self, name: str, script: str) -> str:
        """An executable ``name`` on the checks' PATH (a fake dpkg, rpm, systemctl, docker...)."""
        path = os.path.join(self.fakebin, name)
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\n" + script)
        os.chmod(path, 0o755)
        return path

    # -- the fake dockerd in /proc ---------------------------------------------------------------------

    def add_dockerd(self, argv=("/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"),
                    pid: int = DOCKERD_PID, started_ago: float = -3600.0, path_env: str = SERVICE_PATH,
                    uid: int = 0, extra_env: str = "") -> None:
        """A dockerd in the simulated /proc. ``started_ago`` < 0 puts its start after now, i.e.
        after every file of this simulated host appeared."""
        proc = "/proc/{}".format(pid)
        self.write(proc + "/comm", "dockerd\n")
        self.write(proc + "/cmdline", "\0".join(argv) + "\0")
        self.write(proc + "/status", "Name:\tdockerd\nPPid:\t1\nUid:\t{0}\t{0}\t{0}\t{0}\n".format(uid))
        self.write(proc + "/environ", "PATH={}\0HOME=/root\0{}".format(path_env, extra_env))
        namespace_links(self.path("/proc"), pid)  # the host's namespaces: a daemon of this host
        with open(self.path("/proc/stat")) as handle:
            btime = int(handle.read().split("btime ")[1].split()[0])
        ticks = int((time.time() - started_ago - btime) * os.sysconf("SC_CLK_TCK"))
        fields = ["S", "1"] + ["0"] * 17 + [str(ticks), "0"]
        self.write(proc + "/stat", "{} (dockerd) {}\n".format(pid, " ".join(fields)))

    def remove_dockerd(self, pid: int = DOCKERD_PID) -> None:
        self.remove("/proc/{}".format(pid))

    # -- running checks ------------------------------------------------------------------------

    def ctx(self, **overrides) -> Context:
        values = dict(env=dict(self.env), root=self.root, state_dir=self.state_dir, euid=0,
                      docker_socket=self.docker_socket)
        values.update(overrides)
        return Context(**values)

    def facts(self, ctx: Optional[Context] = None, **options) -> Facts:
        return Facts(ctx or self.ctx(), DoctorOptions(**options))

    def run(self, check_id: str, ctx: Optional[Context] = None, **options):
        item = next(check for check in all_checks() if check.id == check_id)
        return run_one(item, self.facts(ctx, **options), explicit=True)

    def cli_args(self):
        return ["doctor", "--root", self.root]
