"""`apt remove nvdocker2` against a LIVE dockerd (issue #19, item 5).

The .debs are installed in the Debian 12 chroot (as in test_deb_install.py) with
NVDOCKER2_INSTALL_ARGS=--default-runtime; the dockerd is the tests' private one
(tests/support/sandbox.py), running outside the chroot on the chroot's /etc/docker/daemon.json,
its socket bind-mounted into the chroot at the same path and named by DOCKER_HOST in apt's
environment. Removal must leave a dockerd whose default is no longer the runtime being removed:
a reload does not forget a removed default-runtime, so the prerm restarts dockerd (before the
binary goes) and verifies it; with NVDOCKER2_RESTART=no it does not, and says loudly what to run.

The restart: NVDOCKER2_RESTART_COMMAND names a script in the chroot that asks this test (a
thread outside the chroot) to restart the sandbox dockerd by the pid the sandbox started, and
waits for the answer.
"""

import json
import os
import threading
import time

from tests.packaging import support
from tests.packaging.test_deb_install import DAEMON_JSON, MARKER, install_all
from tests.support.sandbox import DockerdSandbox, dockerd_or_skip

DEFAULTS = "/etc/default/nvdocker2"
RESTART_DIR = "/run/nvdocker-test-restart"
RESTART_SCRIPT = "/usr/local/sbin/restart-test-dockerd"
ADMIN = b'{\n  "max-concurrent-downloads": 2\n}\n'
# An explicit default and another runtime: after removal both keys are still there, so a reload
# is enough (dockerd replaces keys present in the file).
ADMIN_EXPLICIT = b'{\n  "default-runtime": "runc",\n  "runtimes": {"custom": {"path": "/usr/local/bin/custom-rt"}}\n}\n'


class Restarter(threading.Thread):
    """Restarts the sandbox dockerd when the chroot's restart script asks (a request file)."""

    def __init__(self, root, sandbox):
        super().__init__(daemon=True)
        self.request = root.host(RESTART_DIR + "/request")
        self.done = root.host(RESTART_DIR + "/done")
        self.sandbox = sandbox
        self.stopping = threading.Event()
        self.restarts = 0
        self.errors = []

    def run(self):
        while not self.stopping.wait(0.1):
            if not self.request.exists():
                continue
            self.request.unlink()
            try:
                self.sandbox.restart()
                self.restarts += 1
                status = "0"
            except Exception as error:  # reported by the test through self.errors
                self.errors.append(str(error))
                status = "1"
            partial = self.done.with_name("done.tmp")
            partial.write_text(status)
            os.replace(str(partial), str(self.done))


SCRIPT = """#!/bin/sh
# packaging test: ask the test outside the chroot to restart its private dockerd, wait for it
d={dir}
rm -f "$d/done"
echo restart > "$d/request.tmp" && mv "$d/request.tmp" "$d/request"
i=0
while [ ! -e "$d/done" ]; do
    i=$((i + 1))
    if [ "$i" -gt 1200 ]; then echo "no answer from the test" >&2; exit 1; fi
    sleep 0.1
done
status=$(cat "$d/done")
rm -f "$d/done"
exit "$status"
""".format(dir=RESTART_DIR)


