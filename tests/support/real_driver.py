"""NVIDIA's real userspace driver files, as a Debian 12 host has them (issue #20; recipe:
../shared/TESTING.md, "NVIDIA's real driver files").

Debian 12's non-free NVIDIA 535 packages (the ``nvidia-driver`` family: libraries, ``nvidia-smi``,
the Vulkan/EGL/GLX/OpenCL ICD files, GSP firmware, persistenced, MPS) are downloaded with a private
apt configuration for bookworm's ``main contrib non-free non-free-firmware`` on the host's own
mirror (as tests/support/newer_docker.py fetches Docker), unpacked with ``dpkg-deb -x`` (never
installed) into ``<cache_root()>/real-driver-<version>-<hash of the package list>/``, and given what their maintainer scripts
would make:

- ``debian/``: the Debian layout. Libraries under ``usr/lib/x86_64-linux-gnu/nvidia/current/``, some
  straight in the multiarch dir, ``nvidia-smi`` at ``usr/lib/nvidia/current/nvidia-smi``; the links
  ``nvidia-alternative``'s postinst makes with update-alternatives (``usr/bin/nvidia-smi ->
  /etc/alternatives/nvidia--nvidia-smi -> /usr/lib/nvidia/current/nvidia-smi``, the same for every
  ``.so.1``/``.so.0`` it lists), read from that very postinst (its ``add_slave`` and
  ``add_multiarch_slave`` lines, evaluated as it does: a slave only when its source file exists);
  an ``ldconfig -r`` cache.
- ``run/``: NVIDIA's ``.run`` installer layout, built from the same files: every library straight in
  ``usr/lib/x86_64-linux-gnu`` (with the SONAME links ldconfig makes), the binaries in ``usr/bin``,
  the ICD files and firmware where the installer puts them.

Both get the simulated kernel side for the same version (tests/support/driver_root.py
``add_kernel_side``: proc files, device nodes; ``add_drm``: nvidia-drm's ``/dev/dri`` nodes and
udev's by-path links; no GPU is attached here). A stamp file written last
marks a complete folder; an fcntl lock makes parallel runs download once.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from tests.support.driver_root import DEFAULT_GPUS, add_drm, add_kernel_side
from tests.support.newer_docker import Docker26Unavailable, _apt_options, _lock, _run, cache_root, host_debian_mirror

VERSION = "535.261.03"
SUITE = "bookworm"
COMPONENTS = "main contrib non-free non-free-firmware"
MULTIARCH = "usr/lib/x86_64-linux-gnu"
#: The packages of NVIDIA's userspace driver a GPU container can be given files of.
PACKAGES = (
    "libcuda1", "libnvidia-ml1", "nvidia-smi", "libnvidia-ptxjitcompiler1", "libnvidia-nvvm4", "libnvcuvid1",
    "libnvidia-encode1", "libglx-nvidia0", "libegl-nvidia0", "libnvidia-glcore", "libnvidia-eglcore",
    "nvidia-vulkan-icd", "nvidia-egl-icd", "libnvidia-cfg1", "libnvidia-opticalflow1", "libnvidia-ngx1",
    "firmware-nvidia-gsp", "nvidia-persistenced", "nvidia-cuda-mps", "libnvidia-allocator1", "libnvidia-fbc1",
    "libnvidia-rtcore", "libnvidia-glvkspirv", "libnvoptix1", "nvidia-vdpau-driver", "nvidia-egl-common",
    "nvidia-vulkan-common", "nvidia-opencl-icd", "nvidia-opencl-common", "libnvidia-egl-wayland1",
    "libnvidia-egl-gbm1", "nvidia-alternative",
)
STAMP = ".nvdocker-real-driver.json"
#: Bumped when the layouts made from the packages change (the folder's name carries it).
LAYOUT_VERSION = "3"
#: update-alternatives' triplets, as nvidia-alternative's postinst lists them.
TRIPLETS = ("/", "/i386-linux-gnu/", "/x86_64-linux-gnu/", "/aarch64-linux-gnu/", "/powerpc64le-linux-gnu/")


class RealDriverUnavailable(RuntimeError):
    """Why the real driver files could not be had here."""


class RealDriver(NamedTuple):
    #: The Debian layout's root and the .run layout's root.
    debian: str
    run: str
    version: str
    #: package name -> the .deb's version, as downloaded.
    packages: Dict[str, str]


def _call(argv: List[str], what: str, cwd: Optional[str] = None, timeout: float = 900.0) -> str:
    try:
        return _run(argv, what, cwd=cwd, timeout=timeout)
    except Docker26Unavailable as error:
        raise RealDriverUnavailable(str(error)) from None


def _prepare_apt(apt_dir: str, uri: str, keyring: str) -> None:
    for sub in ("sources.list.d", "preferences.d", "state", "lists/partial", "cache", "archives/partial", "debs"):
        os.makedirs(os.path.join(apt_dir, sub), exist_ok=True)
    for empty in ("sources.list", "status"):
        open(os.path.join(apt_dir, empty), "w").close()
    with open(os.path.join(apt_dir, "sources.list.d", SUITE + ".sources"), "w") as handle:
        handle.write("Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\nSigned-By: {}\n".format(
            uri, SUITE, COMPONENTS, keyring))
    try:  # apt downloads as _apt into the current directory when it may write there
        import pwd

        os.chown(os.path.join(apt_dir, "debs"), pwd.getpwnam("_apt").pw_uid, -1)
    except (KeyError, OSError):
        pass


def _slaves(postinst: str) -> List[Tuple[str, str, str]]:
    """(link, alternative name, target) of every slave nvidia-alternative's postinst would register,
    from its own ``add_slave`` / ``add_multiarch_slave`` lines (the existence test is the caller's)."""
    found: List[Tuple[str, str, str]] = []
    for kind, raw in re.findall(r"\$\((add_slave|add_multiarch_slave) ([^)]*)\)", postinst):
        words = [word.strip('"') for word in re.findall(r'"[^"]*"|\S+', raw)]
        if kind == "add_slave" and len(words) == 3:
            found.append((words[0], "nvidia--" + words[1], words[2]))
        elif kind == "add_multiarch_slave" and len(words) >= 5:
            target_dir, target_sub, name, source_dir, source_sub = words[:5]
            for triplet in TRIPLETS:
                suffix = triplet.rstrip("/")
                suffix = "-" + suffix.lstrip("/") if suffix else ""
                found.append((target_dir + triplet + target_sub + name, "nvidia--" + name + suffix,
                              source_dir + triplet + source_sub + name))
    return found


def _make_alternatives(root: str, postinst: str) -> int:
    """The links update-alternatives would make in ``root`` (absolute, as on a host); their count."""
    made = 0
    master = ("/usr/lib/nvidia/nvidia", "nvidia", "/usr/lib/nvidia/current")
    for link, name, target in [master] + _slaves(postinst):
        inside = os.path.join(root, target.lstrip("/"))
        if not os.path.lexists(inside) or not os.path.isdir(os.path.dirname(os.path.join(root, link.lstrip("/")))):
            continue  # the postinst's own rule: a slave only for a source that exists
        alternative = os.path.join(root, "etc/alternatives", name)
        os.makedirs(os.path.dirname(alternative), exist_ok=True)
        if not os.path.lexists(alternative):
            os.symlink(target, alternative)
        path = os.path.join(root, link.lstrip("/"))
        if not os.path.lexists(path):
            os.symlink("/etc/alternatives/" + name, path)
            made += 1
    return made


def _ld_conf(root: str) -> None:
    os.makedirs(os.path.join(root, "etc/ld.so.conf.d"), exist_ok=True)
    with open(os.path.join(root, "etc/ld.so.conf"), "w") as handle:
        handle.write("include /etc/ld.so.conf.d/*.conf\n")
    with open(os.path.join(root, "etc/ld.so.conf.d/x86_64-linux-gnu.conf"), "w") as handle:
        handle.write("/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n")


def _run_layout(debian: str, run: str) -> None:
    """NVIDIA's .run layout from the Debian tree: every regular file of the driver's library
    directories straight in the multiarch dir, binaries in usr/bin, the rest where it is."""
    shutil.copytree(debian, run, symlinks=True)
    shutil.rmtree(os.path.join(run, "etc/alternatives"))
    for link in _all_links_into(run, "/etc/alternatives/"):
        os.unlink(link)
    multiarch = os.path.join(run, MULTIARCH)
    for sub in ("nvidia/current", "vdpau", "gbm"):
        directory = os.path.join(multiarch, sub)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            source = os.path.join(directory, name)
            if os.path.isfile(source) and not os.path.islink(source):
                destination = os.path.join(multiarch, name) if sub == "nvidia/current" else source
                if destination != source:
                    shutil.move(source, destination)
    shutil.rmtree(os.path.join(multiarch, "nvidia"), ignore_errors=True)
    # where the installer puts what is not a library of the ld path
    share = os.path.join(run, "usr/share/nvidia")
    os.makedirs(share, exist_ok=True)
    if os.path.isfile(os.path.join(multiarch, "nvoptix.bin")):
        shutil.move(os.path.join(multiarch, "nvoptix.bin"), os.path.join(share, "nvoptix.bin"))
    vdpau = os.path.join(multiarch, "vdpau")
    os.makedirs(vdpau, exist_ok=True)
    for name in sorted(os.listdir(multiarch)):
        if name.startswith("libvdpau_nvidia.so.") and not os.path.islink(os.path.join(multiarch, name)):
            shutil.move(os.path.join(multiarch, name), os.path.join(vdpau, name))
            os.symlink(name, os.path.join(vdpau, "libvdpau_nvidia.so.1"))
    gbm = os.path.join(multiarch, "gbm")
    os.makedirs(gbm, exist_ok=True)
    if not os.path.lexists(os.path.join(gbm, "nvidia-drm_gbm.so")):
        os.symlink("../libnvidia-allocator.so.1", os.path.join(gbm, "nvidia-drm_gbm.so"))
    bindir = os.path.join(run, "usr/bin")
    os.makedirs(bindir, exist_ok=True)
    current = os.path.join(run, "usr/lib/nvidia/current")
    for name in sorted(os.listdir(current)) if os.path.isdir(current) else []:
        source = os.path.join(current, name)
        if os.path.isfile(source) and os.access(source, os.X_OK) and not name.endswith((".so", ".sh")):
            shutil.move(source, os.path.join(bindir, name))
    # the .run installer's development link
    if not os.path.lexists(os.path.join(multiarch, "libcuda.so")):
        os.symlink("libcuda.so.1", os.path.join(multiarch, "libcuda.so"))


def _all_links_into(root: str, prefix: str) -> List[str]:
    found = []
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(base, name)
            if os.path.islink(path) and os.readlink(path).startswith(prefix):
                found.append(path)
    return found


def _complete(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, STAMP))


