"""nvdocker-runtime-hook: OCI hooks for GPU containers, reading the container state on stdin.

``update-ldcache [--ldconfig PATH] [--rootfs DIR] --folder DIR... [--link TARGET::/DIR/NAME...]
[--dri-link card<N>::NAME...] [--cuda-compat-dir DIR --host-driver-version X.Y.Z]``
    Our ``createContainer`` hook. It runs after the driver files are mounted and before
    pivot_root, in the container's mount namespace: it creates the library links the host has
    (``libcuda.so -> libcuda.so.1``, which applications ``dlopen``; NVIDIA's ``create-symlinks``
    hook, folded in here to save an interpreter start), adds the injected library folders to the
    container's ``/etc/ld.so.conf.d`` and runs the host's ``ldconfig -r <rootfs>``, which
    rebuilds the container's ld cache and creates the SONAME links (``libcuda.so.1``). The
    runtime passes ``--rootfs``; from a CDI spec it comes from the state on stdin. With
    ``--cuda-compat-dir``, an image's CUDA forward-compatibility ``libcuda.so.<version>`` of a
    newer driver branch than the host's puts that directory first (NVIDIA's
    ``enable-cuda-compat`` hook, folded in too; see :mod:`nvdocker_setup.driver.compat`). With
    ``--dri-link card1::pci-0000:01:00.0-card``, udev's ``/dev/dri/by-path`` link of a GPU's DRM node
    (NVIDIA's CDI makes these with its ``create-symlinks`` hook).

``prestart`` (installed as ``nvidia-container-runtime-hook``)
    dockerd registers ``docker run --gpus`` only when a program of that name is on its PATH, and
    adds it as a prestart hook. Our runtime removes that hook and injects by itself; when another
    runtime (runc) runs it instead, we hand over to NVIDIA's ``nvidia-container-cli`` if it is
    installed, else fail saying how to fix it.

``poststart``, ``poststop``: nothing to do (NVIDIA's hook accepts them too).

Standard library only, and not even ``json`` or ``subprocess`` on the runtime's path: the hook
runs on every GPU container start, and an interpreter start alone is ~10 ms.

Security: a createContainer hook runs as root on the host, before pivot_root, from ``runc init``
inside the container's mount namespace, with the rootfs as working directory; everything in the
rootfs, the state on stdin (its annotations) and the spec's ``process`` are the container's. So
the hook entries we emit carry their own ``env`` (nvdocker_setup.driver.model.HOOK_ENV), and here:
the working directory is ``/`` before anything else; the rootfs must be absolute and never the host
root; nothing in the rootfs is opened through a symlink or opened at all when it is not a
directory we create a file in or a CUDA compat library we check (a regular file, opened with
O_NOFOLLOW and O_NONBLOCK, 64 bytes read: driver/compat.py) (the conf file is written to a new temp file and renamed into
place, so a symlink, FIFO or device planted under its name is replaced, never followed or
opened; a library link is made by ``symlinkat`` in a directory reached with O_NOFOLLOW from the
root's fd, and whatever already has its name is left alone); programs are started by absolute
path with an explicit environment; the state and spec are checked for types and size, and any
failure is one bounded line on stderr and status 1.
"""

from __future__ import annotations

import errno
import os
import sys

from nvdocker_setup.driver.errors import GpuSetupError, quoted, shorten
from nvdocker_setup.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Dict, List, Optional, Sequence, Tuple

PROGRAM = "nvdocker-runtime-hook"
LD_CONF_NAME = "00-nvdocker.conf"
CLI_NAME = "nvidia-container-cli"
#: The whole environment of the programs the hook starts (ldconfig, nvidia-container-cli).
SAFE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
#: runc's state is a few hundred bytes plus the annotations; a spec is rarely over 100 KB.
MAX_STATE_BYTES = 4 << 20
MAX_SPEC_BYTES = 64 << 20
_CLI_SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
FIX_HINT = (
    "make nvdocker's runtime handle GPU containers: `nvdocker-setup install --default-runtime` "
    "(then restart dockerd), or run this container with --runtime=nvidia"
)


