"""The OCI hooks (``nvdocker-runtime-hook``): standard library only, nothing from the CLI side."""
