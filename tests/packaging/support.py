"""Helpers for the packaging tests: commands, package builds, and Debian 12 chroots.

A chroot starts from a pristine ``debootstrap --variant=minbase bookworm`` tree that is made
once and cached as a tarball (see :func:`pristine_tarball`); every test extracts a fresh copy.
Downloaded .debs are kept in a shared archive directory that is bind-mounted over the chroot's
``/var/cache/apt/archives``, so only the first run downloads docker.io and friends. The apt
sources of a chroot are the host's own Debian mirrors, and ``usr/sbin/policy-rc.d`` exits 101
so that no service starts.
"""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import pytest

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"
SUITE = "bookworm"
DEBIAN_SUITES = (SUITE, SUITE + "-updates", SUITE + "-security")
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Rebuild the cached chroot after this long (its apt lists and packages age).
PRISTINE_MAX_AGE = 7 * 24 * 3600
PACKAGES = ("nvdocker-toolkit", "nvdocker-setup", "nvdocker2")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail("packaging tests must run in CI: " + reason, pytrace=False)
    pytest.skip(reason)


def need_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name, path=SYSTEM_PATH) is None]
    need(not missing, "missing tools: {} (make deps installs them, as root)".format(", ".join(missing)))


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (chroot, mounts, dpkg in a chroot)")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Union[str, Path]] = None,
    timeout: float = 900,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; a failure shows the command and its output."""
    done = subprocess.run(
        [str(arg) for arg in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd else None,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        raise AssertionError("command failed ({}): {}\n{}".format(done.returncode, " ".join(map(str, argv)), done.stdout[-6000:]))
    return done


def system_env(**extra: str) -> Dict[str, str]:
    """A clean environment with the system interpreter first on PATH (pybuild needs that)."""
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    for name in ("TMPDIR", "http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def source_version() -> str:
    return run(["dpkg-parsechangelog", "-l", REPO / "debian" / "changelog", "-S", "Version"]).stdout.strip()


def build_debs(outdir: Path, version: Optional[str] = None) -> Dict[str, Path]:
    """Build the packages (debian/build-debs.sh); {package name: .deb path}, plus 'changes'."""
    argv = ["sh", REPO / "debian" / "build-debs.sh", outdir] + ([version] if version else [])
    run(argv, env=system_env(), timeout=1200)
    found: Dict[str, Path] = {}
    for deb in sorted(outdir.glob("*.deb")):
        name = deb.name.split("_")[0]
        if name in PACKAGES:
            found[name] = deb
    found["changes"] = next(outdir.glob("*.changes"))
    assert set(PACKAGES) <= set(found), "missing packages in {}: {}".format(outdir, sorted(found))
    return found


def build_rpms(outdir: Path, version: Optional[str] = None) -> Dict[str, Path]:
    argv = ["sh", REPO / "rpm" / "build-rpms.sh", outdir] + ([version] if version else [])
    run(argv, env=system_env(), timeout=1200)
    found: Dict[str, Path] = {}
    for rpm in sorted(outdir.glob("*.rpm")):
        if rpm.name.endswith(".src.rpm"):
            found["source"] = rpm
            continue
        name = re.sub(r"-[^-]+-[^-]+\.[^.]+\.rpm$", "", rpm.name)
        found[name] = rpm
    assert set(PACKAGES) <= set(found), "missing packages in {}: {}".format(outdir, sorted(found))
    return found


def cache_dir() -> Path:
    """Where the pristine chroot and downloaded packages are kept between runs."""
    chosen = os.environ.get("NVDOCKER_TEST_CACHE")
    if chosen:
        path = Path(chosen)
    elif os.geteuid() == 0:
        path = Path("/var/cache/nvdocker-tests")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nvdocker-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- apt sources ----------------------------------------------------------------------------------


def _deb822_stanzas(text: str) -> List[Dict[str, str]]:
    stanzas, current = [], {}  # type: List[Dict[str, str]], Dict[str, str]
    key = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def host_debian_mirrors(root: Path = Path("/")) -> Dict[str, List[str]]:
    """{suite: [URIs]} of the host's enabled Debian bookworm sources (main), in file order."""
    found: Dict[str, List[str]] = {}

    def add(uri: str, suites: Sequence[str], components: Sequence[str], types: Sequence[str]) -> None:
        if "deb" not in types or "main" not in components:
            return
        for suite in suites:
            if suite in DEBIAN_SUITES and uri not in found.setdefault(suite, []):
                found[suite].append(uri)

    apt = root / "etc" / "apt"
    one_line = [apt / "sources.list"] + sorted((apt / "sources.list.d").glob("*.list"))
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 4:
                add(line[1], [line[2]], line[3:], [line[0]])
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text(errors="replace")):
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            for uri in stanza.get("uris", "").split():
                add(uri, stanza.get("suites", "").split(), stanza.get("components", "").split(),
                    stanza.get("types", "").split())
    return found


