"""Several Debian 12 "hosts" for the Ansible collection, without SSH or a network.

Each host is a container on the tests' private dockerd (tests/support/sandbox.py), made from the
cached debootstrap rootfs of the packaging tests with docker.io, python3, python3-apt and the
dependencies of our .debs installed (not our packages: the role installs those), running its own
dockerd 20.10 as PID 1 (vfs on a tmpfs). Containers run with ``--network none`` and the explicit
capability list of ../shared/TESTING.md (``--privileged`` fails on these VMs). Ansible reaches them
with the ``community.docker.docker`` connection plugin through the private dockerd's socket.

Two Ansible installations drive them: Debian 12's ``ansible`` package (ansible-core 2.14) and the
current ``ansible`` from PyPI in a venv cached under the test cache.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

from tests.packaging import support as pkg

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible" / "collections"
IN_CI = os.environ.get("CI") == "true"
OUR_PACKAGES = pkg.PACKAGES
#: What every host has besides the dependencies of our packages: its engine and what Ansible needs.
HOST_PACKAGES = ("docker.io", "python3", "python3-apt")
HOST_RUN_FLAGS = (
    "--network", "none", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
    "--tmpfs", "/run", "--tmpfs", "/var/lib/docker:exec",
)
HOST_DOCKERD = ("/usr/local/sbin/dockerd-supervise", "dockerd", "--iptables=false", "--ip6tables=false",
                "--bridge=none", "--ip-masq=false", "--storage-driver", "vfs")
#: A host has no systemd; dockerd runs under a supervisor loop, as under runit or s6, and the
#: restart command nvdocker-setup is given (--service-manager command) stops it and lets the loop
#: start it again; the command returns at once and nvdocker-setup verifies through the API.
SUPERVISE = """#!/bin/sh
# PID 1 of a fleet test host: run dockerd, start it again whenever it exits.
while :; do
    "$@"
    sleep 0.3