def wait_default(sandbox, expected, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        info = sandbox.info()
        if info.get("DefaultRuntime") == expected or time.monotonic() > deadline:
            return info
        time.sleep(0.2)


def test_remove_restarts_dockerd_that_kept_the_removed_default_runtime(chroot, debs, tmp_path):
    dockerd_or_skip()
    root = chroot
    root.write(DAEMON_JSON, ADMIN)
    root.write(RESTART_SCRIPT, SCRIPT, mode=0o755)
    root.host(RESTART_DIR).mkdir(parents=True, exist_ok=True)
    sandbox = DockerdSandbox(str(tmp_path / "dockerd-outside-the-chroot"))
    sandbox.config_path = str(root.host(DAEMON_JSON))  # dockerd reads the chroot's daemon.json
    mounted = proc = None
    restarter = Restarter(root, sandbox)
    try:
        sandbox.start()
        sandbox.import_tiny_image()
        mounted = root.host(sandbox.run_dir)
        mounted.mkdir(parents=True, exist_ok=True)
        support.run(["mount", "--bind", sandbox.run_dir, str(mounted)])
        restarter.start()
        env = {"DOCKER_HOST": sandbox.docker_host}
        settings = ("NVDOCKER2_INSTALL_ARGS=--default-runtime\nNVDOCKER2_CONFIG={}\nNVDOCKER2_RESTART_COMMAND={}\n"
                    .format(DAEMON_JSON, RESTART_SCRIPT))
        root.write(DEFAULTS, settings)

        # install: nvidia becomes dockerd's default (a reload takes an added default-runtime)
        install_all(root, debs, env=env, recommends=False)
        assert json.loads(root.read(DAEMON_JSON))["default-runtime"] == "nvidia"
        # from now on policy-rc.d allows service actions (docker.io's own postinst has run: it
        # cannot start the chroot's docker)
        root.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 0\n", mode=0o755)
        # and /proc, as on a real host: nvdocker-setup finds dockerd's pid (to SIGHUP it) there
        proc = root.host("/proc")
        support.run(["mount", "-t", "proc", "proc", str(proc)])
        sandbox.reload()
        assert wait_default(sandbox, "nvidia")["DefaultRuntime"] == "nvidia"
        # the host has no /usr/bin/nvdocker-runtime: this dockerd is what a removed package leaves
        broken = sandbox.docker("run", "--rm", "--network", "none", "tiny", "true", check=False)
        assert broken.returncode != 0 and b"nvdocker-runtime" in broken.stderr, broken

        # remove: the prerm restarts dockerd (a reload would keep the removed default) and verifies
        pid = sandbox.pid
        done = root.apt("remove nvdocker2", env=env)
        assert restarter.errors == [] and restarter.restarts == 1, (restarter.errors, done.stdout)
        assert "nvdocker2: restarted dockerd (" in done.stdout, done.stdout
        assert "a reload does not forget the removed default-runtime" in done.stdout, done.stdout
        assert 'verified that dockerd no longer has runtime "nvidia"' in done.stdout, done.stdout
        assert "asked dockerd to reload" not in done.stdout and "WARNING" not in done.stdout, done.stdout
        assert sandbox.pid != pid
        info = sandbox.info()
        assert info["DefaultRuntime"] == "runc" and "nvidia" not in info["Runtimes"], info
        assert root.read(DAEMON_JSON) == ADMIN and not root.exists(MARKER)
        ran = sandbox.docker("run", "--rm", "--network", "none", "tiny", "true", check=False)
        assert ran.returncode == 0, ran.stderr

        # NVDOCKER2_RESTART=no: daemon.json is put back, dockerd is NOT restarted, and the package
        # says loudly what is left and the command to run
        nvdocker2 = root.copy_in([debs["nvdocker2"]], "/tmp/nv2")[0]
        root.write(DEFAULTS, "NVDOCKER2_INSTALL_ARGS=--default-runtime\nNVDOCKER2_CONFIG={}\nNVDOCKER2_RESTART=no\n"
                   .format(DAEMON_JSON))
        root.apt("install " + nvdocker2, env=env)
        sandbox.reload()
        assert wait_default(sandbox, "nvidia")["DefaultRuntime"] == "nvidia"
        pid = sandbox.pid
        done = root.apt("remove nvdocker2", env=env)
        assert "WARNING: dockerd was NOT restarted (NVDOCKER2_RESTART=no in /etc/default/nvdocker2)" in done.stdout, \
            done.stdout
        assert "a reload does not forget the removed default-runtime" in done.stdout
        assert "EVERY `docker run` fails" in done.stdout
        assert "\n  systemctl restart docker\n" in done.stdout
        assert sandbox.pid == pid and restarter.restarts == 1
        assert root.read(DAEMON_JSON) == ADMIN
        assert sandbox.info()["DefaultRuntime"] == "nvidia"  # what the warning is about
        sandbox.restart()  # what the admin was told to do
        assert sandbox.docker("run", "--rm", "--network", "none", "tiny", "true", check=False).returncode == 0

        # a removal that a reload can apply (the admin's file names a default and runtimes of its
        # own): reloaded and verified, not restarted, although restarts are allowed
        root.write(DAEMON_JSON, ADMIN_EXPLICIT)
        sandbox.restart()
        root.write(DEFAULTS, settings)
        root.apt("install " + nvdocker2, env=env)
        sandbox.reload()
        assert wait_default(sandbox, "nvidia")["DefaultRuntime"] == "nvidia"
        pid = sandbox.pid
        done = root.apt("remove nvdocker2", env=env)
        assert "nvdocker2: asked dockerd to reload its configuration" in done.stdout, done.stdout
        assert 'verified that dockerd no longer has runtime "nvidia"' in done.stdout, done.stdout
        assert sandbox.pid == pid and restarter.restarts == 1
        assert root.read(DAEMON_JSON) == ADMIN_EXPLICIT
        assert sandbox.info()["DefaultRuntime"] == "runc"
        assert sandbox.docker("run", "--rm", "--network", "none", "tiny", "true", check=False).returncode == 0
    finally:
        restarter.stopping.set()
        sandbox.close()
        for mount in (proc, mounted):
            if mount is not None:
                support.run(["umount", "-l", str(mount)], check=False)
