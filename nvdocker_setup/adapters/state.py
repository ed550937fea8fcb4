"""The install records, one per (daemon.json, runtime name), in ``<state-dir>/state.json``.

Uninstall reads them to undo exactly what install did. Written atomically, under the lock.
"""

import json
import os
from typing import Dict, Optional

from nvdocker_setup.adapters.files import read_snapshot, write_atomically
from nvdocker_setup.core.plan import InstallRecord
from nvdocker_setup.errors import NvdockerError

STATE_VERSION = 1


class StateStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._configs: Dict[str, Dict[str, dict]] = {}
        self._loaded = False

    def load(self) -> "StateStore":
        snapshot = read_snapshot(self.path)
        self._loaded = True
        if not snapshot.exists or not snapshot.data.strip():
            self._configs = {}
            return self
        try:
            data = json.loads(snapshot.data.decode("utf-8"))
            configs = data["configs"]
            if not isinstance(configs, dict):
                raise TypeError("configs is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise NvdockerError(
                "the state file {} is damaged ({})".format(self.path, exc),
                reference="state-damaged",
                hint="inspect it; moving it away makes nvdocker-setup forget what it installed",
            ) from None
        self._configs = configs
        return self

    def get(self, config_path: str, runtime_name: str) -> Optional[InstallRecord]:
        data = self._configs.get(config_path, {}).get(runtime_name)
        return InstallRecord.from_dict(data) if data else None

    def put(self, config_path: str, record: InstallRecord) -> None:
        self._configs.setdefault(config_path, {})[record.runtime_name] = record.to_dict()

    def remove(self, config_path: str, runtime_name: str) -> None:
        entries = self._configs.get(config_path, {})
        entries.pop(runtime_name, None)
        if not entries:
            self._configs.pop(config_path, None)

    def snapshot(self) -> Dict[str, Dict[str, dict]]:
        """A copy of every record, to put back with :meth:`restore` after a rollback."""
        return json.loads(json.dumps(self._configs))

    def restore(self, configs: Dict[str, Dict[str, dict]]) -> None:
        self._configs = json.loads(json.dumps(configs))

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        payload = json.dumps({"version": STATE_VERSION, "configs": self._configs}, indent=2, sort_keys=True) + "\n"
        write_atomically(read_snapshot(self.path), payload.encode("utf-8"))
