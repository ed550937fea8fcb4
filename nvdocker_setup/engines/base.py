"""The one interface every container engine implements (after NVIDIA's ``engine.Interface``).

The transaction in :mod:`nvdocker_setup.operations` (lock, re-read under the lock, backup, atomic
write, state record, apply, verify, rollback) knows no engine: everything it needs to know about
one goes through an :class:`Engine`. Adding an engine means one new package under
``nvdocker_setup/engines/`` and one line in :data:`nvdocker_setup.engines.REGISTRY`.
"""

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Protocol

from nvdocker_setup.adapters.files import FileSnapshot
from nvdocker_setup.adapters.locate import ConfigLocation
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRecord, InstallRequest, Plan

if TYPE_CHECKING:
    from nvdocker_setup.apply import ApplyOptions, Decision


class Document(Protocol):
    """An engine's parsed config file, position-keeping: ``text`` is the file as it will be
    written, ``value`` plain data (dicts, lists, scalars) and ``encode()`` the bytes."""

    source: str

    @property
    def text(self) -> str: ...

    @property
    def value(self) -> Dict[str, Any]: ...

    def encode(self) -> bytes: ...


class Engine(Protocol):
    """What the generic transaction asks of an engine."""

    #: The --engine value and the ``engine`` of install records: "docker", "containerd".
    name: str
    #: How people call the config file and the daemon, in messages: "daemon.json", "dockerd".
    config_name: str
    daemon_name: str

    def running(self, ctx: Context) -> List[str]:
        """This engine's daemons running here, described ("dockerd pid 812"), for --engine auto."""
        ...

    def locate(self, ctx: Context, explicit: Optional[str]) -> ConfigLocation:
        """Which config file the running (or next) daemon reads, and the rule that chose it."""
        ...

    def load(self, ctx: Context, snapshot: FileSnapshot, notices: List[str]) -> Document:
        """The document in ``snapshot`` (a missing or empty file is the daemon's defaults)."""
        ...

    def parse(self, data: bytes, source: str) -> Document:
        """A document from bytes (a backup's, say): raises ConfigReadError."""
        ...

    def empty(self, ctx: Context, source: str) -> Document:
        """The document of a file that does not exist."""
        ...

    def plan_install(
        self, ctx: Context, document: Document, request: InstallRequest, record: Optional[InstallRecord]
    ) -> Plan:
        """The change to ``document`` (the config file); ``Plan.extra`` names other files the change writes
        (a drop-in, read under the lock by the engine): the transaction backs them up, records them, writes
        them before the config file and undoes them with it."""
        ...

    def plan_uninstall(
        self, document: Document, name: str, record: Optional[InstallRecord], force: bool, extra: bool = False
    ) -> Plan:
        """``extra``: ``document`` is one of the record's ``extra_files`` (a drop-in), not the config file."""
        ...

    def check_request(self, ctx: Context, request: InstallRequest) -> None:
        """Refuse a request this engine cannot carry out, whatever the file says (raises)."""
        ...

    def check_candidate(self, before: Document, after: Document) -> List[str]:
        """The schema: raise ValidationFailed for what the change introduces; warnings for the rest."""
        ...

    def validator(
        self, ctx: Context, original: FileSnapshot, warnings: List[str]
    ) -> Optional[Callable[[str], None]]:
        """``validate(temp_path)`` run on the written temp file before the rename: the engine's own
        parser (``dockerd --validate``, ``containerd config dump``); None when there is none."""
        ...

    def entry_label(self, name: str) -> str:
        """How messages name the entry: ``runtimes.nvidia``, ``handler nvidia``."""
        ...

    def entry(self, value: Dict[str, Any], name: str) -> Any:
        """The runtime entry called ``name`` in a document's value (None: there is none)."""
        ...

    def decide(
        self,
        ctx: Context,
        options: "ApplyOptions",
        location: ConfigLocation,
        runtime_name: str,
        before: Document,
        after: Document,
        check_hook: bool,
    ) -> "Decision":
        """How the running daemon takes the change (and how to verify it), before anything is
        written: everything that can refuse happens here."""
        ...

    def show(self, value: Dict[str, Any], name: str) -> Dict[str, Any]:
        """``default_runtime``, ``default_runtime_source`` and ``cdi`` of a document, for ``show``."""
        ...

    def merge_view(self, values: List[Dict[str, Any]]) -> Dict[str, Any]:
        """What the daemon reads from a config file's value and then its extra files' (drop-ins), in order."""
        ...

    def reload_hint(self) -> str:
        """How an admin makes the daemon read a file restored behind its back."""
        ...
