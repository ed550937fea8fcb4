"""Docker 26.1 from Debian 13 (trixie), unpacked but never installed, for real-engine tests of what
this machine's dockerd 20.10 cannot show: CDI (``features.cdi``, ``--device nvidia.com/gpu=0``) and
``dockerd --validate`` (23.0+). Recipe: /work/shared/TESTING.md, "A newer Docker (26.1)".

apt fetches ``docker.io``, ``containerd`` and ``docker-cli`` from ``trixie main`` on the Debian mirror
the host's own sources use, with a private sources list, preferences, lists, caches and an empty dpkg
status under the cache dir: the host's apt configuration is only read (its proxy settings apply),
never written. ``dpkg-deb -x`` unpacks the packages into ``<cache>/docker26`` (``usr/bin``: docker,
containerd and its shims; ``usr/sbin``: dockerd), which appears by one rename once it is complete. An
fcntl lock makes parallel runs download once. runc is Debian 12's (trixie's needs a newer glibc):
the containerd that dockerd starts finds it on PATH.

The same machinery unpacks Debian 12's own docker.io 20.10, containerd 1.6 and runc 1.1
(:data:`DOCKER20`): the private dockerd of every other real-engine test and of ``make demo``, so
that no test installs a Docker package on the host.
"""

import errno
import fcntl
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Sequence, Tuple

SUITE = "trixie"
PACKAGES = ("docker.io", "containerd", "docker-cli")
EXPECTED_MAJOR = 26
FOLDER_NAME = "docker26"
STAMP = ".nvdocker-docker26.json"  # = DOCKER26.stamp
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LOCK_WAIT = 900.0  # another run may be downloading; that takes seconds, not minutes

_VERSION = re.compile(r"version\s+v?((\d+)\.(\d+)\S*?),?\s")


class Docker26Unavailable(RuntimeError):
    """Why the Docker 26 binaries could not be provided here."""


class Release:
    """One Debian suite's Docker, unpacked into ``<cache>/<folder>``."""

    def __init__(self, suite: str, packages: Sequence[str], major: int, folder: str,
                 binaries: Sequence[str]) -> None:
        self.suite = suite
        self.packages = tuple(packages)
        self.major = major
        self.folder = folder
        self.stamp = ".nvdocker-{}.json".format(folder)
        self.binaries = tuple(binaries)


_DOCKER_BINARIES = ("usr/sbin/dockerd", "usr/bin/docker", "usr/bin/containerd", "usr/bin/containerd-shim-runc-v2")
DOCKER26 = Release(SUITE, PACKAGES, EXPECTED_MAJOR, FOLDER_NAME, _DOCKER_BINARIES)
#: Debian 12's own docker.io 20.10 with its containerd 1.6 and runc 1.1: the private dockerd of
#: the tests and the demo, unpacked instead of installed, so that `make test` never installs or
#: removes a package of the host's Docker (docker-ce, containerd.io and runc conflict with it).
DOCKER20 = Release("bookworm", ("docker.io", "containerd", "runc"), 20, "docker20",
                   _DOCKER_BINARIES + ("usr/sbin/runc",))


def cache_root() -> str:
    """``$NVDOCKER_TEST_CACHE``, else the cache the packaging tests share (root) or the user's."""
    chosen = os.environ.get("NVDOCKER_TEST_CACHE")
    if chosen:
        return os.path.abspath(chosen)
    if os.geteuid() == 0:
        return "/var/cache/nvdocker-tests"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nvdocker-tests")


# -- the host's Debian mirror ------------------------------------------------------------------------


def _deb822(text: str) -> List[Dict[str, str]]:
    """The stanzas of a deb822 file, keys lower-cased (continuation lines joined with a space)."""
    stanzas: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    last: Optional[str] = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                current[last] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            last = key.strip().lower()
            current[last] = value.strip()
    return stanzas


def _is_main_archive(uri: str, suites: Sequence[str], components: Sequence[str]) -> bool:
    """A source of Debian's main archive: a plain release suite (no -updates/-security) with main."""
    return (
        "main" in components
        and any(suite and "-" not in suite and "/" not in suite for suite in suites)
        and "security" not in uri
        and uri.startswith(("http://", "https://"))
    )


def _keyring(signed_by: Optional[str]) -> str:
    """A keyring file from a Signed-By value (an inline key block does not count)."""
    for candidate in (signed_by or "").split():
        if candidate.startswith("/") and os.path.isfile(candidate):
            return candidate
    return DEFAULT_KEYRING


