"""The NVIDIA device nodes under a driver root and their ``/dev/char/<major>:<minor>`` links.

systemd re-applies a unit's device rules on ``systemctl daemon-reload`` and resolves them through
``/dev/char``; a container whose GPU nodes have no link there loses them ("Failed to initialize
NVML: Unknown Error", NVIDIA container toolkit #251, #1227). :func:`create_dev_char_links` makes
the links udev would (``/dev/char/195:0 -> ../nvidia0``), :func:`create_control_nodes` the control
nodes ``nvidia-modprobe`` would.

Every path is walked from the driver root one component at a time with ``O_NOFOLLOW`` and every
change is made relative to a directory file descriptor (``symlinkat``, ``mknodat``, ``mkdirat``),
so a symlink planted on the way (``<root>/dev/char -> /etc``) is refused, never followed out of
the root. The root itself is the administrator's argument and may be a symlink.

Standard library only (no CLI imports): the CLI renders :class:`Report`.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat

from nvdocker_setup.driver.discovery import resolve_in_root
from nvdocker_setup.driver.errors import GpuSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Optional, Sequence, Tuple

PROC_DEVICES = "/proc/devices"
DEV_CHAR = "/dev/char"
#: The nvidia character major is registered with a fixed number; nvidia-uvm's is dynamic.
NVIDIA_MAJOR = 195
#: Control nodes: name under /dev, the /proc/devices driver that owns its major, minor.
CONTROL_NODES = (
    ("nvidiactl", "nvidia", 255),
    ("nvidia-modeset", "nvidia", 254),
    ("nvidia-uvm", "nvidia-uvm", 0),
    ("nvidia-uvm-tools", "nvidia-uvm", 1),
)
NODE_MODE = 0o666
_NODE_NAME = re.compile(r"^nvidia(ctl|[0-9]+|-uvm|-uvm-tools|-modeset)$")
_CAP_NAME = re.compile(r"^nvidia-cap[0-9]+$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

#: Entry statuses. ``present``: already right, nothing to do. ``conflict``: something else has the
#: name and is left alone; ``mismatch``: the node's major is not the one /proc/devices lists for
#: its driver (no link made); ``skipped``: its driver's major is unknown (module not loaded).
CHANGES = ("created", "replaced")
PLANNED = ("would-create", "would-replace")
PROBLEMS = ("conflict", "mismatch")


class Entry:
    """One link or node: its path inside the root, what it is or points to, what was done."""

    __slots__ = ("path", "kind", "major", "minor", "target", "status", "message")

    def __init__(self, path: str, kind: str, major: Optional[int], minor: int, target: Optional[str],
                 status: str, message: str = "") -> None:
        self.path = path
        self.kind = kind
        self.major = major
        self.minor = minor
        self.target = target
        self.status = status
        self.message = message

    def to_dict(self) -> Dict[str, object]:
        return {"path": self.path, "kind": self.kind, "major": self.major, "minor": self.minor,
                "target": self.target, "status": self.status, "message": self.message}


class Report:
    """What one run found and did (or, with ``dry_run``, would do)."""

    def __init__(self, action: str, driver_root: str, directory: str, dry_run: bool, force: bool = False) -> None:
        self.action = action
        self.driver_root = driver_root
        self.directory = directory
        self.dry_run = dry_run
        self.force = force
        self.entries: List[Entry] = []
        self.notes: List[str] = []

    @property
    def changed(self) -> bool:
        return any(entry.status in CHANGES for entry in self.entries)

    @property
    def would_change(self) -> bool:
        return any(entry.status in CHANGES + PLANNED for entry in self.entries)

    @property
    def problems(self) -> List[Entry]:
        return [entry for entry in self.entries if entry.status in PROBLEMS]

    def to_dict(self) -> Dict[str, object]:
        return {
            "ok": not self.problems, "action": self.action, "driver_root": self.driver_root,
            "directory": self.directory, "dry_run": self.dry_run, "force": self.force, "changed": self.changed,
            "would_change": self.would_change, "entries": [entry.to_dict() for entry in self.entries],
            "notes": list(self.notes),
        }


class UnsafePath(GpuSetupError):
    """A symlink or a non-directory where a directory below the driver root should be."""


# -- /proc/devices -----------------------------------------------------------------------------


def parse_proc_devices(text: str) -> Dict[str, int]:
    """Character-device majors by driver name from the text of ``/proc/devices``."""
    majors: Dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        if line.endswith(":"):
            section = line
            continue
        parts = line.split()
        if section.startswith("Character") and len(parts) == 2 and parts[0].isdigit():
            majors.setdefault(parts[1], int(parts[0]))
    return majors


def read_proc_devices(root: str, host_proc_devices: str = PROC_DEVICES) -> Tuple[str, Dict[str, int]]:
    """``(path read, majors)``: the driver root's ``proc/devices`` first, then the host's (like discovery)."""
    for path in (os.path.join(root, "proc/devices"), host_proc_devices):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return path, parse_proc_devices(handle.read())
        except OSError:
            continue
    return host_proc_devices, {}


def driver_major(majors: Dict[str, int], driver: str) -> Optional[int]:
    if driver == "nvidia":
        return majors.get("nvidia-frontend", majors.get("nvidia"))
    return majors.get(driver)


# -- walking without following -----------------------------------------------------------------


def _parts(inside: str) -> List[str]:
    parts = [part for part in inside.split("/") if part and part != "."]
    if ".." in parts:
        raise UnsafePath("{} has a '..' component: give a path inside the driver root".format(inside))
    return parts


def open_dir(root: str, inside: str, create: bool = False) -> Optional[int]:
    """A directory fd for ``inside`` (a path inside ``root``), opened component by component with
    O_NOFOLLOW; missing directories are made (0755) when ``create``, else None is returned. A
    symlink or a non-directory on the way is an error, never followed."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise GpuSetupError("cannot open the driver root {}: {}".format(root, exc.strerror)) from None
    walked = ""
    try:
        for part in _parts(inside):
            walked += "/" + part
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(
                        "{} under {} is a symlink or not a directory: not followed".format(walked, root),
                        "remove it (the real directory is made) or name another with --dev-char-path",
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat(name: str, dir_fd: int) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _describe(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a symlink"


# -- device nodes ------------------------------------------------------------------------------


def nvidia_nodes(root: str) -> Iterator[Tuple[str, int]]:
    """``(path inside the root, st_rdev)`` of every NVIDIA character device under ``<root>/dev``
    (nvidiactl, nvidia<N>, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset, nvidia-caps/*), sorted by
    device number; symlinks are not followed."""
    dev = open_dir(root, "/dev")
    if dev is None:
        raise GpuSetupError("there is no {}".format(os.path.join(root, "dev")))
    found: List[Tuple[int, str]] = []
    try:
        for name in os.listdir(dev):
            info = _lstat(name, dev)
            if info is None:
                continue
            if _NODE_NAME.match(name) and stat.S_ISCHR(info.st_mode):
                found.append((info.st_rdev, "/dev/" + name))
            elif name == "nvidia-caps" and stat.S_ISDIR(info.st_mode):
                caps = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dev)
                try:
                    for cap in os.listdir(caps):
                        cap_info = _lstat(cap, caps)
                        if cap_info is not None and _CAP_NAME.match(cap) and stat.S_ISCHR(cap_info.st_mode):
                            found.append((cap_info.st_rdev, "/dev/nvidia-caps/" + cap))
                finally:
                    os.close(caps)
    finally:
        os.close(dev)
    for rdev, path in sorted(found, key=lambda item: (os.major(item[0]), os.minor(item[0]), item[1])):
        yield path, rdev


def _node_driver(path: str) -> str:
    name = posixpath.basename(path)
    if path.startswith("/dev/nvidia-caps/"):
        return "nvidia-caps"
    if name.startswith("nvidia-uvm"):
        return "nvidia-uvm"
    return "nvidia"


# -- /dev/char links ---------------------------------------------------------------------------


def _points_to(root: str, directory: str, target: str, rdev: int) -> bool:
    """Whether a link in ``directory`` (inside the root) with this target reaches the node ``rdev``."""
    inside = target if target.startswith("/") else posixpath.normpath(posixpath.join(directory, target))
    resolved = resolve_in_root(root, inside)
    if resolved is None:
        return False
    try:
        info = os.lstat(resolved[0])
    except OSError:
        return False
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == rdev


def create_dev_char_links(root: str = "/", directory: str = DEV_CHAR, dry_run: bool = False, force: bool = False,
                          host_proc_devices: str = PROC_DEVICES) -> Report:
    """Make ``<directory>/<major>:<minor> -> <relative path of the node>`` for every NVIDIA node
    under ``<root>/dev`` (``directory`` is a path inside the root). An existing link that reaches the
    same node is left alone; a link elsewhere is a conflict (replaced with ``force``); anything that
    is not a symlink is a conflict even with ``force``. A node whose major is not the one
    /proc/devices lists for its driver is a mismatch and gets no link."""
    directory = "/" + "/".join(_parts(directory))
    report = Report("create-dev-char-symlinks", root, directory, dry_run, force)
    proc_path, majors = read_proc_devices(root, host_proc_devices)
    nodes = list(nvidia_nodes(root))
    if not nodes:
        raise GpuSetupError("there is no NVIDIA device node under {}".format(os.path.join(root, "dev")),
                            "load the driver and create the nodes (`nvdocker-setup system create-device-nodes "
                            "--control-devices`, `nvidia-modprobe -c=0`)")
    # a dry run makes no directory: None when it does not exist yet (then every link is new)
    fd = open_dir(root, directory, create=not dry_run)
    try:
        for path, rdev in nodes:
            major, minor = os.major(rdev), os.minor(rdev)
            name = "{}:{}".format(major, minor)
            link = posixpath.join(directory, name)
            target = posixpath.relpath(path, directory)
            expected = driver_major(majors, _node_driver(path))
            unchecked = "{} lists no {}: the majors of its nodes are not cross-checked".format(proc_path, _node_driver(path))
            if expected is None and unchecked not in report.notes:
                report.notes.append(unchecked)
            if expected is not None and expected != major:
                report.entries.append(Entry(link, "link", major, minor, target, "mismatch",
                                            "{} is {}:{} but {} lists {} with major {}: a stale node, re-create it"
                                            .format(path, major, minor, proc_path, _node_driver(path), expected)))
                continue
            report.entries.append(_link(fd, root, directory, name, link, target, major, minor, rdev, dry_run, force))
    finally:
        if fd is not None:
            os.close(fd)
    return report


def _link(fd: Optional[int], root: str, directory: str, name: str, link: str, target: str, major: int, minor: int,
          rdev: int, dry_run: bool, force: bool) -> Entry:
    info = _lstat(name, fd) if fd is not None else None
    if info is None:
        if not dry_run:
            assert fd is not None
            os.symlink(target, name, dir_fd=fd)
        return Entry(link, "link", major, minor, target, "would-create" if dry_run else "created")
    if not stat.S_ISLNK(info.st_mode):
        return Entry(link, "link", major, minor, target, "conflict",
                     "{} is {}, left alone (remove it to have the link made)".format(link, _describe(info.st_mode)))
    assert fd is not None
    current = os.readlink(name, dir_fd=fd)
    if current == target or _points_to(root, directory, current, rdev):
        return Entry(link, "link", major, minor, current, "present")
    if not force:
        return Entry(link, "link", major, minor, target, "conflict",
                     "{} -> {} does not reach the node: left alone (--force replaces it)".format(link, current))
    if not dry_run:
        temporary = ".{}.nvdocker-new".format(name)
        if _lstat(temporary, fd) is not None:
            os.unlink(temporary, dir_fd=fd)
        os.symlink(target, temporary, dir_fd=fd)
        os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
    return Entry(link, "link", major, minor, target, "would-replace" if dry_run else "replaced",
                 "was -> {}".format(current))


# -- control nodes -----------------------------------------------------------------------------


#: The modules whose control nodes create_control_nodes makes, in load order (nvidia first).
KERNEL_MODULES = ("nvidia", "nvidia-uvm", "nvidia-modeset")
MODPROBE_PATHS = ("/usr/sbin/modprobe", "/sbin/modprobe")
MODPROBE_DEADLINE_S = 60


def load_kernel_modules(root: str = "/", modprobe_paths: Sequence[str] = MODPROBE_PATHS) -> List[str]:
    """``modprobe -a nvidia nvidia-uvm nvidia-modeset`` (the first of ``modprobe_paths`` that is
    a trusted program: root's, in root's directories), with an explicit environment and a
    deadline; the modules asked for. Only for the host's own driver (root ``/``): a driver
    container loads its own modules."""
    import subprocess

    from nvdocker_setup.driver.discovery import resolve_trusted

    if root not in ("", "/"):
        raise GpuSetupError("--load-kernel-modules loads the host's modules: it needs the driver root /, not {}".format(root),
                            hint="a driver container loads its own modules; leave --load-kernel-modules out")
    program = None
    for candidate in modprobe_paths:
        found, problem = resolve_trusted("/", candidate)
        if found is not None and problem is None:
            program = candidate
            break
    if program is None:
        raise GpuSetupError("no trusted modprobe at {}".format(" or ".join(modprobe_paths)),
                            hint="install kmod, or load the modules another way and leave --load-kernel-modules out")
    try:
        done = subprocess.run([program, "-a"] + list(KERNEL_MODULES), env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=MODPROBE_DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise GpuSetupError("{} did not finish within {} s".format(program, MODPROBE_DEADLINE_S)) from None
    if done.returncode != 0:
        raise GpuSetupError("{} -a {} failed (status {}): {}".format(
            program, " ".join(KERNEL_MODULES), done.returncode, (done.stdout or "").strip()[-500:]),
            hint="check that the NVIDIA driver matches the running kernel (dkms status)")
    return list(KERNEL_MODULES)


def create_control_nodes(root: str = "/", dry_run: bool = False, host_proc_devices: str = PROC_DEVICES) -> Report:
    """mknod the missing control nodes (nvidiactl 195:255, nvidia-modeset 195:254, nvidia-uvm and
    nvidia-uvm-tools <uvm major>:0/1) under ``<root>/dev``, mode 0666, root:root, for the drivers
    whose major /proc/devices lists. A node of the right number is left alone; anything else at
    the name is a conflict, never replaced."""
    proc_path, majors = read_proc_devices(root, host_proc_devices)
    if driver_major(majors, "nvidia") is None:
        raise GpuSetupError("{} lists no nvidia character device: the NVIDIA driver is not loaded".format(proc_path),
                            "load it (`modprobe nvidia`, `nvidia-modprobe`) and run this again")
    report = Report("create-device-nodes", root, "/dev", dry_run)
    fd = open_dir(root, "/dev")
    if fd is None:
        raise GpuSetupError("there is no {}".format(os.path.join(root, "dev")))
    try:
        for name, driver, minor in CONTROL_NODES:
            path = "/dev/" + name
            major = driver_major(majors, driver)
            if major is None:
                report.entries.append(Entry(path, "node", None, minor, None, "skipped",
                                            "{} lists no {} (module not loaded): not created".format(proc_path, driver)))
                continue
            report.entries.append(_node(fd, name, path, major, minor, dry_run))
    finally:
        os.close(fd)
    return report


def _node(fd: int, name: str, path: str, major: int, minor: int, dry_run: bool) -> Entry:
    rdev = os.makedev(major, minor)
    info = _lstat(name, fd)
    if info is None:
        if not dry_run:
            old = os.umask(0)
            try:
                os.mknod(name, stat.S_IFCHR | NODE_MODE, rdev, dir_fd=fd)
            finally:
                os.umask(old)
            os.chown(name, 0, 0, dir_fd=fd, follow_symlinks=False)
        return Entry(path, "node", major, minor, None, "would-create" if dry_run else "created")
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == rdev:
        return Entry(path, "node", major, minor, None, "present")
    if stat.S_ISCHR(info.st_mode):
        what = "the character device {}:{}".format(os.major(info.st_rdev), os.minor(info.st_rdev))
    elif stat.S_ISLNK(info.st_mode):
        what = "a symlink"
    else:
        what = _describe(info.st_mode)
    return Entry(path, "node", major, minor, None, "conflict",
                 "{} is {}, not {}:{}: left alone (remove it to have it made)".format(path, what, major, minor))