def _fetch_into(work: str) -> Dict[str, str]:
    apt_dir = os.path.join(work, "apt")
    uri, keyring = host_debian_mirror()
    _prepare_apt(apt_dir, uri, keyring)
    options = _apt_options(apt_dir)
    _call(["apt-get", *options, "update", "-q"], "apt-get update (bookworm non-free)")
    debs_dir = os.path.join(apt_dir, "debs")
    _call(["apt-get", *options, "download", "-q", *PACKAGES], "apt-get download of NVIDIA's driver", cwd=debs_dir)
    debian = os.path.join(work, "tree", "debian")
    os.makedirs(debian)
    versions: Dict[str, str] = {}
    postinst = ""
    for deb in sorted(os.listdir(debs_dir)):
        if not deb.endswith(".deb"):
            continue
        path = os.path.join(debs_dir, deb)
        name, version = deb.split("_")[:2]
        versions[name] = version.replace("%3a", ":")
        if name == "nvidia-alternative":
            control = os.path.join(work, "alternative-control")
            _call(["dpkg-deb", "-e", path, control], "dpkg-deb -e " + deb)
            with open(os.path.join(control, "postinst")) as handle:
                postinst = handle.read()
        _call(["dpkg-deb", "-x", path, debian], "dpkg-deb -x " + deb)
    missing = [name for name in PACKAGES if name not in versions]
    if missing:
        raise RealDriverUnavailable("not downloaded: " + ", ".join(missing))
    if not _make_alternatives(debian, postinst):
        raise RealDriverUnavailable("nvidia-alternative's postinst named no link that exists")
    run = os.path.join(work, "tree", "run")
    _run_layout(debian, run)
    for root in (debian, run):
        os.chmod(root, 0o755)
        _ld_conf(root)
        _call(["ldconfig", "-r", root], "ldconfig -r " + root)
        add_kernel_side(root, DEFAULT_GPUS, VERSION)
        add_drm(root, DEFAULT_GPUS)
    return versions


