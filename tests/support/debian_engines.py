"""Container engines from other Debian releases, unpacked but never installed, for the CDI consumer
tests (tests/newer_docker/test_cdi_consumers.py): Debian 12's podman 4.3, Debian 13's podman 5.4 and
Debian forky's Docker 28.5 (dockerd, containerd 2.1, docker CLI).

Same recipe as tests/support/newer_docker.py (Docker 26.1), whose helpers this reuses unchanged: a
private apt configuration for one suite on the host's own Debian mirror, ``apt-get download`` of a
fixed package list, ``dpkg-deb -x`` into ``<cache_root()>/engine-<name>`` (a prefix of its own, so
that no other fetcher's folder of the same engine is mistaken for this one), an fcntl lock so that parallel
runs download once, and a stamp file written last that marks the folder complete (a folder without
it is a killed run's and is fetched again).

What runs here and what does not (this machine is Debian 12, glibc 2.36):

- podman 4.3.1 (bookworm) runs as is; its libgpgme11 and libsubid4 come along in the folder
  (``LD_LIBRARY_PATH``). Its conmon 2.1.6 serves the podman 5.4 folder too.
- podman 5.4.2 (trixie) needs glibc 2.38, so trixie's libc6 comes along and bookworm's
  ``patchelf`` points ``podman`` and ``netavark`` at it (interpreter and RPATH; the folder's final
  path, so patched after the folder is in place). trixie's conmon needs glibc 2.38 as well: the
  bookworm folder's conmon is used instead.
- Docker 28.5.2 and containerd 2.1.9 (forky) run as is; forky's runc 1.3 needs glibc 2.38 and
  does not, so Debian 12's runc (unpacked with the test engine) stays on PATH behind the folder.
"""

import json
import os
import shutil
import subprocess
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from tests.support.newer_docker import (
    Docker26Unavailable,
    _apt_options,
    _lock,
    _run,
    cache_root,
    host_debian_mirror,
)

STAMP = ".nvdocker-engine.json"
LIB_DIR = "usr/lib/x86_64-linux-gnu"
def host_runc() -> str:
    """Debian 12's runc 1.1, unpacked with the test engine (tests/support/sandbox.py), never the
    host's installed one."""
    from tests.support.sandbox import engine_runc

    return engine_runc()


class EngineUnavailable(RuntimeError):
    """Why an engine could not be provided here."""


class Engine(NamedTuple):
    name: str
    suite: str
    packages: Tuple[str, ...]
    #: Files that must be executable after unpacking.
    binaries: Tuple[str, ...]
    #: argv (relative to the folder) that prints the version, and the prefix the version must have.
    version_argv: Tuple[str, ...]
    expected: str
    #: Binaries to run on the folder's own glibc (patched with patchelf once in place).
    own_glibc: Tuple[str, ...] = ()


PODMAN43 = Engine(
    "engine-podman43", "bookworm",
    ("podman", "conmon", "libgpgme11", "libsubid4", "patchelf"),
    ("usr/bin/podman", "usr/bin/conmon", "usr/bin/patchelf"),
    ("usr/bin/podman", "--version"), "podman version 4.3.",
)
PODMAN54 = Engine(
    "engine-podman54", "trixie",
    ("podman", "netavark", "libc6", "libgpgme11t64", "libsubid5", "libassuan9", "libgpg-error0"),
    ("usr/bin/podman", "usr/lib/podman/netavark", LIB_DIR + "/ld-linux-x86-64.so.2"),
    ("usr/bin/podman", "--version"), "podman version 5.4.",
    own_glibc=("usr/bin/podman", "usr/lib/podman/netavark"),
)
DOCKER28 = Engine(
    "engine-docker28", "forky",
    ("docker.io", "containerd", "docker-cli"),
    ("usr/sbin/dockerd", "usr/bin/docker", "usr/bin/containerd", "usr/bin/containerd-shim-runc-v2"),
    ("usr/sbin/dockerd", "--version"), "Docker version 28.5.",
)
ENGINES = {engine.name: engine for engine in (PODMAN43, PODMAN54, DOCKER28)}


def _call(argv: Sequence[str], what: str, cwd: Optional[str] = None, timeout: float = 600.0) -> str:
    try:
        return _run(argv, what, cwd=cwd, timeout=timeout)
    except Docker26Unavailable as error:  # newer_docker's runner names its own exception
        raise EngineUnavailable(str(error)) from None


def _prepare_apt(apt_dir: str, suite: str, uri: str, keyring: str) -> None:
    """newer_docker's private apt layout, for any suite."""
    for sub in ("sources.list.d", "preferences.d", "state", "lists/partial", "cache", "archives/partial", "debs"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    for empty in ("sources.list", "status"):
        open(os.path.join(apt_dir, empty), "w").close()
    with open(os.path.join(apt_dir, "sources.list.d", suite + ".sources"), "w") as handle:
        handle.write("Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: {}\n".format(uri, suite, keyring))
    try:  # apt downloads as _apt into the current directory when it may write there
        import pwd

        os.chown(os.path.join(apt_dir, "debs"), pwd.getpwnam("_apt").pw_uid, -1)
    except (KeyError, OSError):
        pass


def _complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, STAMP))


