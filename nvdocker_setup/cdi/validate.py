"""Check a CDI spec before it is written: the bundled JSON Schema, plus what a schema cannot say.

``problems(spec)`` is standard library only: cdiVersion against the features used (an engine
refuses a spec that declares too low a version), duplicate device names, permissions letters.
``schema_problems(spec)`` runs :file:`cdi.schema.json` through the jsonschema library, imported
only when called (the CLI does; the runtime never does).
"""

import json
import os
from typing import Any, Dict, List

from nvdocker_setup.cdi.spec import CDI_VERSIONS, minimum_version, version_key

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cdi.schema.json")


def load_schema() -> Dict[str, Any]:
    with open(SCHEMA_PATH, "r", encoding="utf-8") as handle:
        return json.load(handle)


def problems(spec: Dict[str, Any]) -> List[str]:
    """What the CDI library would refuse that the schema does not catch."""
    found: List[str] = []
    version = spec.get("cdiVersion")
    if isinstance(version, str) and version.lstrip("v") in CDI_VERSIONS:
        required = minimum_version(spec)
        if version_key(version) < version_key(required):
            found.append("cdiVersion {} is too low for the features used: needs {}".format(version, required))
    seen = set()
    for device in spec.get("devices") or ():
        name = device.get("name") if isinstance(device, dict) else None
        if name in seen:
            found.append("devices: device {!r} is defined twice".format(name))
        seen.add(name)
    edits = [spec.get("containerEdits") or {}] + [
        device.get("containerEdits") or {} for device in spec.get("devices") or () if isinstance(device, dict)
    ]
    for edit in edits:
        for node in edit.get("deviceNodes") or ():
            permissions = node.get("permissions", "")
            if len(set(permissions)) != len(permissions):
                found.append("deviceNodes {}: permissions {!r} repeat a letter".format(node.get("path"), permissions))
    return found


def schema_problems(spec: Dict[str, Any]) -> List[str]:
    """Every schema violation as ``path: message`` (jsonschema imported here, lazily)."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(load_schema())
    validator = validator_class(load_schema())
    return sorted(
        "{}: {}".format("/".join(str(part) for part in error.absolute_path) or "(top)", error.message)
        for error in validator.iter_errors(spec)
    )
