"""Unified diffs of daemon.json edits, for --dry-run and --json output."""

import difflib


def unified_diff(before: str, after: str, path: str) -> str:
    """A unified diff from ``before`` to ``after``; empty when they are equal."""
    if before == after:
        return ""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile="{} (current)".format(path),
        tofile="{} (new)".format(path),
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)
