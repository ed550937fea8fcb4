"""The bundle's ``config.json``: read it, apply :class:`ContainerEdits`, write it back atomically.

All edits happen in memory; the file is replaced by rename only once they all succeeded, so a
failure leaves the original bytes and never a half-edited spec.
"""

from __future__ import annotations

import os

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Dict, Optional, Tuple

    from nvdocker_setup.driver.model import ContainerEdits

SPEC_NAME = "config.json"


def spec_path(bundle: str) -> str:
    return os.path.join(bundle, SPEC_NAME)


def read_spec(path: str) -> Tuple[bytes, Dict[str, Any]]:
    """The spec's bytes and its parsed value."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise GpuSetupError("cannot read the container's OCI spec {}: {}".format(path, exc.strerror or exc)) from None
    try:
        spec = jsonio.loads(data)
    except ValueError as exc:
        raise GpuSetupError("the container's OCI spec {} is not valid JSON: {}".format(path, exc)) from None
    if not isinstance(spec, dict):
        raise GpuSetupError("the container's OCI spec {} is not a JSON object".format(path))
    return data, spec


def rootfs_of(bundle: str, spec: Dict[str, Any]) -> Optional[str]:
    """The absolute container root (``root.path`` is relative to the bundle); None if unset."""
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        return None
    return os.path.normpath(os.path.join(os.path.abspath(bundle), path))


def _object(parent: Dict[str, Any], key: str) -> Dict[str, Any]:
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise GpuSetupError("the OCI spec's {} is not an object".format(key))
    return value


def _array(parent: Dict[str, Any], key: str) -> list:
    value = parent.get(key)
    if value is None:
        value = parent[key] = []
    if not isinstance(value, list):
        raise GpuSetupError("the OCI spec's {} is not an array".format(key))
    return value


def apply_edits(spec: Dict[str, Any], edits: ContainerEdits) -> None:
    """Add ``edits`` to an OCI spec; what the container already has (same device path, same
    mount destination, same env name) wins over ours."""
    if edits.env:
        env = _array(_object(spec, "process"), "env")
        names = {entry.partition("=")[0] for entry in env if isinstance(entry, str)}
        env.extend(entry for entry in edits.env if entry.partition("=")[0] not in names)
    if edits.device_nodes:
        linux = _object(spec, "linux")
        devices = _array(linux, "devices")
        present = {device.get("path") for device in devices if isinstance(device, dict)}
        rules = _array(_object(linux, "resources"), "devices")
        for node in edits.device_nodes:
            if node.path not in present:
                devices.append(node.to_oci())
            rules.append(node.cgroup_rule())
    if edits.mounts:
        mounts = _array(spec, "mounts")
        targets = {mount.get("destination") for mount in mounts if isinstance(mount, dict)}
        mounts.extend(mount.to_oci() for mount in edits.mounts if mount.container_path not in targets)
    for hook in edits.hooks:
        _array(_object(spec, "hooks"), hook.hook_name).append(hook.to_oci())


def encode(spec: Dict[str, Any]) -> bytes:
    """Compact JSON, as containerd writes it."""
    return jsonio.dumps(spec).encode("utf-8")


def write_atomically(path: str, data: bytes) -> None:
    """Temp file in the same directory, same mode, rename: old bytes or new, never a mix.

    No fsync: the bundle lives as long as the container and is recreated after a reboot, so
    power-loss durability buys nothing, and on a disk-backed bundle it costs a journal commit.
    """
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".{}.nvdocker-{}.tmp".format(os.path.basename(path), os.getpid()))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        if os.path.lexists(temp):  # left by a killed run whose pid we now have
            os.unlink(temp)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise GpuSetupError("cannot write the container's OCI spec {}: {}".format(path, exc.strerror or exc)) from None
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
