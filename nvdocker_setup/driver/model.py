"""What a container needs from the driver, in one model shared by the runtime and CDI.

:class:`ContainerEdits` is CDI's ``containerEdits`` (device nodes, mounts, hooks, env) as Python
objects. The runtime applies one to the OCI spec it is about to start; ``cdi generate`` writes the
same objects out as a CDI spec. Building both from this one model is what keeps them from
drifting apart. Plain classes with ``__slots__``: ``dataclasses`` would cost the runtime ~15 ms of
imports on every GPU container start.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

#: Options of every driver file mount: read-only, no set-uid, no device files.
READ_ONLY_MOUNT = ("ro", "nosuid", "nodev", "rbind", "rprivate")
#: For IPC directories the container must write into (the MPS pipe directory).
WRITABLE_MOUNT = ("nosuid", "nodev", "noexec", "rbind", "rprivate")
#: The whole environment of every hook we emit. A hook entry without ``env`` is started by runc
#: with the container's environment (runc init has applied it when createContainer hooks run, and
#: the container's rootfs is the working directory): the host's dynamic loader would then honour
#: the image's LD_PRELOAD / LD_AUDIT / LD_LIBRARY_PATH / GCONV_PATH and run the image's code as
#: root on the host (the class of CVE-2025-23266). So a hook never inherits an environment.
HOOK_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin",)


class _Value:
    """Equality, hashing and repr from ``__slots__``: these objects are compared in tests."""

    __slots__: Tuple[str, ...] = ()

    def _key(self) -> Tuple[Any, ...]:
        return tuple(_freeze(getattr(self, name)) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Value) and type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join("{}={!r}".format(name, getattr(self, name)) for name in self.__slots__)
        return "{}({})".format(type(self).__name__, fields)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    return value


class DeviceNode(_Value):
    """A character device the container gets, with the cgroup access it needs."""

    __slots__ = ("path", "host_path", "type", "major", "minor", "file_mode", "uid", "gid", "permissions")

    def __init__(
        self,
        path: str,
        major: int,
        minor: int,
        host_path: Optional[str] = None,
        type: str = "c",
        file_mode: Optional[int] = None,
        uid: int = 0,
        gid: int = 0,
        permissions: str = "rwm",
    ) -> None:
        self.path = path
        self.host_path = host_path or path
        self.type = type
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid
        self.permissions = permissions

    def to_oci(self) -> Dict[str, Any]:
        """An entry of the OCI spec's ``linux.devices``."""
        device: Dict[str, Any] = {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor}
        if self.file_mode is not None:
            device["fileMode"] = self.file_mode
        device["uid"] = self.uid
        device["gid"] = self.gid
        return device

    def cgroup_rule(self) -> Dict[str, Any]:
        """The ``linux.resources.devices`` rule that lets the container open it."""
        return {"allow": True, "type": self.type, "major": self.major, "minor": self.minor, "access": self.permissions}

    def to_cdi(self) -> Dict[str, Any]:
        node: Dict[str, Any] = {"path": self.path}
        if self.host_path != self.path:
            node["hostPath"] = self.host_path
        node.update({"type": self.type, "major": self.major, "minor": self.minor})
        if self.file_mode is not None:
            node["fileMode"] = self.file_mode
        node["permissions"] = self.permissions
        if self.uid:
            node["uid"] = self.uid
        if self.gid:
            node["gid"] = self.gid
        return node

    @classmethod
    def from_cdi(cls, node: Dict[str, Any]) -> "DeviceNode":
        return cls(
            path=node["path"],
            major=node["major"],
            minor=node["minor"],
            host_path=node.get("hostPath"),
            type=node.get("type", "c"),
            file_mode=node.get("fileMode"),
            uid=node.get("uid", 0),
            gid=node.get("gid", 0),
            permissions=node.get("permissions", "rwm"),
        )


