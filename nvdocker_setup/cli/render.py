"""Text output of `doctor` and `backups list`: a folded layout for a terminal, plain lines otherwise.

On a terminal (rich's ``Console.is_terminal``: a tty, or FORCE_COLOR / TTY_COMPATIBLE=1) every
line is laid out for ``console.width``: long words and paths are folded onto the next line (rich's
``overflow="fold"``), never cut with an ellipsis, and no line is padded with trailing spaces.
Anywhere else (a pipe, a file, a CI log) the output is plain lines for grep: one per check or
backup, no wrapping, no padding at the end of a line, fix lines indented under their check.
"""

import re
from typing import Any, List, Optional, Sequence

from nvdocker_setup.doctor.checks import FAIL, GROUPS, SKIP, WARN, CheckResult, DoctorReport

#: Terminal status labels and their styles.
STATUS_LABELS = {"ok": ("✓ ok", "green"), "warn": ("! warn", "yellow"), "fail": ("✗ fail", "bold red"),
                 "skip": ("- skip", "dim")}
STATUS_WIDTH = 6
#: How the verdict names each layer: "blocked at the driver".
LAYER_PHRASES = {
    "driver": "the driver",
    "runtime-binaries": "the runtime binaries",
    "docker-config": "the engine config",
    "docker-daemon": "the docker daemon",
    "containerd-config": "the containerd config",
    "containerd-daemon": "the containerd daemon",
    "host": "the host",
    "cdi": "CDI",
    "containers": "the container test",
}
#: Below this many columns for the result, the check id goes on the result's first line instead
#: of a column of its own.
MIN_RESULT_COLUMN = 50


def _plural(count: int, word: str) -> str:
    return "{} {}{}".format(count, word, "" if count == 1 else "s")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- doctor ---------------------------------------------------------------------------------------


def verdict_parts(report: DoctorReport, ran_all: bool = True):
    """(prefix, phrase, style, rest) of the headline: "GPU containers:" "blocked at the driver" ..."""
    verdict = report.verdict()
    prefix = "GPU containers:"
    if not ran_all:
        prefix = "GPU containers ({} run):".format(_plural(len(report.results), "check"))
    if verdict.status == "blocked":
        phrase = "blocked at {}".format(LAYER_PHRASES.get(verdict.group or "", verdict.group or "?"))
        return prefix, phrase, "bold red", ": {}: {}".format(verdict.check, _one_line(verdict.detail or ""))
    if verdict.status == "warnings":
        return (prefix, "work, with " + _plural(verdict.warnings, "warning"), "bold yellow",
                " (first: {})".format(verdict.check))
    return prefix, "ready", "bold green", ""


def verdict_text(report: DoctorReport, ran_all: bool = True) -> str:
    prefix, phrase, _style, rest = verdict_parts(report, ran_all)
    return "{} {}{}".format(prefix, phrase, rest)


def summary_text(report: DoctorReport) -> str:
    counts = report.counts()
    failed = "{} failed".format(counts[FAIL])
    consequences = report.verdict().consequences
    if consequences:
        failed += " ({} {} from another)".format(consequences, "follows" if consequences == 1 else "follow")
    return "{} ok, {}, {}, {} skipped".format(counts["ok"], _plural(counts[WARN], "warning"), failed, counts[SKIP])


def _parts(report: DoctorReport, result: CheckResult):
    """(consequence marker or "", detail, fix or None) of one result, each on one line."""
    root = report.follows_from(result)
    detail = result.detail
    marker = ""
    if root is not None:
        marker = "(follows from {}: {})".format(GROUPS.get(root.group, root.group), root.id)
        if result.cause:
            detail = re.sub(r"\s*\(see {}\)".format(re.escape(result.cause)), "", detail)
    hint = result.hint if result.hint and result.status in (WARN, FAIL) else None
    return marker, _one_line(detail), _one_line(hint) if hint else None


def _sections(report: DoctorReport):
    for group, heading in GROUPS.items():
        rows = [result for result in report.results if result.group == group]
        if rows:
            yield heading, rows


def doctor_plain_lines(report: DoctorReport, ran_all: bool = True) -> List[str]:
    """The report for a pipe or a file: ``fail  id: detail`` and ``  fix: ...`` lines."""
    lines = [verdict_text(report, ran_all)]
    for heading, rows in _sections(report):
        lines.extend(["", "[{}]".format(heading)])
        for result in rows:
            marker, detail, hint = _parts(report, result)
            lines.append("{:<{}}{}: {}".format(result.status, STATUS_WIDTH, result.id,
                                                (marker + " " if marker else "") + detail))
            if hint:
                lines.append("  fix: " + hint)
    lines.extend(["", summary_text(report)])
    return lines


