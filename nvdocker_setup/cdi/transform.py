"""``cdi transform root``: a CDI spec with one root of its paths replaced by another (pure).

A spec generated where the driver lives under a driver container's root (``/run/nvidia/driver``)
names host paths there; a consumer on a host that mounts it elsewhere (GKE, the GPU Operator's
layouts) needs them under the other root. ``relative_to="host"`` rewrites the host side (device
nodes' ``hostPath`` (their ``path`` when they have none), mounts' ``hostPath``, hooks' ``path``
except a ``startContainer`` hook's, which resolves in the container, and the arguments of the hooks
that run on the host, both sides of a ``TARGET::LINK`` one); ``"container"`` the container side
(nodes' ``path``, mounts' ``containerPath``, and the same hook rules). A path is rewritten only at
a component boundary: ``/driver`` matches ``/driver`` and ``/driver/lib``, never ``/driver-old``.
The spec works with any CDI spec, ours or NVIDIA's (tests/cdi/test_transform.py).
"""

import copy
import posixpath
from typing import Any, Dict, List

RELATIVE_TO = ("host", "container")
#: Hooks that run in the container's namespaces: their arguments are the container's.
_CONTAINER_HOOKS = ("createContainer", "startContainer")


def transform_path(path: Any, root: str, target: str) -> Any:
    """``path`` with ``root`` replaced by ``target`` when it is ``root`` or below it."""
    if not isinstance(path, str) or not path.startswith("/"):
        return path
    prefix = root.rstrip("/") + "/"
    if not (path + "/").startswith(prefix):
        return path
    rest = (path + "/")[len(prefix):].rstrip("/")
    return posixpath.join(target, rest) if rest else target


def _edits(edits: Dict[str, Any], root: str, target: str, relative_to: str) -> None:
    def moved(value: Any) -> Any:
        return transform_path(value, root, target)

    for node in edits.get("deviceNodes") or ():
        if not isinstance(node, dict):
            continue
        if relative_to == "host":
            node["hostPath"] = moved(node.get("hostPath") or node.get("path"))
        else:
            node["path"] = moved(node.get("path"))
    for mount in edits.get("mounts") or ():
        if isinstance(mount, dict):
            field = "hostPath" if relative_to == "host" else "containerPath"
            mount[field] = moved(mount.get(field))
    for hook in edits.get("hooks") or ():
        if not isinstance(hook, dict):
            continue
        if hook.get("hookName") != "startContainer":
            hook["path"] = moved(hook.get("path"))
        if hook.get("hookName") in _CONTAINER_HOOKS or not isinstance(hook.get("args"), list):
            continue
        args: List[Any] = []
        for arg in hook["args"]:
            if isinstance(arg, str) and "::" in arg:
                left, _, right = arg.partition("::")
                args.append("{}::{}".format(moved(left), moved(right)))
            else:
                args.append(moved(arg))
        hook["args"] = args


def transform_root(spec: Dict[str, Any], root: str, target: str, relative_to: str = "host") -> Dict[str, Any]:
    """A copy of ``spec`` with ``root`` replaced by ``target`` (see the module's docstring)."""
    if relative_to not in RELATIVE_TO:
        raise ValueError("relative_to must be one of {}".format(", ".join(RELATIVE_TO)))
    for name, value in (("--from", root), ("--to", target)):
        if not isinstance(value, str) or not value.startswith("/"):
            raise ValueError("{} must be an absolute path, got {!r}".format(name, value))
    result = copy.deepcopy(spec)
    root, target = posixpath.normpath(root), posixpath.normpath(target)
    if root == target:
        return result
    if isinstance(result.get("containerEdits"), dict):
        _edits(result["containerEdits"], root, target, relative_to)
    for device in result.get("devices") or ():
        if isinstance(device, dict) and isinstance(device.get("containerEdits"), dict):
            _edits(device["containerEdits"], root, target, relative_to)
    return result
