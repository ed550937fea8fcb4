"""nvdocker-setup: wire a GPU OCI runtime into Docker without losing the admin's configuration."""

__version__ = "0.1.0"
