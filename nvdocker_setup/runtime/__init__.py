"""The OCI runtime shim (``nvdocker-runtime``): standard library only, nothing from the CLI side."""
