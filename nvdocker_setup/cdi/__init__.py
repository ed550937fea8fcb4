"""CDI spec generation (``nvdocker-setup cdi generate``) from the shared driver model, its JSON
Schema (``cdi.schema.json``) and validation helpers."""

#: Where ``cdi generate`` writes by default (a static spec dir every CDI engine reads).
DEFAULT_OUTPUT = "/etc/cdi/nvdocker.yaml"