def chroot_sources(mirrors: Mapping[str, List[str]]) -> str:
    """A deb822 sources file for the chroot that uses the host's mirrors."""
    main = (mirrors.get(SUITE) or ["http://deb.debian.org/debian"])[0]
    security = (mirrors.get(SUITE + "-security") or [main.rstrip("/") + "-security"])[0]
    suites = [SUITE] + ([SUITE + "-updates"] if SUITE + "-updates" in mirrors else [])
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        "Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: {}\n\n"
        "Types: deb\nURIs: {}\nSuites: {}-security\nComponents: main\nSigned-By: {}\n"
    ).format(main, " ".join(suites), keyring, security, SUITE, keyring)


def apt_proxy_config() -> str:
    """The host's apt proxy settings, if any, for the chroot's apt.conf.d."""
    done = run(["apt-config", "dump"], check=False)
    lines = [line for line in done.stdout.splitlines() if re.match(r"Acquire::(https?|ftp)::Proxy", line)]
    return "".join(line.rstrip() + "\n" for line in lines)


# --- the chroot -------------------------------------------------------------------------------------


def _mounts_under(path: Path) -> List[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, reverse=True)


def _unmount_all(path: Path) -> None:
    for point in _mounts_under(path):
        if run(["umount", point], check=False).returncode != 0:
            run(["umount", "-l", point], check=False)
    left = _mounts_under(path)
    if left:  # never delete through a mount point (the shared archive cache is one)
        raise AssertionError("still mounted under {}: {}".format(path, left))


def remove_tree(path: Path) -> None:
    if path.exists():
        _unmount_all(path)
        shutil.rmtree(str(path))


