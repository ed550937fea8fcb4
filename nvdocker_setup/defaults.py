"""Names and paths that the CLI, the packages and the docs agree on (cheap to import)."""

#: Key under daemon.json's runtimes.
DEFAULT_RUNTIME_NAME = "nvidia"
#: Our OCI runtime shim's executable name.
RUNTIME_BINARY = "nvdocker-runtime"
#: The PATH systemd gives a service that sets none (and so what dockerd, containerd's shim and our
#: runtime search when their environment has no PATH). The C launcher's DEFAULT_PATH must match:
#: tests/test_probes.py compares them.
SYSTEMD_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
