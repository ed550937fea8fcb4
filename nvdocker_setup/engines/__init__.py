"""Container engines behind one interface (:mod:`nvdocker_setup.engines.base`): one package each.

An engine is imported only when asked for, so that a Docker host never loads tomlkit or grpc.
"""

import importlib
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:
    from nvdocker_setup.engines.base import Engine

#: --engine value -> "module:class". Adding an engine: its package, and one line here.
REGISTRY: Dict[str, str] = {
    "docker": "nvdocker_setup.engines.docker.engine:DockerEngine",
}

DEFAULT_ENGINE = "docker"
_loaded: Dict[str, "Engine"] = {}


def get(name: str = DEFAULT_ENGINE) -> "Engine":
    """The engine called ``name`` (KeyError for a name not in :data:`REGISTRY`)."""
    if name not in _loaded:
        module, _, cls = REGISTRY[name].partition(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]