def _env(engine: Engine, folder: str) -> Dict[str, str]:
    env = dict(os.environ, LC_ALL="C")
    if engine is PODMAN43:
        env["LD_LIBRARY_PATH"] = os.path.join(folder, LIB_DIR)
    return env


def engine_version(engine: Engine, folder: str) -> str:
    argv = [os.path.join(folder, engine.version_argv[0]), *engine.version_argv[1:]]
    try:
        done = subprocess.run(argv, env=_env(engine, folder), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise EngineUnavailable("cannot run {}: {}".format(" ".join(argv), error)) from None
    output = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        raise EngineUnavailable("{} failed ({}): {}".format(" ".join(argv), done.returncode, output[-400:]))
    return output


def _patch_glibc(engine: Engine, folder: str, patchelf: str) -> None:
    lib = os.path.join(folder, LIB_DIR)
    for binary in engine.own_glibc:
        _call([patchelf, "--set-interpreter", os.path.join(lib, "ld-linux-x86-64.so.2"), "--force-rpath",
               "--set-rpath", lib, os.path.join(folder, binary)], "patchelf " + binary, timeout=60)


def _fetch_into(engine: Engine, work: str) -> Tuple[str, Dict[str, str], str]:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/bin:/bin") is None:
            raise EngineUnavailable("{} is not installed".format(tool))
    uri, keyring = host_debian_mirror()
    apt_dir = os.path.join(work, "apt")
    _prepare_apt(apt_dir, engine.suite, uri, keyring)
    options = _apt_options(apt_dir)
    _call(["apt-get", "-q", "-q", *options, "update"], "apt-get update ({} {})".format(uri, engine.suite), timeout=300)
    debs = os.path.join(apt_dir, "debs")
    _call(["apt-get", "-q", "-q", *options, "download", *engine.packages], "apt-get download", cwd=debs, timeout=600)
    tree = os.path.join(work, "tree")
    os.makedirs(tree)
    fetched = {}
    for name in sorted(os.listdir(debs)):
        if name.endswith(".deb"):
            deb = os.path.join(debs, name)
            fields = _call(["dpkg-deb", "-f", deb, "Package", "Version"], "dpkg-deb -f " + name, timeout=60)
            package = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
            fetched[package.get("Package", name)] = package.get("Version", "?")
            _call(["dpkg-deb", "-x", deb, tree], "dpkg-deb -x " + name, timeout=300)
    missing = [p for p in engine.packages if p not in fetched]
    if missing:
        raise EngineUnavailable("apt-get download did not fetch {}".format(", ".join(missing)))
    for binary in engine.binaries:
        if not os.path.exists(os.path.join(tree, binary)):
            raise EngineUnavailable("{} is missing from the unpacked packages".format(binary))
    return tree, fetched, uri


def ensure_engine(engine: Engine, cache: Optional[str] = None) -> str:
    """The cached folder of ``engine``, fetched (and patched) first when missing."""
    cache = cache or cache_root()
    folder = os.path.join(cache, engine.name)
    if _complete(folder):
        return folder
    patchelf = None
    if engine.own_glibc:
        patchelf = os.path.join(ensure_engine(PODMAN43, cache), "usr", "bin", "patchelf")
    try:
        os.makedirs(cache, exist_ok=True)
        fd = _lock(os.path.join(cache, engine.name + ".lock"))
    except (OSError, Docker26Unavailable) as error:
        raise EngineUnavailable("cannot lock the cache {}: {}".format(cache, error)) from None
    try:
        if _complete(folder):  # another run finished it while we waited
            return folder
        work = os.path.join(cache, engine.name + ".work")
        for leftover in (folder, work):  # half-made by a run that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        os.makedirs(work)
        try:
            tree, fetched, uri = _fetch_into(engine, work)
            os.rename(tree, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if patchelf is not None:
            _patch_glibc(engine, folder, patchelf)
        version = engine_version(engine, folder)
        if not version.startswith(engine.expected):
            raise EngineUnavailable("Debian {} now ships {!r}, not {}x; update tests/support/debian_engines.py".format(
                engine.suite, version, engine.expected))
        with open(os.path.join(folder, STAMP), "w") as handle:  # last: marks the folder complete
            json.dump({"suite": engine.suite, "mirror": uri, "packages": fetched, "version": version,
                       "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=2, sort_keys=True)
            handle.write("\n")
        return folder
    finally:
        os.close(fd)


_outcome: Dict[Tuple[str, str], Tuple[Optional[str], str]] = {}


def engine_or_skip(engine: Engine) -> str:
    """The engine's folder; a skip when it cannot be had, a failure under CI=true. Needs root (private
    daemons, mount namespaces); the outcome is remembered for the session."""
    import pytest

    key = (cache_root(), engine.name)
    if key not in _outcome:
        if os.geteuid() != 0:
            _outcome[key] = (None, "{} needs root".format(engine.name))
        elif shutil.which("unshare") is None and engine is not DOCKER28:
            _outcome[key] = (None, "unshare (util-linux) is not installed")
        else:
            try:
                _outcome[key] = (ensure_engine(engine), "")
            except (EngineUnavailable, OSError) as error:
                _outcome[key] = (None, "{} from Debian {} is not available: {}".format(engine.name, engine.suite, error))
    folder, why = _outcome[key]
    if folder is not None:
        return folder
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why + " (the CDI consumer tests must run in CI)")
    pytest.skip(why)
    raise AssertionError("unreachable")


# -- running podman -----------------------------------------------------------------------------------


def _ulimits() -> List[str]:
    """Modest fixed limits, lowered to this process's hard limits (seen: podman 4.3's runc could not
    even set RLIMIT_NPROC to the caller's own hard limit, 4096 it could)."""
    import resource

    flags = []
    for name, which, wanted in (("nofile", resource.RLIMIT_NOFILE, 1024), ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(which)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        flags += ["--ulimit", "{0}={1}:{1}".format(name, value)]
    return flags


class Podman:
    """One podman from a folder, with every bit of state in ``workdir``: ``--root``/``--runroot``
    there, cgroupfs (no systemd here), the file events backend, the host's runc, vfs storage, and
    containers run from a rootfs folder (``--rootfs``: no image store, no policy.json needed).

    Podman 4.3 has no ``--cdi-spec-dir`` and reads CDI specs only from /etc/cdi and /var/run/cdi,
    which this machine's own engines may read too: each run happens in a private mount namespace
    (``unshare --mount --propagation private``) with a tmpfs on /run, into which the spec is copied as
    /run/cdi/<name> (= /var/run/cdi). Nothing of it is visible outside the command.

    podman 4.3 returns about 20 s after its container exits here: it gives up waiting for conmon
    ("Exceeded conmon timeout waiting for container to exit") although conmon wrote the exit file
    (seen with ``run --rm`` and with ``run -d`` + ``wait``); 5.4 with the same conmon returns at once.
    """

    def __init__(self, engine: Engine, folder: str, conmon: str, workdir: str) -> None:
        self.engine = engine
        self.folder = folder
        self.conmon = conmon
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.conf = os.path.join(workdir, "containers.conf")
        with open(self.conf, "w") as handle:  # where podman 5 finds netavark (not used: --network none)
            handle.write('[engine]\nhelper_binaries_dir = ["{}"]\n'.format(os.path.join(folder, "usr", "lib", "podman")))

    @property
    def binary(self) -> str:
        return os.path.join(self.folder, "usr", "bin", "podman")

    def global_flags(self) -> List[str]:
        return [
            "--root", os.path.join(self.workdir, "root"), "--runroot", os.path.join(self.workdir, "runroot"),
            "--tmpdir", os.path.join(self.workdir, "tmp"), "--cgroup-manager", "cgroupfs",
            "--events-backend", "file", "--conmon", self.conmon, "--runtime", host_runc(), "--storage-driver", "vfs",
        ]

    def env(self) -> Dict[str, str]:
        env = _env(self.engine, self.folder)
        env.update(CONTAINERS_CONF=self.conf, PODMAN_IGNORE_CGROUPSV1_WARNING="1")
        return env

    def run(self, spec: Optional[bytes], spec_name: str, rootfs: str, device: Union[str, Sequence[str]], script: str,
            timeout: float = 120.0, more_specs: Optional[Dict[str, bytes]] = None) -> subprocess.CompletedProcess:
        """``podman run --rm --network none --device DEVICE... --rootfs ROOTFS sh -c SCRIPT`` with ``spec``
        (and ``more_specs``, by file name: another kind's spec) as the only CDI specs podman can see."""
        specs: Dict[str, bytes] = {} if spec is None else {spec_name: spec}
        specs.update(more_specs or {})
        staged_dir = os.path.join(self.workdir, "staged-cdi")
        if os.path.isdir(staged_dir):
            shutil.rmtree(staged_dir)
        os.makedirs(staged_dir)
        for name, data in specs.items():
            with open(os.path.join(staged_dir, os.path.basename(name)), "wb") as handle:
                handle.write(data)
        devices = [device] if isinstance(device, str) else list(device)
        # podman raises RLIMIT_NOFILE and RLIMIT_NPROC to the maximum by default, which needs
        # CAP_SYS_RESOURCE (not granted here): keep the limits this process has
        argv = [self.binary, *self.global_flags(), "run", "--rm", "--network", "none", *_ulimits(),
                *[flag for name in devices for flag in ("--device", name)], "--rootfs", rootfs, "sh", "-c", script]
        inner = "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/cdi"
        if specs:
            inner += " && cp \"$0\"/* /run/cdi/ && chmod 0644 /run/cdi/*"
        inner += " && shift && exec \"$@\""
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, staged_dir, "-", *argv],
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False,
        )
