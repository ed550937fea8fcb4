"""Is a daemon.json candidate acceptable: our schema (core/schema.py), then dockerd's own
``dockerd --validate`` on the written temp file before it replaces the real one."""

from typing import Any, Dict, List, Tuple

from nvdocker_setup.adapters import dockerd
from nvdocker_setup.adapters.files import FileSnapshot
from nvdocker_setup.context import Context
from nvdocker_setup.errors import ValidationFailed


def _problem_key(problem) -> Tuple[str, str, str]:
    return (problem.path, problem.code, problem.message)


def check_candidate(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """Schema and runtime rules: refuse what our change introduces, warn about what was there."""
    from nvdocker_setup.core.schema import check_document

    existing = {_problem_key(p) for p in check_document(before)}
    introduced, warnings = [], []
    for problem in check_document(after):
        line = "{}: {}".format(problem.path, problem.message)
        if problem.severity == "error" and _problem_key(problem) not in existing:
            introduced.append(line)
        else:
            warnings.append(line + (" (already in the file)" if problem.severity == "error" else ""))
    if introduced:
        raise ValidationFailed(
            "the new daemon.json would not be accepted by dockerd; nothing was written",
            details=introduced,
            hint="fix the options given, or the existing file, and run again",
        )
    return warnings


def _same_complaints(first, second) -> bool:
    """dockerd lists offending keys in Go map order (random): compare the lists as sets."""

    def normalized(messages):
        out = set()
        for message in messages:
            head, sep, tail = message.rpartition(": ")
            out.add((head, frozenset(tail.split(", "))) if sep else (message, frozenset()))
        return out

    return normalized(first) == normalized(second)


def dockerd_validator(ctx: Context, original: FileSnapshot, warnings: List[str]):
    """A ``validate(temp_path)`` callback that asks ``dockerd --validate`` when it can."""

    def validate(temp_path: str) -> None:
        verdict = dockerd.validate_config(ctx, temp_path)
        if not verdict.ran:
            return
        if verdict.ok:
            return
        if original.exists:
            before = dockerd.validate_config(ctx, original.real_path)
            if before.ran and not before.ok and _same_complaints(before.messages, verdict.messages):
                warnings.append(
                    "dockerd --validate rejects the current {} too: {}".format(original.path, "; ".join(before.messages))
                )
                return
        raise ValidationFailed(
            "dockerd --validate rejected the new daemon.json; nothing was written",
            details=[line for line in verdict.output.splitlines() if line.strip()],
            reference="dockerd-validate-failed",
        )

    return validate


