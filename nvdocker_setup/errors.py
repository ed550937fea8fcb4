"""One error hierarchy with stable ids, after pip's diagnostic errors.

Every expected failure is a subclass of :class:`NvdockerError` carrying a kebab-case ``reference``
(stable: scripts and docs may match on it), a one-line ``message``, optional ``details`` lines and a
``hint`` that says how to fix it. The CLI renders them in one place and maps them to
:class:`~nvdocker_setup.exit_status.ExitStatus`; nothing else prints tracebacks.
"""

from typing import Any, Dict, Iterable, List, Optional

from nvdocker_setup.exit_status import ExitStatus


class NvdockerError(Exception):
    """Base of every expected failure."""

    reference = "nvdocker-error"
    exit_status = ExitStatus.ERROR

    def __init__(
        self,
        message: str,
        *,
        hint: Optional[str] = None,
        details: Iterable[str] = (),
        reference: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: List[str] = list(details)
        if reference is not None:
            self.reference = reference

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.reference,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
            "exit_code": int(self.exit_status),
        }

    def __str__(self) -> str:
        return self.message


class UsageError(NvdockerError):
    """Options that cannot be combined, or a value that makes no sense."""

    reference = "usage"
    exit_status = ExitStatus.USAGE


class ConfigReadError(NvdockerError):
    """The existing daemon.json cannot be read or parsed. Nothing was written."""

    reference = "daemon-json-invalid"
    exit_status = ExitStatus.INVALID_CONFIG


class ValidationFailed(NvdockerError):
    """The candidate daemon.json would not be accepted by dockerd."""

    reference = "validation-failed"
    exit_status = ExitStatus.VALIDATION_FAILED


class WouldNotStart(ValidationFailed):
    """The running daemon could not start again on the new config file, or on the file a rollback would
    restore (a key it refuses, a setting also given as a flag): applying could take it down, so nothing
    was written and the daemon was not touched."""

    reference = "daemon-would-not-start"


class LockBusy(NvdockerError):
    """Another nvdocker-setup is editing the same configuration."""

    reference = "lock-busy"
    exit_status = ExitStatus.LOCK_BUSY


class TrustCheckFailed(NvdockerError):
    """The runtime binary is missing or could be replaced by a non-root user."""

    reference = "runtime-untrusted"
    exit_status = ExitStatus.TRUST_CHECK_FAILED


class Conflict(NvdockerError):
    """The change would overrule a decision the admin made; --force overrides."""

    reference = "conflict"
    exit_status = ExitStatus.CONFLICT


class ConcurrentModification(Conflict):
    """daemon.json changed between our read and our write; nothing was written."""

    reference = "concurrent-modification"


class WriteFailed(NvdockerError):
    """Writing daemon.json, a backup or the state file failed."""

    reference = "write-failed"
    exit_status = ExitStatus.WRITE_FAILED


class NotFound(NvdockerError):
    """A backup or recorded state that was asked for does not exist."""

    reference = "not-found"
    exit_status = ExitStatus.NOT_FOUND


class DaemonUnreachable(NvdockerError):
    """A running engine's API (dockerd's Engine API, containerd's CRI) did not answer in time."""

    reference = "daemon-unreachable"
