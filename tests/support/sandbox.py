"""A real, private dockerd for tests and `make demo` (recipe: ../shared/TESTING.md).

The daemon lives entirely in a temp dir: its socket, data root, exec root, pidfile and the
daemon.json under test. It creates no bridge and no iptables rules, and containers run with
``--network none``. It is stopped by the pid we started, never by name.

Also a command line for the demo: ``python -m tests.support.sandbox start|stop|restart DIR``.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

DOCKERD_FLAGS = ("--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false")
TINY_IMAGE = "tiny:latest"
TINY_COMMANDS = ("sh", "ls", "cat", "env", "echo", "true", "sleep", "readlink", "stat", "head", "grep")


class SandboxError(RuntimeError):
    pass


_engine: Dict[str, object] = {}


def engine_folder() -> Optional[str]:
    """Debian 12's docker.io, containerd and runc, unpacked under the test cache (never installed:
    `make test` must not touch the host's own Docker packages); None when it cannot be had, and
    why in :func:`engine_problem`. ``NVDOCKER_TEST_DOCKERD`` names another dockerd instead."""
    if "folder" not in _engine:
        _engine["folder"], _engine["why"] = None, ""
        if os.geteuid() != 0:
            _engine["why"] = "a private dockerd needs root"
        else:
            from tests.support.newer_docker import Docker26Unavailable, ensure_docker20

            try:
                _engine["folder"] = ensure_docker20()
            except (Docker26Unavailable, OSError) as error:
                _engine["why"] = "Debian 12's docker.io could not be fetched and unpacked: {}".format(error)
    return _engine["folder"]  # type: ignore[return-value]


def engine_problem() -> str:
    engine_folder()
    return str(_engine.get("why") or "")


def engine_bin_dirs() -> List[str]:
    """Where the private dockerd finds containerd, its shims, runc and the docker CLI."""
    folder = engine_folder()
    return [os.path.join(folder, "usr", "sbin"), os.path.join(folder, "usr", "bin")] if folder else []


def engine_path(name: str) -> Optional[str]:
    """A binary of the unpacked test engine (runc, containerd, docker, ...), never the host's own;
    None when the engine cannot be had."""
    for directory in engine_bin_dirs():
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def engine_binary(name: str) -> str:
    """:func:`engine_path` for a test: under CI=true a missing one fails the test, elsewhere skips it."""
    found = engine_path(name)
    if found is not None:
        return found
    import pytest

    why = "{} of the unpacked test engine is missing ({})".format(name, engine_problem() or "not in the folder")
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why)
    pytest.skip(why)
    raise AssertionError("unreachable")


def engine_runc() -> str:
    """Debian 12's runc, unpacked with the test engine."""
    return engine_binary("runc")


def find_dockerd() -> Optional[str]:
    chosen = os.environ.get("NVDOCKER_TEST_DOCKERD")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    folder = engine_folder()
    return os.path.join(folder, "usr", "sbin", "dockerd") if folder else None


def dockerd_or_skip() -> str:
    """The dockerd binary; a missing one fails under CI=true (real-engine tests must run there)."""
    import pytest

    path = find_dockerd()
    if path and os.geteuid() == 0:
        return path
    why = engine_problem() or "dockerd is not available"
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why + " (the real-engine tests must run in CI)")
    pytest.skip(why)
    raise AssertionError("unreachable")


