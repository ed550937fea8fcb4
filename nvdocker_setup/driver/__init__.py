"""NVIDIA driver discovery and the container edits it implies; shared by the runtime, the hooks,
``cdi generate`` and ``doctor``. Standard library only.

Public API::

    from nvdocker_setup.driver import discover, GpuSetupError
    driver = discover("/")              # Driver: .version, .gpus, .cuda_version, .libraries(caps) ...
    edits = request_edits(driver, driver.gpus, parse_capabilities("all"), hook)   # ContainerEdits

Names are loaded on first use (PEP 562), so importing one submodule does not import the rest.
"""

_EXPORTS = {
    "discover": "discovery",
    "Driver": "discovery",
    "Gpu": "discovery",
    "resolve_in_root": "discovery",
    "GpuSetupError": "errors",
    "ContainerEdits": "model",
    "DeviceNode": "model",
    "Mount": "model",
    "Hook": "model",
    "HookCommand": "edits",
    "common_edits": "edits",
    "gpu_edits": "edits",
    "request_edits": "edits",
    "parse_capabilities": "capabilities",
    "ALL_CAPABILITIES": "capabilities",
    "DEFAULT_CAPABILITIES": "capabilities",
    "cuda_version_for_driver": "requirements",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'nvdocker_setup.driver' has no attribute {!r}".format(name))
    import importlib

    return getattr(importlib.import_module("nvdocker_setup.driver." + module), name)