def _wrapped(console: Any, text: Any, width: int) -> List[Any]:
    """``text`` wrapped to ``width`` cells, words too long for a line folded (never an ellipsis)."""
    lines = text.wrap(console, max(width, 10), overflow="fold")
    result = []
    for line in lines:
        line.rstrip()
        result.append(line)
    return result


def doctor_terminal_lines(report: DoctorReport, console: Any, ran_all: bool = True) -> List[Any]:
    """The report laid out for a terminal of ``console.width`` columns, as rich Text lines."""
    from rich.text import Text

    width = console.width
    prefix, phrase, style, rest = verdict_parts(report, ran_all)
    headline = Text()
    headline.append(prefix + " ", style="bold")
    headline.append(phrase, style=style)
    headline.append(rest)
    lines: List[Any] = _wrapped(console, headline, width)
    id_width = max((len(result.id) for result in report.results), default=0)
    lead = 2 + STATUS_WIDTH + 2
    wide = width - (lead + id_width + 2) >= MIN_RESULT_COLUMN
    indent = lead + (id_width + 2 if wide else 0)
    for heading, rows in _sections(report):
        lines.append(Text(""))
        lines.append(Text(heading, style="bold underline"))
        for result in rows:
            marker, detail, hint = _parts(report, result)
            label, label_style = STATUS_LABELS[result.status]
            if marker:
                label_style = "dim"
            body = Text()
            if not wide:
                body.append(result.id, style="bold")
                body.append("  ")
            if marker:
                body.append(marker + " ", style="dim italic")
            body.append(detail, style="dim" if result.status == SKIP or marker else "")
            if hint:
                body.append("\n")
                body.append("fix: ", style="bold cyan")
                body.append(hint, style="cyan")
            first = Text("  ")
            first.append(label.ljust(STATUS_WIDTH), style=label_style)
            first.append("  ")
            if wide:
                first.append(result.id, style="bold")
                first.append(" " * (id_width + 2 - len(result.id)))
            for number, line in enumerate(_wrapped(console, body, width - indent)):
                row = first.copy() if number == 0 else Text(" " * indent)
                row.append_text(line)
                lines.append(row)
    lines.append(Text(""))
    lines.extend(_wrapped(console, Text(summary_text(report)), width))
    return lines


def print_doctor(report: DoctorReport, console: Any, ran_all: bool = True) -> None:
    """The report on ``console``: the terminal layout on a terminal, plain lines elsewhere."""
    if console.is_terminal:
        _print_lines(console, doctor_terminal_lines(report, console, ran_all))
    else:
        _print_plain(console, doctor_plain_lines(report, ran_all))


# -- backups list ---------------------------------------------------------------------------------


def _backup_facts(backup: Any) -> str:
    if not backup.existed:
        return "did not exist: restoring this removes the file"
    return "{} bytes, sha256 {}".format(backup.size, (backup.sha256 or "")[:12])


#: The header line of the plain (piped) listing; the fields are separated by two spaces.
BACKUPS_HEADER = "NAME  SOURCE  SIZE  SHA256  REASON"


def backups_plain_lines(backups: Sequence[Any]) -> List[str]:
    """A header (:data:`BACKUPS_HEADER`), then one line per backup, oldest first: ``name  source
    size|absent  sha256[:12]|-  reason`` (``--json`` for scripts that want no parsing)."""
    return [BACKUPS_HEADER] + ["{}  {}  {}  {}  {}".format(
        backup.name, backup.source, backup.size if backup.existed else "absent",
        (backup.sha256 or "-")[:12] if backup.existed else "-", _one_line(backup.reason)) for backup in backups]


def backups_terminal_lines(backups: Sequence[Any], console: Any, directory: Optional[str] = None) -> List[Any]:
    from rich.text import Text

    width = console.width
    lines: List[Any] = []
    if directory:
        lines.extend(_wrapped(console, Text("{} in {}, oldest first".format(_plural(len(backups), "backup"), directory),
                                            style="bold"), width))
    for backup in backups:
        head = Text()
        head.append(backup.name, style="bold")
        head.append("  " + _one_line(backup.reason))
        lines.extend(_wrapped(console, head, width))
        body = Text()
        body.append(backup.source)
        body.append("  ({})".format(_backup_facts(backup)), style="dim")
        for line in _wrapped(console, body, width - 4):
            row = Text("    ")
            row.append_text(line)
            lines.append(row)
    return lines


def print_backups(backups: Sequence[Any], console: Any, directory: Optional[str] = None) -> None:
    if console.is_terminal:
        _print_lines(console, backups_terminal_lines(backups, console, directory))
    else:
        _print_plain(console, backups_plain_lines(backups))


# -- output ---------------------------------------------------------------------------------------


def _print_lines(console: Any, lines: Sequence[Any]) -> None:
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _print_plain(console: Any, lines: Sequence[str]) -> None:
    from rich.text import Text

    for line in lines:
        console.print(Text(line), soft_wrap=True, highlight=False)