def host_debian_mirror(etc_apt: str = "/etc/apt") -> Tuple[str, str]:
    """(URI, keyring) of the first enabled Debian main-archive source of this host."""
    parts = os.path.join(etc_apt, "sources.list.d")
    names = sorted(os.listdir(parts)) if os.path.isdir(parts) else []
    for name in [p for p in names if p.endswith(".sources")]:
        try:
            with open(os.path.join(parts, name), errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        for stanza in _deb822(text):
            if stanza.get("enabled", "yes").lower() == "no" or "deb" not in stanza.get("types", "").split():
                continue
            for uri in stanza.get("uris", "").split():
                if _is_main_archive(uri, stanza.get("suites", "").split(), stanza.get("components", "").split()):
                    return uri.rstrip("/"), _keyring(stanza.get("signed-by"))
    for path in [os.path.join(etc_apt, "sources.list")] + [os.path.join(parts, p) for p in names if p.endswith(".list")]:
        try:
            with open(path, errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            options = re.search(r"\[([^\]]*)\]", line.split("#", 1)[0])
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) < 4 or words[0] != "deb":
                continue
            if _is_main_archive(words[1], [words[2]], words[3:]):
                signed_by = None
                for option in (options.group(1).split() if options else ()):
                    if option.lower().startswith("signed-by="):
                        signed_by = option.split("=", 1)[1]
                return words[1].rstrip("/"), _keyring(signed_by)
    return DEFAULT_MIRROR, DEFAULT_KEYRING


# -- fetch, unpack, cache -----------------------------------------------------------------------------


def _run(argv: Sequence[str], what: str, cwd: Optional[str] = None, timeout: float = 600.0) -> str:
    """Run quietly; on failure raise Docker26Unavailable with the command's last lines."""
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        raise Docker26Unavailable("{} did not finish within {:g} s".format(what, timeout)) from None
    except OSError as error:
        raise Docker26Unavailable("cannot run {}: {}".format(argv[0], error)) from None
    output = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-6:])
        raise Docker26Unavailable("{} failed ({}):\n{}".format(what, done.returncode, tail))
    return output


def _apt_options(apt_dir: str) -> List[str]:
    """Options that point every file apt reads or writes for the suite at ``apt_dir``."""
    settings = {
        "Dir::Etc::SourceList": os.path.join(apt_dir, "sources.list"),
        "Dir::Etc::SourceParts": os.path.join(apt_dir, "sources.list.d"),
        "Dir::Etc::Preferences": os.path.join(apt_dir, "preferences"),
        "Dir::Etc::PreferencesParts": os.path.join(apt_dir, "preferences.d"),
        "Dir::State": os.path.join(apt_dir, "state"),
        "Dir::State::Lists": os.path.join(apt_dir, "lists"),
        "Dir::State::status": os.path.join(apt_dir, "status"),
        "Dir::Cache": os.path.join(apt_dir, "cache"),
        "Dir::Cache::Archives": os.path.join(apt_dir, "archives"),
        "Acquire::Languages": "none",
        "Acquire::Retries": "1",
    }
    options = []
    for key, value in settings.items():
        options += ["-o", "{}={}".format(key, value)]
    return options