done
"""
RESTART = """#!/bin/sh
# Restart the supervised dockerd: stop it, the supervisor starts it again.
pid=$(cat /run/docker.pid 2>/dev/null)
if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
exit 0
"""
RESTART_COMMAND = "/usr/local/sbin/dockerd-restart"
DEBIAN_ANSIBLE = "/usr/bin/ansible-playbook"


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail("CI=true: the fleet tests must run in CI: " + reason, pytrace=False)
    pytest.skip(reason)


def deb_dependencies(debs: Sequence[Path]) -> str:
    """The Depends of our .debs as one apt-get satisfy string, without our own packages."""
    clauses: List[str] = []
    for deb in debs:
        for clause in pkg.dpkg_deb_fields(deb).get("Depends", "").split(","):
            clause = " ".join(clause.split())
            if clause and not any(clause.split(" ")[0] == name for name in OUR_PACKAGES) and clause not in clauses:
                clauses.append(clause)
    return ", ".join(clauses)


def host_rootfs(cache: Path, pristine: Path, debs: Sequence[Path], workdir: Path) -> Path:
    """A tarball of the host image's root (cached): pristine rootfs + engine + our dependencies."""
    depends = deb_dependencies(debs)
    key = hashlib.sha256("\n".join([pristine.name, depends, " ".join(HOST_PACKAGES), SUPERVISE, RESTART]).encode()).hexdigest()[:12]
    tarball = cache / "fleet-host-{}.tar".format(key)
    with open(str(cache / "fleet-host.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and tarball.stat().st_mtime >= pristine.stat().st_mtime:
            return tarball
        for old in cache.glob("fleet-host-*.tar"):
            old.unlink()
        root = pkg.Chroot(pristine, cache / "apt-archives", workdir)
        try:
            root.apt("install --no-install-recommends " + " ".join(HOST_PACKAGES))
            root.apt("satisfy --no-install-recommends '{}'".format(depends))
            root.sh("mkdir -p /etc/docker && rm -f /etc/docker/daemon.json")
            root.write("/usr/local/sbin/dockerd-supervise", SUPERVISE, mode=0o755)
            root.write("/usr/local/sbin/dockerd-restart", RESTART, mode=0o755)
            partial = str(tarball) + ".partial"
            pkg.run(["tar", "-C", root.path, "--numeric-owner", "--exclude=./var/cache/apt/archives/*",
                     "--exclude=./proc/*", "--exclude=./sys/*", "-cf", partial, "."])
            os.replace(partial, str(tarball))
        finally:
            root.close()
    return tarball


def pypi_ansible(cache: Path) -> Path:
    """A venv with ``ansible`` (ansible-core and community.docker) from PyPI at the versions of
    constraints/ansible.txt, cached; made again when those pins change.

    Built with Debian 12's /usr/bin/python3 (3.11), so the newest ansible-core that runs on it (2.19
    at the time of writing; 2.20 wants Python 3.12)."""
    pins = REPO / "constraints" / "ansible.txt"
    key = hashlib.sha256(pins.read_bytes()).hexdigest()[:16]
    venv = cache / "ansible-pypi-py3.11"
    stamp = venv / ".pins"
    with open(str(cache / "ansible-pypi.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == key:
            return venv
        shutil.rmtree(str(venv), ignore_errors=True)
        pkg.run(["/usr/bin/python3", "-m", "venv", venv])
        done = pkg.run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "-c", pins, "ansible"],
                       check=False, timeout=1200)
        need(done.returncode == 0, "pip install ansible failed: " + done.stdout[-2000:])
        stamp.write_text(key + "\n")
    return venv


class Host:
    """One fleet host: a container running its own dockerd."""

    def __init__(self, sandbox, name: str, container: str) -> None:
        self.sandbox = sandbox
        self.name = name
        self.container = container

    def exec(self, *argv: str, check: bool = True, input: Optional[bytes] = None, timeout: float = 60) -> subprocess.CompletedProcess:
        done = self.sandbox.docker("exec", "-i", self.container, *argv, check=False, input=input, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError("{} on {} failed ({}): {}".format(
                " ".join(argv), self.name, done.returncode, (done.stdout + done.stderr).decode(errors="replace")))
        return done

    def read(self, path: str) -> bytes:
        return self.exec("cat", path).stdout

    def write(self, path: str, data: bytes) -> None:
        """Write a file in place (``cat >``), like an admin's editor would: same inode, new mtime."""
        self.exec("sh", "-c", 'cat > "$1"', "sh", path, input=data)

    def stat(self, path: str) -> Dict[str, str]:
        inode, mtime, mode = self.exec("stat", "-c", "%i|%y|%a", path).stdout.decode().strip().split("|")
        return {"inode": inode, "mtime": mtime, "mode": mode}

    def dockerd_info(self) -> Optional[dict]:
        done = self.exec("docker", "info", "--format", "{{json .}}", check=False, timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def wait_for_dockerd(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.dockerd_info()
            if info:
                return info
            time.sleep(0.3)
        logs = self.sandbox.docker("logs", "--tail", "30", self.container, check=False)
        raise AssertionError("dockerd on {} did not answer: {}".format(self.name, (logs.stdout + logs.stderr).decode(errors="replace")))

    def installed(self, package: str) -> bool:
        done = self.exec("dpkg-query", "-W", "-f", "${Status}", package, check=False)
        return done.stdout.decode().strip() == "install ok installed"


def start_hosts(sandbox, image: str, prefix: str, daemon_jsons: Dict[str, bytes],
                flags: Dict[str, Sequence[str]]) -> List[Host]:
    """Create the containers, put each host's daemon.json in place, start them, wait for their dockerd."""
    hosts = []
    for name, data in daemon_jsons.items():
        container = "{}-{}".format(prefix, name)
        sandbox.docker("create", "--name", container, "--hostname", name, *HOST_RUN_FLAGS, image, *HOST_DOCKERD,
                       *flags.get(name, ()))
        with tempfile.NamedTemporaryFile() as handle:
            handle.write(data)
            handle.flush()
            os.chmod(handle.name, 0o644)
            sandbox.docker("cp", handle.name, container + ":/etc/docker/daemon.json")
        sandbox.docker("start", container)
        hosts.append(Host(sandbox, name, container))
    for host in hosts:
        host.wait_for_dockerd()
    return hosts


def remove_hosts(sandbox, hosts: Sequence[Host]) -> None:
    for host in hosts:
        sandbox.docker("rm", "-f", "-v", host.container, check=False, timeout=120)


class Ansible:
    """One Ansible installation running playbooks against the fleet."""

    def __init__(self, flavor: str, playbook_bin: str, env: Dict[str, str], workdir: Path) -> None:
        self.flavor = flavor
        self.playbook_bin = playbook_bin
        self.env = env
        self.workdir = workdir
        self.version = ""

    def write_inventory(self, hosts: Sequence[Host], docker_host: str) -> Path:
        inventory = {
            "all": {
                "hosts": {host.name: {"ansible_host": host.container} for host in hosts},
                "vars": {
                    "ansible_connection": "community.docker.docker",
                    "ansible_docker_extra_args": "-H " + docker_host,
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
            }
        }
        path = self.workdir / "inventory.json"
        path.write_text(json.dumps(inventory, indent=2))
        return path

    def playbook(self, text: str, *args: str, timeout: float = 600) -> "PlaybookRun":
        """Run a playbook; the per-host results come from the json callback on stdout."""
        path = Path(tempfile.mkstemp(prefix="play.", suffix=".yml", dir=str(self.workdir))[1])
        path.write_text(text)
        argv = [self.playbook_bin, "-i", str(self.workdir / "inventory.json"), str(path), *args]
        started = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                              cwd=str(self.workdir), timeout=timeout, universal_newlines=True)
        return PlaybookRun(argv, done, time.monotonic() - started)


class PlaybookRun:
    def __init__(self, argv: List[str], done: subprocess.CompletedProcess, seconds: float) -> None:
        self.argv = argv
        self.rc = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr
        self.seconds = seconds
        try:
            self.data = json.loads(done.stdout[done.stdout.index("{"):])
        except ValueError:
            raise AssertionError("ansible-playbook printed no JSON (rc {}):\n{}\n{}".format(
                done.returncode, done.stdout[-4000:], done.stderr[-4000:])) from None

    def __str__(self) -> str:
        failed = []
        for play in self.data["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    if result.get("failed") or result.get("unreachable"):
                        keep = {k: result.get(k) for k in ("msg", "error_id", "hint", "details", "rc", "stderr", "stdout")
                                if result.get(k)}
                        failed.append("{} [{}]: {}".format(task["task"]["name"], host, json.dumps(keep)[:1500]))
        return "ansible-playbook rc={} in {:.1f}s; stats {}\nfailed: {}\nstderr: {}".format(
            self.rc, self.seconds, json.dumps(self.stats), "\n".join(failed) or "none", self.stderr[-2000:])

    __repr__ = __str__

    @property
    def stats(self) -> Dict[str, Dict[str, int]]:
        return self.data["stats"]

    def result(self, task_name: str, host: str) -> Optional[dict]:
        """The result of the last task of that name (a role's task: "role : name") on that host
        (None when it did not run there)."""
        found = None
        for play in self.data["plays"]:
            for task in play["tasks"]:
                name = task["task"]["name"]
                if (name == task_name or name.endswith(" : " + task_name)) and host in task["hosts"]:
                    found = task["hosts"][host]
        return found