def pristine_tarball(cache: Path) -> Path:
    """The cached tarball of a pristine bookworm chroot with the host's mirrors and apt lists."""
    sources = chroot_sources(host_debian_mirrors())
    proxy = apt_proxy_config()
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    key = hashlib.sha256((SUITE + arch + sources + proxy).encode()).hexdigest()[:12]
    tarball = cache / "{}-minbase-{}-{}.tar".format(SUITE, arch, key)
    with open(cache / "pristine.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and time.time() - tarball.stat().st_mtime < PRISTINE_MAX_AGE:
            return tarball
        for old in cache.glob("{}-minbase-*.tar".format(SUITE)):
            old.unlink()
        work = Path(tempfile.mkdtemp(prefix="pristine.", dir=str(cache)))
        try:
            root = work / "root"
            mirror = sources.split("URIs: ", 1)[1].split("\n", 1)[0]
            run(["debootstrap", "--variant=minbase", SUITE, root, mirror], env=system_env(), timeout=1800)
            (root / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
            (root / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(sources)
            if proxy:
                (root / "etc" / "apt" / "apt.conf.d" / "01proxy").write_text(proxy)
            run(["chroot", root, "/usr/bin/env", "-i", "PATH=" + CHROOT_PATH, "apt-get", "update", "-q"],
                env=system_env(), timeout=900)
            partial = str(tarball) + ".partial"
            run(["tar", "-C", root, "--numeric-owner", "-cf", partial, "."])
            os.replace(partial, str(tarball))
        finally:
            remove_tree(work)
    return tarball


class Chroot:
    """A fresh Debian chroot extracted from the pristine tarball; :meth:`close` removes it."""

    def __init__(self, tarball: Path, archives: Path, parent: Path) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="chroot.", dir=str(parent)))
        self.archives = archives
        run(["tar", "-C", self.path, "--numeric-owner", "-xpf", tarball])
        self.write("/usr/sbin/policy-rc.d", "#!/bin/sh\n# packaging tests: start no service\nexit 101\n", mode=0o755)
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", archives, self.path / "var/cache/apt/archives"])
        self.log: List[str] = []

    def close(self) -> None:
        remove_tree(self.path)

    def host(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def write(self, path: str, data: Union[str, bytes], mode: int = 0o644) -> None:
        target = self.host(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(str(target), mode)

    def read(self, path: str) -> bytes:
        return self.host(path).read_bytes()

    def exists(self, path: str) -> bool:
        return os.path.lexists(str(self.host(path)))

    def sh(self, script: str, *, env: Optional[Mapping[str, str]] = None, check: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess:
        """Run a shell script inside the chroot with a clean environment (plus ``env``)."""
        variables = ["PATH=" + CHROOT_PATH, "LC_ALL=C.UTF-8", "HOME=/root", "DEBIAN_FRONTEND=noninteractive",
                     "TERM=dumb", "COLUMNS=200"]
        for name in ("http_proxy", "https_proxy", "no_proxy"):
            if os.environ.get(name):
                variables.append("{}={}".format(name, os.environ[name]))
        variables += ["{}={}".format(k, v) for k, v in (env or {}).items()]
        started = time.monotonic()
        done = run(["chroot", self.path, "/usr/bin/env", "-i"] + variables + ["/bin/sh", "-c", script],
                   check=check, timeout=timeout)
        self.log.append("[{:.1f}s] {}".format(time.monotonic() - started, script))
        return done

    def apt(self, args: str, *, env: Optional[Mapping[str, str]] = None, check: bool = True) -> subprocess.CompletedProcess:
        """apt-get in the chroot; when the cached lists name packages the mirror no longer has
        (a point release since the tarball was made), refresh them and try once more."""
        # --force-unsafe-io: dpkg skips its fsyncs (a throwaway root; the maintainer scripts are unchanged)
        command = "apt-get -y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-unsafe-io " + args
        done = self.sh(command, env=env, check=False)
        if done.returncode != 0 and re.search(r"404 +Not Found|Failed to fetch|Unable to fetch", done.stdout):
            self.sh("apt-get update -q")
            done = self.sh(command, env=env, check=False)
        if check and done.returncode != 0:
            raise AssertionError("in the chroot ({}): {}\n{}".format(done.returncode, command, done.stdout[-6000:]))
        return done

    def copy_in(self, files: Sequence[Path], directory: str) -> List[str]:
        """Copy host files into the chroot; their paths inside it."""
        inside = []
        for path in files:
            target = self.host(directory) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(path), str(target))
            inside.append(directory.rstrip("/") + "/" + path.name)
        return inside


def dpkg_deb_fields(deb: Path) -> Dict[str, str]:
    text = run(["dpkg-deb", "-f", deb]).stdout
    fields: Dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def deb_files(deb: Path) -> List[str]:
    """Paths in a .deb, without the leading '.', directories with a trailing '/'."""
    with tempfile.TemporaryFile() as handle:
        subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=handle, check=True)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as archive:
            return [member.name[1:] + ("/" if member.isdir() else "") for member in archive.getmembers()]


def extract_debs(debs: Sequence[Path], target: Path) -> Path:
    for deb in debs:
        run(["dpkg-deb", "-x", deb, target])
    return target