def _unix_http_get(socket_path: str, path: str, timeout: float = 3.0) -> bytes:
    """A minimal HTTP/1.0 GET over a unix socket (the sandbox must not depend on the code under test)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall("GET {} HTTP/1.0\r\nHost: docker\r\n\r\n".format(path).encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise SandboxError("GET {} -> {}".format(path, head.split(b"\r\n", 1)[0].decode(errors="replace")))
    return body


def unmount_below(directory: str) -> None:
    """Unmount every mount point under ``directory`` (dockerd bind-mounts its data root), deepest first."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as handle:
            points = [line.split()[4] for line in handle]
    except OSError:
        return
    for point in sorted((p for p in points if (p + "/").startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class DockerdSandbox:
    """One private dockerd process; restartable with the same daemon.json and flags."""

    def __init__(
        self,
        workdir: str,
        daemon_json: Optional[bytes] = b"{}\n",
        path_prepend: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        dockerd: Optional[str] = None,
        extra_flags: Sequence[str] = (),
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = os.path.abspath(workdir)
        #: argv dockerd is started through, which must exec it (``unshare ... --``: the production
        #: shape's mount namespace, tests/support/production.py); the pid stays dockerd's.
        self.prefix = list(prefix)
        os.makedirs(self.workdir, exist_ok=True)
        # unix socket paths are limited to ~104 bytes and containerd nests its own below exec-root:
        # a long workdir gets a short run dir, made here and removed by close()
        self._own_run_dir = len(self.workdir) > 40 and daemon_json is not None
        self.run_dir = tempfile.mkdtemp(prefix="nvd.", dir="/tmp") if self._own_run_dir else self.workdir
        self.config_path = os.path.join(self.workdir, "daemon.json")
        self.socket_path = os.path.join(self.run_dir, "docker.sock")
        self.pidfile = os.path.join(self.workdir, "docker.pid")
        self.log_path = os.path.join(self.workdir, "dockerd.log")
        self.dockerd = dockerd or find_dockerd() or "dockerd"
        self.extra_flags = list(extra_flags)
        base_path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        self.env = dict(os.environ)
        # The unpacked Debian 12 engine comes right after what the caller puts first (Docker 26's
        # own containerd, say): its runc and containerd, never whatever the host has installed.
        self.env["PATH"] = os.pathsep.join(list(path_prepend) + engine_bin_dirs() + [base_path, "/usr/sbin", "/sbin"])
        self.env.update(env or {})
        self.process: Optional[subprocess.Popen] = None
        if daemon_json is not None and not os.path.exists(self.config_path):
            with open(self.config_path, "wb") as handle:
                handle.write(daemon_json)

    @property
    def docker_host(self) -> str:
        return "unix://" + self.socket_path

    @property
    def argv(self) -> List[str]:
        return self.prefix + [
            self.dockerd,
            *DOCKERD_FLAGS,
            "-H", self.docker_host,
            "--data-root", os.path.join(self.workdir, "data"),
            "--exec-root", os.path.join(self.run_dir, "exec"),
            "--pidfile", self.pidfile,
            "--config-file", self.config_path,
            *self.extra_flags,
        ]

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 40.0) -> None:
        """Start dockerd and wait for /_ping; on failure raise with the log's tail."""
        if self.is_running():
            raise SandboxError("already running (pid {})".format(self.pid))
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                start_new_session=True, cwd=self.workdir,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SandboxError("dockerd exited with {}:\n{}".format(self.process.returncode, self.log_tail()))
            if self.ping():
                return
            time.sleep(0.1)
        self.stop()
        raise SandboxError("dockerd did not answer within {} s:\n{}".format(timeout, self.log_tail()))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the pid we started and wait; SIGKILL only if it does not exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self, timeout: float = 40.0) -> None:
        self.stop()
        self.start(timeout)

    def reload(self) -> None:
        if self.pid is None:
            raise SandboxError("not running")
        os.kill(self.pid, signal.SIGHUP)

    def ping(self) -> bool:
        try:
            return _unix_http_get(self.socket_path, "/_ping", timeout=1.0) == b"OK"
        except (OSError, SandboxError):
            return False

    def info(self) -> Dict:
        return json.loads(_unix_http_get(self.socket_path, "/info").decode())

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0, input: Optional[bytes] = None) -> subprocess.CompletedProcess:
        docker = shutil.which("docker", path=self.env["PATH"]) or "docker"
        completed = subprocess.run(
            [docker, "-H", self.docker_host, *args], input=input, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=timeout, env=dict(os.environ, DOCKER_CONFIG=os.path.join(self.workdir, "cli")),
        )
        if check and completed.returncode != 0:
            raise SandboxError("docker {} failed ({}): {}".format(
                " ".join(args), completed.returncode, completed.stderr.decode(errors="replace")))
        return completed

    def import_tiny_image(self) -> str:
        """Build `tiny:latest` from static busybox (nothing can be pulled here)."""
        busybox = shutil.which("busybox") or "/bin/busybox"
        root = tempfile.mkdtemp(dir=self.workdir, prefix="rootfs.")
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        for command in TINY_COMMANDS:
            os.symlink("busybox", os.path.join(root, "bin", command))
        tar = subprocess.run(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE, check=True).stdout
        self.docker("import", "-", TINY_IMAGE, input=tar)
        shutil.rmtree(root, ignore_errors=True)
        return TINY_IMAGE

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return b"".join(handle.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop dockerd, unmount what it left mounted in our dirs, remove the short run dir."""
        self.stop()
        for root in {self.workdir, self.run_dir}:
            unmount_below(root)
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> "DockerdSandbox":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- command line for scripts/demo.sh: the demo's "service manager" restarts through here ----------

def _detached_start(workdir: str) -> None:
    sandbox = DockerdSandbox(workdir, daemon_json=None)
    pid = _read_pid(sandbox)
    if pid is not None:
        raise SandboxError("already running (pid {})".format(pid))
    sandbox.start()
    assert sandbox.process is not None
    sandbox.process = None  # leave it running after we exit; stop goes through the pidfile


def _read_pid(sandbox: DockerdSandbox) -> Optional[int]:
    try:
        with open(sandbox.pidfile) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        with open("/proc/{}/cmdline".format(pid), "rb") as handle:
            if sandbox.config_path.encode() not in handle.read():
                return None  # a recycled pid: not our dockerd
        return pid
    except (OSError, ValueError):
        return None


def _detached_stop(workdir: str, timeout: float = 30.0) -> None:
    sandbox = DockerdSandbox(workdir, daemon_json=None)
    pid = _read_pid(sandbox)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["path"]:  # for scripts: the PATH entries of the private engine, or why not
        dirs = engine_bin_dirs() if find_dockerd() else []
        if not dirs:
            print("sandbox: {}".format(engine_problem() or "no dockerd"), file=sys.stderr)
            return 1
        print(os.pathsep.join(dirs))
        return 0
    if len(argv) != 2 or argv[0] not in ("start", "stop", "restart"):
        print("usage: python -m tests.support.sandbox start|stop|restart DIR | path", file=sys.stderr)
        return 2
    action, workdir = argv
    try:
        if action in ("stop", "restart"):
            _detached_stop(workdir)
        if action in ("start", "restart"):
            _detached_start(workdir)
    except SandboxError as error:
        print("sandbox: {}".format(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


class SandboxService:
    """A ServiceManager (nvdocker_setup.adapters.service) that drives a DockerdSandbox for real.

    ``broken_reload`` makes reload a no-op (a reload that "succeeds" without dockerd taking it),
    ``fail_restarts`` makes the next N restarts fail after stopping dockerd, like a unit that
    will not start. Every call is recorded in ``calls``.
    """

    name = "sandbox"
    can_restart = True

    def __init__(self, sandbox: DockerdSandbox, broken_reload: bool = False, fail_restarts: int = 0) -> None:
        self.sandbox = sandbox
        self.broken_reload = broken_reload
        self.fail_restarts = fail_restarts
        self.calls: List[str] = []

    def reload(self) -> None:
        self.calls.append("reload")
        if not self.broken_reload:
            self.sandbox.reload()

    def restart(self) -> None:
        from nvdocker_setup.adapters.service import ServiceError

        self.calls.append("restart")
        if self.fail_restarts > 0:
            self.fail_restarts -= 1
            self.sandbox.stop()
            raise ServiceError("restart failed on purpose (test)")
        try:
            self.sandbox.restart()
        except SandboxError as error:
            raise ServiceError("dockerd did not start: {}".format(str(error).splitlines()[0])) from None

    def reset_failed(self) -> None:
        self.calls.append("reset-failed")

    def is_active(self) -> bool:
        return self.sandbox.is_running()

    def main_pid(self) -> Optional[int]:
        return self.sandbox.pid

    def logs_hint(self) -> str:
        return "less " + self.sandbox.log_path

    def recent_logs(self, since) -> List[str]:
        return [line for line in self.sandbox.log_tail(40).splitlines() if "level=error" in line or "level=fatal" in line]

    def describe(self) -> str:
        return "sandbox dockerd"


def gpu_sandbox(work: str, launcher: str, driver_root: str, runtime_conf: str = "",
                gpus_hook: bool = False) -> DockerdSandbox:
    """A private dockerd (not started yet) in ``work/dockerd`` whose runtime ``nvidia`` is our launcher
    on a simulated driver root: ``work/runtime.conf`` holds ``[runtime]``, ``runtimes = runc`` and
    ``runtime_conf``'s lines; with ``gpus_hook`` our hook is on dockerd's PATH as
    nvidia-container-runtime-hook, which registers ``--gpus``."""
    from nvdocker_setup.runtime.config import hook_script

    path_prepend = []
    if gpus_hook:
        hookdir = os.path.join(work, "hookbin")
        os.makedirs(hookdir, mode=0o755, exist_ok=True)
        hook = os.path.join(hookdir, "nvidia-container-runtime-hook")
        with open(hook, "w") as handle:
            handle.write('#!/bin/sh\nexec {} -I -S {} "$@"\n'.format(sys.executable, hook_script()))
        os.chmod(hook, 0o755)
        path_prepend.append(hookdir)
    conf = os.path.join(work, "runtime.conf")
    with open(conf, "w") as handle:
        handle.write("[runtime]\nruntimes = runc\n" + runtime_conf)
    return DockerdSandbox(
        os.path.join(work, "dockerd"),
        daemon_json=('{"runtimes": {"nvidia": {"path": "%s"}}}\n' % launcher).encode(),
        path_prepend=path_prepend,
        env={"NVDOCKER_DRIVER_ROOT": driver_root, "NVDOCKER_RUNTIME_CONFIG": conf},
    )


def cli_script(directory: str) -> str:
    """An ``nvdocker-setup`` command for this tree and this interpreter (the venv's console script in
    the PyPI pass; ``/usr/bin/python3 -m nvdocker_setup`` in the Debian pass, which installs none)."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, "nvdocker-setup")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(path, "w") as handle:
        handle.write('#!/bin/sh\nPYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}} exec {python} -m nvdocker_setup "$@"\n'.format(
            repo=repo, python=sys.executable))
    os.chmod(path, 0o755)
    return path