def _prepare_apt(apt_dir: str, uri: str, keyring: str, suite: str = SUITE) -> None:
    for sub in ("sources.list.d", "preferences.d", "state", "lists/partial", "cache", "archives/partial", "debs"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    for empty in ("sources.list", "status"):
        open(os.path.join(apt_dir, empty), "w").close()
    with open(os.path.join(apt_dir, "sources.list.d", suite + ".sources"), "w") as handle:
        handle.write("Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: {}\n".format(uri, suite, keyring))
    try:  # apt downloads as _apt into the current directory when it may write there
        entry = pwd.getpwnam("_apt")
        os.chown(os.path.join(apt_dir, "debs"), entry.pw_uid, -1)
    except (KeyError, OSError):
        pass


def dockerd_version(folder: str) -> Tuple[str, int, int]:
    """(version, major, minor) that ``<folder>/usr/sbin/dockerd --version`` prints."""
    output = _run([os.path.join(folder, "usr", "sbin", "dockerd"), "--version"], "dockerd --version", timeout=30)
    match = _VERSION.search(output + " ")
    if match is None:
        raise Docker26Unavailable("unexpected `dockerd --version` output: {!r}".format(output.strip()))
    return match.group(1), int(match.group(2)), int(match.group(3))


def _complete(folder: str, release: Release = DOCKER26) -> bool:
    return os.path.isfile(os.path.join(folder, release.stamp)) and os.access(os.path.join(folder, "usr", "sbin", "dockerd"), os.X_OK)


def _fetch_into(work: str, release: Release = DOCKER26) -> str:
    """Download and unpack the packages below ``work``; return the finished tree (not yet in place)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/bin:/bin") is None:
            raise Docker26Unavailable("{} is not installed".format(tool))
    uri, keyring = host_debian_mirror()
    apt_dir = os.path.join(work, "apt")
    _prepare_apt(apt_dir, uri, keyring, release.suite)
    options = _apt_options(apt_dir)
    _run(["apt-get", "-q", "-q", *options, "update"], "apt-get update ({} {})".format(uri, release.suite), timeout=300)
    debs = os.path.join(apt_dir, "debs")
    _run(["apt-get", "-q", "-q", *options, "download", *release.packages], "apt-get download", cwd=debs, timeout=600)
    tree = os.path.join(work, "tree")
    os.makedirs(tree)
    fetched = {}
    for name in sorted(os.listdir(debs)):
        if not name.endswith(".deb"):
            continue
        deb = os.path.join(debs, name)
        fields = _run(["dpkg-deb", "-f", deb, "Package", "Version"], "dpkg-deb -f " + name, timeout=60)
        package = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
        fetched[package.get("Package", name)] = package.get("Version", "?")
        _run(["dpkg-deb", "-x", deb, tree], "dpkg-deb -x " + name, timeout=300)
    missing = [p for p in release.packages if p not in fetched]
    if missing:
        raise Docker26Unavailable("apt-get download did not fetch {}".format(", ".join(missing)))
    for binary in release.binaries:
        if not os.access(os.path.join(tree, binary), os.X_OK):
            raise Docker26Unavailable("{} is missing from the unpacked packages".format(binary))
    version, major, _minor = dockerd_version(tree)
    if major != release.major:
        raise Docker26Unavailable(
            "{} now ships dockerd {}, not {}.x; update tests/support/newer_docker.py".format(release.suite, version, release.major)
        )
    with open(os.path.join(tree, release.stamp), "w") as handle:
        json.dump({"suite": release.suite, "mirror": uri, "packages": fetched, "dockerd": version,
                   "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return tree


def _lock(path: str, timeout: float = LOCK_WAIT) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise Docker26Unavailable("could not lock {}: {}".format(path, error)) from None
            time.sleep(0.2)


def ensure_release(release: Release, cache: Optional[str] = None) -> str:
    """The cached folder with ``release``'s usr/bin and usr/sbin, fetched first when missing."""
    cache = cache or cache_root()
    folder = os.path.join(cache, release.folder)
    if _complete(folder, release):
        return folder
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as error:
        raise Docker26Unavailable("cannot create the cache {}: {}".format(cache, error)) from None
    fd = _lock(os.path.join(cache, release.folder + ".lock"))
    try:
        if _complete(folder, release):  # another run finished it while we waited
            return folder
        work = os.path.join(cache, release.folder + ".work")
        for leftover in (folder, work):  # half-made by a run that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        os.makedirs(work)
        try:
            tree = _fetch_into(work, release)
            os.rename(tree, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return folder
    finally:
        os.close(fd)


def ensure_docker26(cache: Optional[str] = None) -> str:
    """The cached folder with Docker 26's usr/bin and usr/sbin, fetched first when missing."""
    return ensure_release(DOCKER26, cache)


def ensure_docker20(cache: Optional[str] = None) -> str:
    """The cached folder with Debian 12's Docker 20.10, containerd 1.6 and runc 1.1."""
    return ensure_release(DOCKER20, cache)


_outcome: Dict[str, Tuple[Optional[str], str]] = {}


def docker26_or_skip() -> str:
    """The Docker 26 folder (usr/bin, usr/sbin); a skip when it cannot be had, a failure under CI=true.

    A private dockerd needs root, so without root this does not even try to download. The outcome is
    remembered for the session: one failed download is not retried by every test.
    """
    import pytest

    cache = cache_root()
    if cache not in _outcome:
        if os.geteuid() != 0:
            _outcome[cache] = (None, "a private dockerd 26 needs root")
        else:
            try:
                _outcome[cache] = (ensure_docker26(cache), "")
            except (Docker26Unavailable, OSError) as error:
                _outcome[cache] = (None, "Docker 26 from Debian {} is not available: {}".format(SUITE, error))
    folder, why = _outcome[cache]
    if folder is not None:
        return folder
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true: " + why + " (the Docker 26 tests must run in CI)")
    pytest.skip(why)
    raise AssertionError("unreachable")


# -- using it -------------------------------------------------------------------------------------------


def bin_dirs(folder: str) -> List[str]:
    """What to put first on a PATH: dockerd finds containerd and its shims there, runc further on."""
    return [os.path.join(folder, "usr", "sbin"), os.path.join(folder, "usr", "bin")]


def search_path(folder: str) -> str:
    """A PATH with Docker 26 ahead of the host's (a Context's env, the sandbox's)."""
    rest = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return os.pathsep.join(bin_dirs(folder) + [rest, "/usr/sbin", "/sbin"])


def dockerd_path(folder: str) -> str:
    return os.path.join(folder, "usr", "sbin", "dockerd")


def sandbox26(folder: str, workdir: str, daemon_json: bytes, **kwargs):
    """A DockerdSandbox running Docker 26 (not started; call ``.start()`` and ``.close()``)."""
    from tests.support.sandbox import DockerdSandbox

    return DockerdSandbox(workdir, daemon_json=daemon_json, dockerd=dockerd_path(folder), path_prepend=bin_dirs(folder), **kwargs)


def docker26(
    folder: str, box, *args: str, check: bool = True, timeout: float = 60.0, input: Optional[bytes] = None
) -> subprocess.CompletedProcess:
    """Docker 26's CLI against a sandbox (20.10's CLI knows neither CDI device names nor CDISpecDirs)."""
    completed = subprocess.run(
        [os.path.join(folder, "usr", "bin", "docker"), "-H", box.docker_host, *args], input=input,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
        env=dict(os.environ, DOCKER_CONFIG=os.path.join(box.workdir, "cli")),
    )
    if check and completed.returncode != 0:
        raise AssertionError("docker {} failed ({}): {}".format(
            " ".join(args), completed.returncode, completed.stderr.decode(errors="replace")))
    return completed
