"""Names and paths that the CLI, the packages and the docs agree on (cheap to import)."""

#: Key under daemon.json's runtimes.
DEFAULT_RUNTIME_NAME = "nvidia"
#: Our OCI runtime shim's executable name.
RUNTIME_BINARY = "nvdocker-runtime"
