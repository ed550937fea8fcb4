"""The install records, one per (config file, runtime name), in ``<state-dir>/state.json``.

Uninstall reads them to undo exactly what install did, so they are trusted only as far as
:mod:`nvdocker_setup.adapters.statedir` allows (root-owned, not writable by others, never
through a symlink) and every value is checked like user input when read back. Written
atomically, under the lock.
"""

import json
import os
from typing import Dict, Iterable, Optional

from nvdocker_setup.adapters import statedir
from nvdocker_setup.core.plan import InstallRecord
from nvdocker_setup.errors import NvdockerError

STATE_VERSION = 1


def _refuse_constant(name: str) -> None:
    raise ValueError("{} is not JSON".format(name))


def _damaged(path: str, why: str) -> NvdockerError:
    return statedir.StateDamaged(
        "the state file {} is damaged ({})".format(path, why),
        reference="state-damaged",
        hint="inspect it; moving it away makes nvdocker-setup forget what it installed "
        "(backups stay available to `nvdocker-setup restore`)",
    )


class StateStore:
    def __init__(self, path: str, trusted_uids: Optional[Iterable[int]] = None) -> None:
        self.path = path
        self.trusted_uids = tuple(trusted_uids) if trusted_uids is not None else statedir.trusted_uids()
        self._configs: Dict[str, Dict[str, dict]] = {}
        self._loaded = False

    def load(self) -> "StateStore":
        data = statedir.read_private(self.path, self.trusted_uids)
        self._loaded = True
        if data is None or not data.strip():
            self._configs = {}
            return self
        try:
            parsed = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except RecursionError:
            raise _damaged(self.path, "nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise _damaged(self.path, "not JSON: {}".format(exc)) from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("configs"), dict):
            raise _damaged(self.path, "no 'configs' object")
        configs: Dict[str, Dict[str, dict]] = {}
        for config, records in parsed["configs"].items():
            if not os.path.isabs(config) or "\0" in config or not isinstance(records, dict):
                raise _damaged(self.path, "bad entry for {!r}".format(config[:200]))
            for name, record in records.items():
                try:
                    checked = InstallRecord.from_dict(record)
                except ValueError as exc:
                    raise _damaged(self.path, "record {!r} of {}: {}".format(name[:80], config[:200], exc)) from None
                if checked.runtime_name != name:
                    raise _damaged(self.path, "record {!r} names runtime {!r}".format(name[:80], checked.runtime_name))
            configs[config] = records
        self._configs = configs
        return self

    def get(self, config_path: str, runtime_name: str) -> Optional[InstallRecord]:
        data = self._configs.get(config_path, {}).get(runtime_name)
        return InstallRecord.from_dict(data) if data else None

    def records(self, config_path: str) -> Dict[str, InstallRecord]:
        """Every record of one config file, by runtime name."""
        return {name: InstallRecord.from_dict(data) for name, data in self._configs.get(config_path, {}).items()}

    def referenced_backups(self) -> set:
        """Backup names that records depend on: rotation must never delete them."""
        names = set()
        for records in self._configs.values():
            for data in records.values():
                if data.get("original_backup"):
                    names.add(data["original_backup"])
        return names

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
        statedir.check_directory(os.path.dirname(self.path), self.trusted_uids, create=True)
        payload = json.dumps({"version": STATE_VERSION, "configs": self._configs}, indent=2, sort_keys=True) + "\n"
        statedir.write_private(self.path, payload.encode("utf-8"))
