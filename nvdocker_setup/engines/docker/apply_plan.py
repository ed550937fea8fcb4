"""Pure decisions for applying a daemon.json change to a running dockerd.

What dockerd picks up on SIGHUP (verified on 20.10 here, and in moby's ``Reload``): ``runtimes``
and ``default-runtime`` are replaced when the key is present in the file, but a key *removed*
from the file is not forgotten: its old value stays until a restart. ``features.cdi`` and the
``--gpus`` hook lookup only happen at start-up.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from nvdocker_setup.core.jsondoc import member_object

APPLY_MODES = ("auto", "reload", "restart", "none")
RELOADABLE_KEYS = frozenset({"runtimes", "default-runtime"})


def changed_keys(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """Top-level keys whose value differs (``features`` is reported per flag, ``features.cdi``)."""
    changed: List[str] = []
    for key in list(before) + [k for k in after if k not in before]:
        if before.get(key, _MISSING) == after.get(key, _MISSING):
            continue
        if key == "features" and isinstance(before.get(key, {}), dict) and isinstance(after.get(key, {}), dict):
            old, new = before.get(key, {}), after.get(key, {})
            changed.extend("features." + flag for flag in sorted(set(old) | set(new)) if old.get(flag, _MISSING) != new.get(flag, _MISSING))
        else:
            changed.append(key)
    return changed


_MISSING = object()


def choose_method(
    requested: str, before: Dict[str, Any], after: Dict[str, Any], hook_appeared: bool = False
) -> Tuple[str, str]:
    """(method, reason): how to make dockerd take the change. ``none`` when nothing changed."""
    if requested not in APPLY_MODES:
        raise ValueError("unknown apply mode {!r}".format(requested))
    changed = changed_keys(before, after)
    if requested == "none":
        return "none", "--apply none: dockerd reads the file at its next start"
    if requested in ("reload", "restart"):
        return requested, "--apply {}".format(requested)
    if hook_appeared:
        return "restart", "the --gpus hook appeared after dockerd started (dockerd looks it up only at start)"
    if not changed:
        return "none", "dockerd's configuration is unchanged"
    startup_only = [key for key in changed if key not in RELOADABLE_KEYS]
    if startup_only:
        return "restart", "{} only take{} effect at start-up".format(", ".join(startup_only), "s" if len(startup_only) == 1 else "")
    removed = [key for key in RELOADABLE_KEYS if key in before and key not in after]
    if removed:
        return "restart", "a reload does not forget the removed {}".format(", ".join(sorted(removed)))
    return "reload", "{} can be reloaded without stopping containers".format(", ".join(changed))


@dataclass(frozen=True)
class Expectation:
    """What ``GET /info`` must show once dockerd runs the new file."""

    runtime_name: str
    runtime_path: Optional[str]  # None: the runtime must not be registered
    default_runtime: str

    @classmethod
    def from_config(cls, value: Dict[str, Any], runtime_name: str) -> "Expectation":
        runtimes = member_object(value, "runtimes")
        entry = runtimes.get(runtime_name)
        path = entry.get("path") if isinstance(entry, dict) else None
        default = value.get("default-runtime")
        return cls(runtime_name, path, default if isinstance(default, str) and default else "runc")

    def mismatches(self, info: Dict[str, Any]) -> List[str]:
        problems = []
        runtimes = info.get("Runtimes") or {}
        registered = runtimes.get(self.runtime_name)
        if self.runtime_path is None:
            if registered is not None:
                problems.append("runtime {!r} is still registered".format(self.runtime_name))
        elif registered is None:
            problems.append("runtime {!r} is not registered".format(self.runtime_name))
        elif registered.get("path") != self.runtime_path:
            problems.append(
                "runtime {!r} has path {!r}, expected {!r}".format(self.runtime_name, registered.get("path"), self.runtime_path)
            )
        if info.get("DefaultRuntime") != self.default_runtime:
            problems.append("DefaultRuntime is {!r}, expected {!r}".format(info.get("DefaultRuntime"), self.default_runtime))
        return problems


def healthy_problems(info: Dict[str, Any]) -> List[str]:
    """The minimum after a rollback: dockerd answers and its default runtime exists."""
    default = info.get("DefaultRuntime")
    if default and default not in (info.get("Runtimes") or {}):
        return ["DefaultRuntime {!r} is not a registered runtime".format(default)]
    return []


def containers_stopped_by_restart(info: Dict[str, Any]) -> int:
    """How many running containers a restart would stop (none with live-restore)."""
    if info.get("LiveRestoreEnabled"):
        return 0
    return int(info.get("ContainersRunning") or 0)
