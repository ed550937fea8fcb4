"""End to end on real containerd 1.6, 1.7 and 2.1 (issue #10 items 3 and 4): `nvdocker-setup install
--engine containerd` edits the private containerd's config.toml, restarts it through the service
manager (a stand-in systemctl that restarts the private daemon), and verifies the handler in the
live CRI config (RuntimeService/Status); running containers survive; a second install restarts
nothing; uninstall gives back the exact bytes; a containerd that does not come back is rolled back
by itself; and a container started through our launcher on the simulated 2-GPU driver root sees
the GPUs.
"""

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from nvdocker_setup.engines.containerd import cri
from tests.support.containerd import BY_NAME, RELEASES, TINY_IMAGE, PrivateContainerd, containerd_or_skip

pytestmark = pytest.mark.containerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def conforms(data, verb: str) -> None:
    """containerd results keep the documented --json shape (docs/schemas)."""
    with open(os.path.join(REPO, "docs", "schemas", verb + ".json")) as handle:
        jsonschema.validate(data, json.load(handle))


class Node:
    def __init__(self, daemon: PrivateContainerd, bindir: str, work: str, wrapper: str) -> None:
        self.daemon = daemon
        self.bindir = bindir
        self.work = work
        self.wrapper = wrapper
        self.state_dir = os.path.join(work, "state")

    def cli(self, *args: str, timeout: float = 180.0):
        env = dict(
            os.environ,
            PATH=self.bindir + os.pathsep + self.daemon.env["PATH"],
            PYTHONPATH=REPO,
            NVDOCKER_STATE_DIR=self.state_dir,
            NVDOCKER_CONTAINERD_BINARY=self.daemon.containerd,
        )
        env.pop("NVDOCKER_CONTAINERD_CONFIG", None)
        completed = subprocess.run(
            [sys.executable, "-m", "nvdocker_setup", *args, "--json"], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
        )
        try:
            data = json.loads(completed.stdout)
        except ValueError:
            raise AssertionError("not JSON (exit {}): {}\n{}".format(completed.returncode, completed.stdout,
                                                                      completed.stderr)) from None
        return completed.returncode, data

    def handlers(self):
        return cri.status(self.daemon.socket, 10.0).runtimes()

    def restarts(self) -> int:
        return sum(1 for call in self.daemon.systemctl_calls() if call.startswith("restart "))