def ensure_real_driver(cache: Optional[str] = None) -> RealDriver:
    """The cached real-driver folder, fetched and laid out first when missing."""
    cache = cache or cache_root()
    # the folder's name carries the package list: another list is another fixture
    key = hashlib.sha256((" ".join(PACKAGES) + LAYOUT_VERSION).encode()).hexdigest()[:8]
    folder = os.path.join(cache, "real-driver-{}-{}".format(VERSION, key))
    if not _complete(folder):
        os.makedirs(cache, exist_ok=True)
        try:
            fd = _lock(folder + ".lock")
        except Docker26Unavailable as error:
            raise RealDriverUnavailable(str(error)) from None
        try:
            if not _complete(folder):
                work = folder + ".work"
                for leftover in (folder, work):
                    shutil.rmtree(leftover, ignore_errors=True)
                os.makedirs(work)
                try:
                    versions = _fetch_into(work)
                    with open(os.path.join(work, "tree", STAMP), "w") as handle:
                        json.dump({"version": VERSION, "packages": versions,
                                   "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, handle, indent=2)
                    os.rename(os.path.join(work, "tree"), folder)
                    for old in os.listdir(cache):  # another package list or layout: not used any more
                        stale = os.path.join(cache, old)
                        if old.startswith("real-driver-") and stale not in (folder, folder + ".lock", work):
                            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.unlink(stale)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            os.close(fd)
    with open(os.path.join(folder, STAMP)) as handle:
        packages = json.load(handle)["packages"]
    return RealDriver(os.path.join(folder, "debian"), os.path.join(folder, "run"), VERSION, packages)


_outcome: Dict[str, object] = {}


def real_driver_or_skip() -> RealDriver:
    """The real driver; a skip when it cannot be had (root is needed for the device nodes), a failure
    under CI=true. The outcome is remembered for the session."""
    import pytest

    if "value" not in _outcome:
        try:
            if os.geteuid() != 0:
                raise RealDriverUnavailable("the real driver's device nodes need root")
            _outcome["value"] = ensure_real_driver()
        except (RealDriverUnavailable, OSError, subprocess.SubprocessError) as error:
            _outcome["value"] = None
            _outcome["why"] = str(error)
    value = _outcome["value"]
    if value is None:
        why = "NVIDIA's real driver files: {}".format(_outcome.get("why"))
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: " + why)
        pytest.skip(why)
    assert isinstance(value, RealDriver)
    return value
