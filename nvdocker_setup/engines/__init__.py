"""Container engines behind one interface (:mod:`nvdocker_setup.engines.base`): one package each.

An engine is imported only when asked for, so that a Docker host never loads tomlkit or grpc.
"""

import importlib
from typing import TYPE_CHECKING, Dict, List, Tuple

from nvdocker_setup.errors import UsageError

if TYPE_CHECKING:
    from nvdocker_setup.context import Context
    from nvdocker_setup.engines.base import Engine

#: --engine value -> "module:class". Adding an engine: its package, and one line here.
REGISTRY: Dict[str, str] = {
    "docker": "nvdocker_setup.engines.docker.engine:DockerEngine",
    "containerd": "nvdocker_setup.engines.containerd.engine:ContainerdEngine",
}

DEFAULT_ENGINE = "docker"
_loaded: Dict[str, "Engine"] = {}


def get(name: str = DEFAULT_ENGINE) -> "Engine":
    """The engine called ``name`` (KeyError for a name not in :data:`REGISTRY`)."""
    if name not in _loaded:
        module, _, cls = REGISTRY[name].partition(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def resolve(ctx: "Context", name: str) -> "Engine":
    """``name``'s engine; ``auto``: the one engine whose daemon runs here (refusing none or several)."""
    if name != "auto":
        return get(name)
    running: List[Tuple[str, str]] = []
    for candidate in REGISTRY:
        running.extend((candidate, what) for what in get(candidate).running(ctx))
    names = sorted({engine for engine, _ in running})
    if len(names) == 1:
        return get(names[0])
    if not names:
        raise UsageError(
            "--engine auto: no container engine runs here ({} looked for)".format(", ".join(REGISTRY)),
            hint="name one: --engine docker or --engine containerd",
            reference="engine-not-found",
        )
    raise UsageError(
        "--engine auto: several engines run here: {}".format("; ".join("{} ({})".format(e, w) for e, w in running)),
        hint="name one: {}".format(" or ".join("--engine " + n for n in names)),
        reference="engine-ambiguous",
    )