def executable(path: str, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module", params=[release.name for release in RELEASES], ids=lambda name: "containerd" + name)
def node(request, tmp_path_factory, launcher, driver_root):
    release = BY_NAME[request.param]
    daemon = PrivateContainerd(release, containerd_or_skip(release))
    work = str(tmp_path_factory.mktemp("ctd-node"))
    os.chmod(work, 0o755)
    runtime_conf = os.path.join(work, "runtime.conf")
    try:
        daemon.start()
        daemon.import_tiny_image()
        with open(runtime_conf, "w") as handle:
            handle.write("[runtime]\nruntimes = {}\n".format(daemon.runc))
        # containerd's shim runs BinaryName with containerd's environment: the wrapper adds the
        # simulated driver root and the runtime config, as a host's /etc/nvdocker would.
        wrapper = executable(os.path.join(work, "nvidia-runtime"), (
            "#!/bin/sh\nexport NVDOCKER_DRIVER_ROOT={} NVDOCKER_RUNTIME_CONFIG={}\nexec {} \"$@\"\n"
        ).format(driver_root.path, runtime_conf, launcher))
        yield Node(daemon, daemon.install_systemctl(), work, wrapper)
    finally:
        daemon.close()


def test_install_restarts_verifies_and_uninstall_gives_the_bytes_back(node):
    daemon = node.daemon
    original = open(daemon.config_path, "rb").read()
    daemon.run_container("sleeper", ["sleep", "300"], detach=True)
    sleeper = daemon.tasks()["sleeper"]
    assert "nvidia" not in node.handlers()

    code, data = node.cli("install", "--engine", "containerd", "--config", daemon.config_path,
                          "--runtime-path", node.wrapper, "--service-manager", "systemd", "--timeout", "30")
    assert code == 0, data
    conforms(data, "install")
    assert data["engine"] == "containerd" and data["changed"] is True
    assert data["apply"]["method"] == "restart" and data["apply"]["verified"] is True, data["apply"]
    live = node.handlers()
    assert live["nvidia"]["binary_name"] == node.wrapper
    assert live["nvidia"]["runtime_type"] == "io.containerd.runc.v2"
    assert "runc" in live  # containerd < 2.1 would drop it if the file named only our handler
    assert daemon.tasks()["sleeper"] == sleeper  # the running container outlived the restart
    assert re.search(r"runtimes\.nvidia\]", daemon.config_dump()) or "nvidia" in daemon.config_dump()
    restarts = node.restarts()
    assert restarts == 1

    code, again = node.cli("install", "--engine", "containerd", "--config", daemon.config_path,
                           "--runtime-path", node.wrapper, "--service-manager", "systemd")
    assert code == 0, again
    assert again["changed"] is False and again["apply"]["method"] == "none", again
    assert node.restarts() == restarts  # nothing changed: nothing restarted

    code, shown = node.cli("show", "--engine", "containerd", "--config", daemon.config_path)
    assert code == 0 and shown["installed_by_us"] is True
    conforms(shown, "show")
    assert shown["entry"]["options"]["BinaryName"] == node.wrapper

    code, undone = node.cli("uninstall", "--engine", "containerd", "--config", daemon.config_path,
                            "--service-manager", "systemd", "--timeout", "30")
    assert code == 0, undone
    conforms(undone, "uninstall")
    assert undone["apply"]["verified"] is True, undone["apply"]
    assert open(daemon.config_path, "rb").read() == original
    assert "nvidia" not in node.handlers()
    assert daemon.tasks()["sleeper"] == sleeper
    daemon.remove_containers()


def test_a_containerd_that_does_not_come_back_is_rolled_back(node):
    daemon = node.daemon
    original = open(daemon.config_path, "rb").read()
    count = os.path.join(node.work, "restart-count")
    if os.path.exists(count):
        os.unlink(count)
    # The first restart stops containerd and never starts it (a start that fails); the second, the
    # rollback's, starts it again.
    script = executable(os.path.join(node.work, "flaky-restart"), (
        "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n"
        "if [ $n -eq 1 ]; then exec {python} -m tests.support.containerd stop {dir}; fi\n"
        "exec {python} -m tests.support.containerd start {dir}\n"
    ).format(count=count, python=sys.executable, dir=daemon.workdir))
    code, data = node.cli("install", "--engine", "containerd", "--config", daemon.config_path,
                          "--runtime-path", node.wrapper, "--service-manager", "command",
                          "--restart-command", script, "--timeout", "5")
    assert code == 10, data
    conforms(data, "error")
    assert data["error"]["id"] == "apply-failed-rolled-back", data
    assert open(daemon.config_path, "rb").read() == original
    assert daemon.is_running()
    assert "nvidia" not in node.handlers() and "runc" in node.handlers()
    assert open(count).read().strip() == "2"


def test_a_container_through_our_launcher_sees_the_gpus(node):
    daemon = node.daemon
    done = daemon.ctr("run", "--rm", "--env", "NVIDIA_VISIBLE_DEVICES=all", "--runc-binary", node.wrapper,
                      TINY_IMAGE, "gpu-ls", "sh", "-c", "ls -l /dev", timeout=120, check=False)
    listing = done.stdout.decode(errors="replace")
    assert done.returncode == 0, listing + done.stderr.decode(errors="replace")
    devices = {}
    for line in listing.splitlines():
        match = re.match(r"c\S+\s+\d+\s+\S+\s+\S+\s+(\d+),\s+(\d+)\s+.*\s(\S+)$", line)
        if match:
            devices[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    assert devices.get("nvidia0") == (195, 0) and devices.get("nvidia1") == (195, 1), listing
    assert devices.get("nvidiactl") == (195, 255), listing


# -- drop-in mode: refused on 1.6/1.7 (they replace imported plugin tables), merged and proven on 2.1 --------


def _dump(node):
    import tomlkit

    value = tomlkit.parse(node.daemon.config_dump()).unwrap()
    value.pop("imports", None)
    return value


def _install(node, *extra):
    daemon = node.daemon
    return node.cli("install", "--engine", "containerd", "--config", daemon.config_path, "--drop-in",
                    "--runtime-path", node.wrapper, "--service-manager", "systemd", "--timeout", "30", *extra)


def test_drop_in_install_reinstall_uninstall(node):
    daemon = node.daemon
    original = open(daemon.config_path, "rb").read()
    drop_in = os.path.join(os.path.dirname(daemon.config_path), "conf.d", "99-nvdocker.toml")
    before = _dump(node)
    code, data = _install(node)
    if daemon.release.name in ("1.6", "1.7"):
        assert code != 0 and data["error"]["id"] == "containerd-drop-in-replaces-tables", data
        assert open(daemon.config_path, "rb").read() == original and not os.path.exists(drop_in)
        return
    assert code == 0, data
    assert data["files"] == [drop_in, daemon.config_path] and set(data["backups"]) == set(data["files"])
    assert data["apply"]["verified"] is True, data["apply"]
    live = node.handlers()
    assert live["nvidia"]["binary_name"] == node.wrapper and "runc" in live
    after = _dump(node)
    after["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"].pop("nvidia")
    assert after == before
    restarts = node.restarts()
    code, again = _install(node)
    assert code == 0 and again["changed"] is False and again["files"] == [], again
    assert node.restarts() == restarts
    code, undone = node.cli("uninstall", "--engine", "containerd", "--config", daemon.config_path,
                            "--service-manager", "systemd", "--timeout", "30")
    assert code == 0, undone
    assert undone["files"] == [daemon.config_path, drop_in], undone
    assert open(daemon.config_path, "rb").read() == original
    assert not os.path.exists(drop_in) and not os.path.exists(os.path.dirname(drop_in))
    assert "nvidia" not in node.handlers()


def test_drop_in_failed_apply_rolls_back_both(node):
    daemon = node.daemon
    original = open(daemon.config_path, "rb").read()
    drop_in = os.path.join(os.path.dirname(daemon.config_path), "conf.d", "99-nvdocker.toml")
    if daemon.release.name != "2.1":  # refused before anything is written or restarted
        restarts = node.restarts()
        code, data = _install(node)
        assert code != 0 and data["error"]["id"] == "containerd-drop-in-replaces-tables", data
        assert open(daemon.config_path, "rb").read() == original and not os.path.exists(drop_in)
        assert node.restarts() == restarts
        return
    count = os.path.join(node.work, "dropin-restart-count")
    script = executable(os.path.join(node.work, "flaky-restart-dropin"), (
        "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n"
        "if [ $n -eq 1 ]; then exec {python} -m tests.support.containerd stop {dir}; fi\n"
        "exec {python} -m tests.support.containerd start {dir}\n"
    ).format(count=count, python=sys.executable, dir=daemon.workdir))
    code, data = node.cli("install", "--engine", "containerd", "--config", daemon.config_path, "--drop-in",
                          "--runtime-path", node.wrapper, "--service-manager", "command",
                          "--restart-command", script, "--timeout", "5")
    assert code == 10, data
    assert open(daemon.config_path, "rb").read() == original
    assert not os.path.exists(drop_in)
    assert daemon.is_running() and "nvidia" not in node.handlers()