class Mount(_Value):
    """A bind mount of a host file or directory at ``container_path``."""

    __slots__ = ("host_path", "container_path", "options")

    def __init__(self, host_path: str, container_path: str, options: Sequence[str] = READ_ONLY_MOUNT) -> None:
        self.host_path = host_path
        self.container_path = container_path
        self.options = list(options)

    def to_oci(self) -> Dict[str, Any]:
        return {"destination": self.container_path, "type": "bind", "source": self.host_path, "options": list(self.options)}

    def to_cdi(self) -> Dict[str, Any]:
        return {"hostPath": self.host_path, "containerPath": self.container_path, "type": "bind", "options": list(self.options)}

    @classmethod
    def from_cdi(cls, mount: Dict[str, Any]) -> "Mount":
        return cls(mount["hostPath"], mount["containerPath"], mount.get("options") or ())


class Hook(_Value):
    """An OCI hook, named by the point in the lifecycle it runs at (``createContainer``...)."""

    __slots__ = ("hook_name", "path", "args", "env")

    def __init__(self, hook_name: str, path: str, args: Sequence[str] = (), env: Sequence[str] = ()) -> None:
        self.hook_name = hook_name
        self.path = path
        self.args = list(args)
        self.env = list(env or HOOK_ENV)  # never none: see HOOK_ENV

    def to_oci(self) -> Dict[str, Any]:
        """An entry of the OCI spec's ``hooks``: always with an explicit ``env`` (:data:`HOOK_ENV`
        when the hook was given none), never the container's."""
        hook: Dict[str, Any] = {"path": self.path}
        if self.args:
            hook["args"] = list(self.args)
        hook["env"] = list(self.env or HOOK_ENV)
        return hook

    def to_cdi(self) -> Dict[str, Any]:
        """A CDI ``hooks`` entry; ``env`` is part of CDI's hook since cdiVersion 0.3.0, so it needs
        no higher version (see nvdocker_setup.cdi.spec.minimum_version)."""
        hook: Dict[str, Any] = {"hookName": self.hook_name}
        hook.update(self.to_oci())
        return hook

    @classmethod
    def from_cdi(cls, hook: Dict[str, Any]) -> "Hook":
        return cls(hook["hookName"], hook["path"], hook.get("args") or (), hook.get("env") or ())


class ContainerEdits(_Value):
    """Everything to add to a container for some GPUs and capabilities."""

    __slots__ = ("env", "device_nodes", "mounts", "hooks")

    def __init__(
        self,
        env: Iterable[str] = (),
        device_nodes: Iterable[DeviceNode] = (),
        mounts: Iterable[Mount] = (),
        hooks: Iterable[Hook] = (),
    ) -> None:
        self.env: List[str] = list(env)
        self.device_nodes: List[DeviceNode] = list(device_nodes)
        self.mounts: List[Mount] = list(mounts)
        self.hooks: List[Hook] = list(hooks)

    def merged(self, *others: "ContainerEdits") -> "ContainerEdits":
        """This plus ``others``, without duplicates (a device node or mount target counts once)."""
        result = ContainerEdits(self.env, self.device_nodes, self.mounts, self.hooks)
        for other in others:
            result.env.extend(item for item in other.env if item not in result.env)
            paths = {node.path for node in result.device_nodes}
            result.device_nodes.extend(node for node in other.device_nodes if node.path not in paths)
            targets = {mount.container_path for mount in result.mounts}
            result.mounts.extend(mount for mount in other.mounts if mount.container_path not in targets)
            result.hooks.extend(hook for hook in other.hooks if hook not in result.hooks)
        return result

    def is_empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks)

    def to_cdi(self) -> Dict[str, Any]:
        """CDI's ``containerEdits`` object (empty lists left out)."""
        edits: Dict[str, Any] = {}
        if self.env:
            edits["env"] = list(self.env)
        if self.device_nodes:
            edits["deviceNodes"] = [node.to_cdi() for node in self.device_nodes]
        if self.mounts:
            edits["mounts"] = [mount.to_cdi() for mount in self.mounts]
        if self.hooks:
            edits["hooks"] = [hook.to_cdi() for hook in self.hooks]
        return edits

    @classmethod
    def from_cdi(cls, edits: Optional[Dict[str, Any]]) -> "ContainerEdits":
        edits = edits or {}
        return cls(
            env=edits.get("env") or (),
            device_nodes=[DeviceNode.from_cdi(node) for node in edits.get("deviceNodes") or ()],
            mounts=[Mount.from_cdi(mount) for mount in edits.get("mounts") or ()],
            hooks=[Hook.from_cdi(hook) for hook in edits.get("hooks") or ()],
        )