# -- container state and spec -------------------------------------------------------------------

def _read_bounded(stream, limit: int, what: str) -> bytes:
    data = getattr(stream, "buffer", stream).read(limit + 1)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > limit:
        raise GpuSetupError("{} is larger than {} bytes".format(what, limit))
    return data


#: Members of the OCI state we may read, and their JSON types.
_STATE_TYPES = (("ociVersion", str), ("id", str), ("status", str), ("bundle", str), ("bundlePath", str), ("annotations", dict))


def read_state(stream) -> Dict[str, Any]:
    """The OCI state runc writes to a hook's stdin, with the types of what we use checked."""
    try:
        state = jsonio.loads(_read_bounded(stream, MAX_STATE_BYTES, "the container state on stdin"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise GpuSetupError("the container state on stdin is not JSON: {}".format(shorten(str(exc), 300))) from None
    if not isinstance(state, dict):
        raise GpuSetupError("the container state on stdin is not a JSON object")
    for key, kind in _STATE_TYPES:
        if key in state and state[key] is not None and not isinstance(state[key], kind):
            raise GpuSetupError("the container state's {} is not a {}: {}".format(
                key, "string" if kind is str else "JSON object", quoted(jsonio.dumps(state[key]), 60)))
    pid = state.get("pid")
    if pid is not None and (type(pid) is not int or pid < 0):
        raise GpuSetupError("the container state's pid is not a process id: {}".format(quoted(jsonio.dumps(pid), 60)))
    return state


def load_bundle(state: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``(bundle, spec)``; ``bundlePath`` is what Docker before 17.06 wrote."""
    bundle = state.get("bundle") or state.get("bundlePath")
    if not isinstance(bundle, str) or not bundle:
        raise GpuSetupError("the container state has no bundle")
    if not bundle.startswith("/"):
        raise GpuSetupError("the container state's bundle is not an absolute path: {}".format(quoted(bundle)))
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as handle:
            spec = jsonio.loads(_read_bounded(handle, MAX_SPEC_BYTES, path))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise GpuSetupError("cannot read the container spec {}: {}".format(path, shorten(str(exc), 300))) from None
    if not isinstance(spec, dict):
        raise GpuSetupError("the container spec {} is not a JSON object".format(path))
    return bundle, spec


def rootfs_of(bundle: str, spec: Dict[str, Any]) -> str:
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise GpuSetupError("the container spec has no root.path")
    return os.path.normpath(os.path.join(bundle, path))


def checked_rootfs(rootfs: str) -> str:
    """``rootfs`` if it is an absolute directory other than the host's root: ``ldconfig -r /``
    and our conf file would otherwise rewrite the host's own ld cache and configuration."""
    if not rootfs.startswith("/"):
        raise GpuSetupError("the container root must be an absolute path, got {}".format(quoted(rootfs)))
    try:
        found = os.stat(rootfs)
        host = os.stat("/")
    except OSError as exc:
        raise GpuSetupError("cannot use the container root {}: {}".format(quoted(rootfs), exc.strerror or exc)) from None
    if (found.st_dev, found.st_ino) == (host.st_dev, host.st_ino) or os.path.realpath(rootfs) == "/":
        raise GpuSetupError(
            "refusing to update the ld cache of the container root {}: it is the host's root directory".format(quoted(rootfs)),
            hint="a container root must be its own directory (OCI root.path)",
        )
    if not os.path.isdir(rootfs):
        raise GpuSetupError("the container root {} is not a directory".format(quoted(rootfs)))
    return rootfs


# -- processes and files, cheaply -----------------------------------------------------------------

def run(argv: Sequence[str]) -> int:
    """Run a program with our stdout/stderr (runc shows them when a hook fails); its status.
    posix_spawn (vfork underneath) instead of subprocess: no extra imports, no page copying.
    An absolute path and :data:`SAFE_ENV`: nothing of the container's reaches it."""
    if not argv[0].startswith("/"):
        raise GpuSetupError("{} must be an absolute path".format(quoted(argv[0])))
    try:
        pid = os.posix_spawn(argv[0], list(argv), SAFE_ENV)
    except OSError as exc:
        raise GpuSetupError("cannot run {}: {}".format(argv[0], exc.strerror or exc)) from None
    return os.waitstatus_to_exitcode(_wait(pid, argv[0]))


#: ldconfig over a container root takes milliseconds; a minute means something is wrong (the C
#: hook's LDCONFIG_DEADLINE_S too).
DEADLINE_S = 60.0


def _wait(pid: int, what: str, deadline_s: Optional[float] = None) -> int:
    """The wait status of ``pid``, which is killed at ``deadline_s`` (default :data:`DEADLINE_S`;
    then a one-line error)."""
    import select

    deadline_s = DEADLINE_S if deadline_s is None else deadline_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    import time

    end = time.monotonic() + deadline_s
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return status
            left = end - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise GpuSetupError("{} did not finish within {:.0f} s and was killed".format(what, deadline_s),
                                    hint="the container's ld cache could not be refreshed")
            if pidfd is not None:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll(min(left, 1.0) * 1000)
            else:
                time.sleep(min(left, 0.005))
    finally:
        if pidfd is not None:
            os.close(pidfd)


# -- ldconfig, confined -----------------------------------------------------------------------------
#
# ``ldconfig -r ROOTFS`` chroots into the container root, but when a createContainer hook runs,
# runc has already mounted the container's procfs at ROOTFS/proc, and there ``/proc/1/root`` (runc
# init's root, the host's /) leads out of any chroot: an image library whose SONAME is
# ``../../../proc/1/root/<host path>`` made ldconfig create or replace a symlink anywhere on the
# host, and an image ``/etc`` linked through it made ldconfig rewrite the host's ld.so.cache. So
# ldconfig runs in a private copy of the mount namespace from which every procfs at or below the
# container root is detached (the container's own mounts are untouched); if that cannot be done,
# ldconfig does not run and the hook fails.

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2


def _unescape_mountinfo(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo``."""
    out = bytearray()
    index = 0
    while index < len(field):
        if field[index:index + 1] == b"\\" and field[index + 1:index + 4].isdigit():
            out.append(int(field[index + 1:index + 4], 8))
            index += 4
        else:
            out += field[index:index + 1]
            index += 1
    return bytes(out)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in text


def proc_mounts_below(root: str, mountinfo: Optional[bytes] = None) -> List[bytes]:
    """Mount points of procfs at or below ``root`` (a real path), deepest first."""
    if mountinfo is None:
        # all of it: the container's procfs is mounted last, at the end of a table that a host (or a
        # user making FUSE mounts) can grow past any cap; a cut-off read would miss exactly that line
        with open("/proc/self/mountinfo", "rb") as handle:
            mountinfo = handle.read()
    top = os.fsencode(root.rstrip("/") or "/")
    points = []
    for line in mountinfo.split(b"\n"):
        left, sep, right = line.partition(b" - ")
        fields = left.split(b" ")
        if not sep or len(fields) < 5 or right.split(b" ", 1)[0] != b"proc":
            continue
        point = _unescape_mountinfo(fields[4])
        if point == top or point.startswith(top + b"/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _libc():
    """unshare, mount and umount2 from the C library through ``_ctypes`` (0.4 ms to import, where
    the ``ctypes`` package costs 2 ms on every GPU container start); errno is kept per call."""
    import _ctypes

    class CInt(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    class Library:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # NULL: the program and its libraries

    library = Library()
    return {name: Function((name, library)) for name in ("unshare", "mount", "umount2")}, _ctypes.get_errno  # type: ignore[arg-type]  # any object with _handle


def _confine_mounts(root: str) -> None:
    """Move this process into a private mount namespace without any procfs at or below ``root``."""
    calls, get_errno = _libc()
    unshare = getattr(os, "unshare", None)  # Python 3.12+
    if unshare is not None:
        unshare(_CLONE_NEWNS)
    elif calls["unshare"](_CLONE_NEWNS) != 0:
        raise OSError(get_errno(), "unshare(CLONE_NEWNS)")
    if calls["mount"](b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(get_errno(), "making the mount namespace private")
    for point in proc_mounts_below(root):
        if calls["umount2"](point, _MNT_DETACH) != 0 and get_errno() not in (errno.EINVAL, errno.ENOENT):
            raise OSError(get_errno(), "detaching {}".format(os.fsdecode(point)))
    left = proc_mounts_below(root)
    if left:
        raise OSError(errno.EBUSY, "procfs still mounted at {}".format(os.fsdecode(left[0])))
    if _is_procfs(os.path.join(root, "proc")):  # the backstop, whatever mountinfo said
        raise OSError(errno.EBUSY, "procfs still mounted at {}".format(os.path.join(root, "proc")))


_PROC_SUPER_MAGIC = 0x9FA0


def _is_procfs(path: str) -> bool:
    """Whether ``path`` is a procfs mount (fstatfs's f_type), where /proc/1/root leads out of any
    chroot. Reached with O_PATH|O_NOFOLLOW: an image's /proc that is a symlink to a host path is no
    procfs of the container's, and root must not look that host path up. ``ctypes`` is imported
    here only: this runs once per hook, after the namespace is made."""
    import ctypes

    try:
        fd = os.open(path, getattr(os, "O_PATH", 0o10000000) | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buffer) != 0:
            return False
        return ctypes.c_long.from_buffer(buffer).value == _PROC_SUPER_MAGIC
    finally:
        os.close(fd)


def run_confined(argv: Sequence[str], root: str) -> int:
    """:func:`run` for ldconfig, in a mount namespace with no procfs at or below ``root`` (see
    above). This hook process moves into that private namespace itself (it has nothing left to do
    in the container's: the conf and the links are written), so ldconfig starts by posix_spawn as
    before, without a fork of the interpreter; when the namespace cannot be made, ldconfig is not
    run and the hook fails."""
    if not argv[0].startswith("/"):
        raise GpuSetupError("{} must be an absolute path".format(quoted(argv[0])))
    try:
        _confine_mounts(os.path.realpath(root))
    except OSError as exc:
        raise GpuSetupError(
            "{} was not run: it could not be confined away from the container's /proc: {}".format(
                argv[0], shorten(str(exc), 300)),
            hint="the hook needs CAP_SYS_ADMIN to give ldconfig a private mount namespace",
        ) from None
    return run(argv)


def _open_directory_in(parent_fd: int, name: str) -> Optional[int]:
    """Open (creating if missing) directory ``name`` under ``parent_fd`` without following a
    symlink: an image's ``/etc`` pointing at a host path must never make us write there. None
    when ``name`` is not a plain directory (a symlink, a file...): we leave it alone."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    return _existing_directory_in(parent_fd, name)


def _replace_file_in(dir_fd: int, name: str, data: bytes) -> bool:
    """Write ``data`` to a new file and rename it over ``name`` (all under ``dir_fd``): whatever
    the image put there under that name (a symlink to a host file, a FIFO that would block an
    open, a device node) is replaced without being opened. False when ``name`` is a directory."""
    temp = ".{}.{}.tmp".format(name, os.getpid())
    try:
        os.unlink(temp, dir_fd=dir_fd)  # a leftover or a planted entry: unlink never follows it
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return False
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    try:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        os.unlink(temp, dir_fd=dir_fd)
        if isinstance(exc, (IsADirectoryError, FileExistsError)) or exc.errno == errno.ENOTEMPTY:
            return False
        raise
    return True


def _existing_directory_in(parent_fd: int, name: str) -> Optional[int]:
    """Open directory ``name`` under ``parent_fd`` without following a symlink and without
    creating it; None when it is missing, a symlink or not a directory (we leave it alone)."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except (NotADirectoryError, FileNotFoundError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink
            return None
        raise


def _directory_fd(root_fd: int, directory: str) -> Optional[int]:
    """An fd of ``directory`` (absolute, plain names: :func:`links.is_plain_directory`) inside the
    root open as ``root_fd``, walked one component at a time: a symlinked, missing or odd
    component anywhere on the way gives None, so nothing outside the root is ever reached."""
    fd = os.dup(root_fd)
    for name in directory.strip("/").split("/"):
        try:
            following = _existing_directory_in(fd, name)
        finally:
            os.close(fd)
        if following is None:
            return None
        fd = following
    return fd


def create_links_in(rootfs: str, wanted: Sequence[Tuple[str, str, str]]) -> int:
    """Create the symlinks ``(target, directory, name)`` inside ``rootfs``; how many were made.

    Each directory is reached from an fd of the root with O_NOFOLLOW per component (a directory
    the image made a symlink, to a host path or anywhere, is skipped), and the link is made by
    ``symlinkat`` relative to that fd: the name is a single entry and the target a plain name in
    the same directory (both checked by :func:`links.parse_link`). Whatever the image already has
    under the name (its own link, a file, a directory, a FIFO) is left alone, never opened or
    followed: ``symlinkat`` fails with EEXIST on any existing entry, dangling links included.
    """
    if not wanted:
        return 0
    try:
        root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise GpuSetupError("cannot open the container root {}: {}".format(quoted(rootfs), exc.strerror or exc)) from None
    directories: Dict[str, Optional[int]] = {}
    created = 0
    try:
        for target, directory, name in wanted:
            if directory not in directories:
                directories[directory] = _directory_fd(root_fd, directory)
            fd = directories[directory]
            if fd is None:
                continue
            try:
                os.symlink(target, name, dir_fd=fd)
                created += 1
            except FileExistsError:
                pass
    except OSError as exc:
        raise GpuSetupError("cannot create the library links in the container: {}".format(exc.strerror or exc)) from None
    finally:
        for fd in directories.values():
            if fd is not None:
                os.close(fd)
        os.close(root_fd)
    return created


#: Where udev's links to the DRM nodes live; ``--dri-link NODE::NAME`` makes NAME there -> ../NODE.
DRI_BY_PATH = ("dev", "dri", "by-path")


def parse_dri_links(values: Sequence[str]) -> List[Tuple[str, str]]:
    """``--dri-link NODE::NAME`` values: ``(NODE, NAME)``, NODE ``card<N>`` or ``renderD<N>``."""
    from nvdocker_setup.driver import links

    if len(values) > links.MAX_LINKS:
        raise GpuSetupError("{} --dri-link options; at most {} are accepted".format(len(values), links.MAX_LINKS))
    parsed = []
    for value in values:
        node, sep, name = value.partition(links.SEPARATOR)
        stem = "renderD" if node.startswith("renderD") else "card"
        number = node[len(stem):]
        if (not sep or not node.startswith(stem) or not number.isdigit() or not number.isascii() or len(number) > 7
                or not links.is_plain_name(name)):
            raise GpuSetupError("--dri-link must be card<N>::NAME or renderD<N>::NAME with a plain NAME, got {}".format(
                quoted(value, 120)))
        parsed.append((node, name))
    return parsed


def create_dri_links_in(rootfs: str, wanted: Sequence[Tuple[str, str]]) -> int:
    """udev's ``/dev/dri/by-path/NAME -> ../NODE`` links in the container: ``/dev`` and ``/dev/dri``
    must be plain directories already (runc made them for the DRM nodes), ``by-path`` is created
    when missing; every step is O_NOFOLLOW from the root's fd, the link is made by ``symlinkat`` and
    whatever has its name is left alone. How many were made."""
    if not wanted:
        return 0
    try:
        opened = [os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    except OSError as exc:
        raise GpuSetupError("cannot open the container root {}: {}".format(quoted(rootfs), exc.strerror or exc)) from None
    created = 0
    try:
        for name in DRI_BY_PATH:
            fd = (_open_directory_in if name == "by-path" else _existing_directory_in)(opened[-1], name)
            if fd is None:
                return 0  # no /dev/dri (or an odd one): nothing to link to
            opened.append(fd)
        for node, link in wanted:
            try:
                os.symlink("../" + node, link, dir_fd=opened[-1])
                created += 1
            except FileExistsError:
                pass
    except OSError as exc:
        raise GpuSetupError("cannot create the /dev/dri/by-path links in the container: {}".format(exc.strerror or exc)) from None
    finally:
        for fd in opened:
            os.close(fd)
    return created


def parse_links(values: Sequence[str]) -> List[Tuple[str, str, str]]:
    """``--link TARGET::/dir/NAME`` values, checked and bounded."""
    from nvdocker_setup.driver import links

    if len(values) > links.MAX_LINKS:
        raise GpuSetupError("{} --link options; at most {} are accepted".format(len(values), links.MAX_LINKS))
    parsed = []
    for value in values:
        link = links.parse_link(value)
        if link is None:
            raise GpuSetupError(
                "--link must be TARGET::/absolute/dir/NAME with plain names (no '/', '..' or NUL in TARGET and NAME), "
                "got {}".format(quoted(value, 120)))
        parsed.append(link)
    return parsed


def cuda_compat_dir_in(rootfs: str, compat_dir: str, host_version: Tuple[int, ...]) -> Optional[str]:
    """``compat_dir`` when the container has a CUDA forward-compatibility ``libcuda.so.<version>``
    there of a newer driver branch than ``host_version`` (:mod:`nvdocker_setup.driver.compat`),
    else None. The directory is reached from the root's fd with O_NOFOLLOW per component: a
    compat directory (or a parent) that is a symlink is left alone, nothing outside the root is
    read; the library is opened only when it is a regular file, without following a symlink."""
    from nvdocker_setup.driver import compat

    try:
        root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise GpuSetupError("cannot open the container root {}: {}".format(quoted(rootfs), exc.strerror or exc)) from None
    try:
        try:
            fd = _directory_fd(root_fd, compat_dir)
        except OSError:
            return None  # unreadable or odd: the container stays as it is
        if fd is None:
            return None
        try:
            found = compat.compat_library_in(fd, host_version)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    return compat_dir if found is not None else None


def write_ld_conf_in(rootfs: str, folders: Sequence[str]) -> bool:
    """Write ``/etc/ld.so.conf.d/00-nvdocker.conf`` inside ``rootfs`` so that a later ldconfig in
    the container keeps the driver libraries; False when the image's ``/etc`` or
    ``/etc/ld.so.conf.d`` is not a plain directory or the conf name is taken by a directory
    (the hook's ldconfig run still indexes the folders, which it gets as arguments)."""
    text = "# written by {} for the NVIDIA driver libraries\n{}".format(PROGRAM, "".join(f + "\n" for f in folders))
    try:
        opened = [os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    except OSError as exc:
        raise GpuSetupError("cannot open the container root {}: {}".format(quoted(rootfs), exc.strerror or exc)) from None
    try:
        for name in ("etc", "ld.so.conf.d"):
            fd = _open_directory_in(opened[-1], name)
            if fd is None:
                return False  # a symlinked (or otherwise odd) directory: leave it alone
            opened.append(fd)
        return _replace_file_in(opened[-1], LD_CONF_NAME, text.encode())
    except OSError as exc:
        raise GpuSetupError("cannot write /etc/ld.so.conf.d/{} in the container: {}".format(LD_CONF_NAME, exc.strerror or exc)) from None
    finally:
        for fd in opened:
            os.close(fd)


# -- update-ldcache ------------------------------------------------------------------------------

def parse_options(argv: Sequence[str], repeated: Sequence[str], single: Sequence[str]) -> Dict[str, Any]:
    """``--name value`` / ``--name=value`` options; ``repeated`` ones collect into lists."""
    options: Dict[str, Any] = {name: [] for name in repeated}
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, sep, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or (name not in repeated and name not in single):
            raise GpuSetupError("unexpected argument {}".format(quoted(arg)))
        if not sep:
            if index + 1 >= len(argv):
                raise GpuSetupError("{} needs a value".format(arg))
            value = argv[index + 1]
            index += 1
        index += 1
        if name in repeated:
            options[name].append(value)
        else:
            options[name] = value
    return options


def parse_compat_options(directory: Optional[str], version: Optional[str]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """``--cuda-compat-dir DIR --host-driver-version X.Y[.Z]`` (both or neither), checked."""
    if directory is None and version is None:
        return None
    from nvdocker_setup.driver import compat, links

    if directory is None or version is None:
        raise GpuSetupError("--cuda-compat-dir and --host-driver-version go together")
    if not links.is_plain_directory(directory):
        raise GpuSetupError("--cuda-compat-dir must be an absolute, normalized path, got {}".format(quoted(directory, 120)))
    parsed = compat.parse_version(version)
    if parsed is None:
        raise GpuSetupError("--host-driver-version must be a driver version such as 550.54.14, got {}".format(quoted(version, 60)))
    return directory, parsed


def update_ldcache(argv: Sequence[str], stdin) -> int:
    options = parse_options(
        argv, repeated=("folder", "link", "dri-link"), single=("ldconfig", "rootfs", "cuda-compat-dir", "host-driver-version"))
    folders: List[str] = options["folder"]
    links = parse_links(options["link"])
    dri_links = parse_dri_links(options["dri-link"])
    compat = parse_compat_options(options.get("cuda-compat-dir"), options.get("host-driver-version"))
    for folder in folders:
        if not folder.startswith("/") or ".." in folder.split("/") or not _encodable(folder):
            raise GpuSetupError("--folder must be an absolute path inside the container, got {}".format(quoted(folder)))
    ldconfig = options.get("ldconfig") or "/sbin/ldconfig"
    if not ldconfig.startswith("/"):
        raise GpuSetupError("--ldconfig must be an absolute path on the host, got {}".format(quoted(ldconfig)))
    rootfs = options.get("rootfs")
    if rootfs is None:
        bundle, spec = load_bundle(read_state(stdin))
        rootfs = rootfs_of(bundle, spec)
    rootfs = checked_rootfs(rootfs)
    create_links_in(rootfs, links)  # first: ldconfig then indexes the new names too
    create_dri_links_in(rootfs, dri_links)
    if not folders:
        return 0
    if compat is not None:
        compat_dir = cuda_compat_dir_in(rootfs, compat[0], compat[1])
        if compat_dir is not None:
            # first in our conf (for a later ldconfig in the container) and first on ldconfig's
            # command line: ldconfig scans those before its conf files, and of two libraries with
            # one SONAME the cache (and so the loader) lists the one scanned first, first
            folders = [compat_dir] + [folder for folder in folders if folder != compat_dir]
    write_ld_conf_in(rootfs, folders)
    status = run_confined([ldconfig, "-r", rootfs] + list(folders), rootfs)
    if status != 0:
        raise GpuSetupError(
            "{} -r {} failed with status {}".format(ldconfig, rootfs, status),
            hint="the container's ld cache could not be refreshed; see ldconfig's message above",
        )
    return 0


# -- prestart: the --gpus hook under a runtime other than ours -------------------------------------

def find_nvidia_cli(environ: Dict[str, str]) -> Optional[str]:
    """NVIDIA's CLI by absolute path: relative PATH entries (and "") are skipped."""
    directories = [d for d in environ.get("PATH", "").split(os.pathsep) if d.startswith("/")] + list(_CLI_SEARCH)
    for directory in directories:
        candidate = os.path.join(directory, CLI_NAME)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def nvidia_cli_argv(cli: str, spec: Dict[str, Any], pid: int, rootfs: str, driver_root: str, ldconfig: str,
                    disable_require: bool = False, no_cgroups: bool = False) -> Optional[List[str]]:
    """The ``nvidia-container-cli configure`` command NVIDIA's hook would run; None: no request."""
    from nvdocker_setup.driver import requirements
    from nvdocker_setup.driver.capabilities import parse_capabilities
    from nvdocker_setup.runtime.request import (
        DRIVER_CAPABILITIES,
        VISIBLE_DEVICES,
        environment,
        extra_requests,
        parse_visible_devices,
    )

    env = environment(spec)
    devices = parse_visible_devices(env[VISIBLE_DEVICES]) if VISIBLE_DEVICES in env else None
    if devices is None:
        return None
    imex, mig_config, mig_monitor = extra_requests(env, spec)
    argv = [cli]
    if driver_root not in ("", "/"):
        argv.append("--root={}".format(driver_root))
    argv += ["--load-kmods", "configure", "--ldconfig=@{}".format(ldconfig)]
    if no_cgroups:  # runtime.conf's no-cgroups: NVIDIA's CLI then sets up no device cgroup either
        argv.append("--no-cgroups")
    if devices:
        argv.append("--device={}".format(",".join(devices)))
    # as NVIDIA's hook: the MIG and IMEX requests go on to nvidia-container-cli
    for flag, value in (("--mig-config", mig_config), ("--mig-monitor", mig_monitor), ("--imex-channel", imex)):
        if value is not None:
            argv.append("{}={}".format(flag, ",".join(value)))
    argv += ["--{}".format(capability) for capability in parse_capabilities(env.get(DRIVER_CAPABILITIES))]
    if not disable_require and not requirements.disabled(env):
        argv += ["--require={}".format(value) for _, value in requirements.requirement_values(env)]
    argv += ["--pid={}".format(pid), rootfs]
    return argv


def prestart(stdin, environ: Dict[str, str]) -> int:
    from nvdocker_setup.runtime.config import load
    from nvdocker_setup.runtime.request import check_request_sizes, environment

    state = read_state(stdin)
    bundle, spec = load_bundle(state)
    check_request_sizes(environment(spec), spec)
    cli = find_nvidia_cli(environ)
    config = load(environ)
    pid = state.get("pid") or 0
    rootfs = rootfs_of(bundle, spec)
    argv = nvidia_cli_argv(cli or CLI_NAME, spec, pid, rootfs, config.driver_root, config.ldconfig, config.disable_require,
                           config.no_cgroups)
    if argv is None:
        return 0  # not a GPU container (NVIDIA_VISIBLE_DEVICES unset, empty or void)
    checked_rootfs(rootfs)
    if not pid:
        raise GpuSetupError("the container state has no pid: nvidia-container-cli needs the container's process")
    if cli is None:
        raise GpuSetupError(
            "this container asks for GPUs (docker run --gpus, or NVIDIA_VISIBLE_DEVICES) but its runtime does not "
            "inject them, and NVIDIA's {} is not installed to do it from this hook".format(CLI_NAME),
            hint=FIX_HINT,
        )
    try:
        os.execve(cli, argv, SAFE_ENV)  # absolute path, explicit environment
    except OSError as exc:
        raise GpuSetupError("cannot execute {}: {}".format(cli, exc.strerror or exc)) from None
    return 1  # not reached


# -- entry ---------------------------------------------------------------------------------------

USAGE = "usage: {} [-debug] [-config FILE] update-ldcache|prestart|poststart|poststop [options]".format(PROGRAM)


def split_command(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """Skip NVIDIA's global flags (``-debug``, ``-config FILE``); the subcommand and its args."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        name = argv[index].lstrip("-")
        index += 2 if name == "config" else 1
    if index >= len(argv):
        return None, []
    return argv[index], list(argv[index + 1:])


def exit_now(status: int) -> None:
    """Flush and leave without interpreter teardown (a few ms of a container start)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _error(text: str) -> None:
    """One bounded line on stderr (runc collects it for its error message)."""
    try:
        sys.stderr.write(shorten("{}: {}".format(PROGRAM, text)) + "\n")
    except (OSError, ValueError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    try:
        # runc starts a createContainer hook in the container's rootfs: nothing we do may
        # depend on (or resolve a relative path against) a directory the image controls
        os.chdir("/")
    except OSError:
        pass
    try:
        command, rest = split_command(sys.argv[1:] if argv is None else argv)
        if command == "update-ldcache":
            return update_ldcache(rest, sys.stdin)
        if command == "prestart":
            return prestart(sys.stdin, dict(os.environ))
        if command in ("poststart", "poststop"):
            return 0
        sys.stderr.write(USAGE + "\n")
        return 2
    except GpuSetupError as error:
        _error(str(error))
        return 1
    except Exception as exc:  # noqa: BLE001 - never a traceback: the input is the container's
        _error("internal error: {}: {}".format(type(exc).__name__, shorten(str(exc), 300)))
        return 1
