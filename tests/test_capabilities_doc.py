"""docs/capabilities.md names a test for every capability it describes: each must exist, and every
capability the runtime knows has a row."""

import ast
import os
import re

from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "capabilities.md")
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows():
    with open(DOC, encoding="utf-8") as handle:
        return {match.group(1): line for line in handle for match in [re.match(r"\| `(\w+)` \|", line)] if match}


def test_every_capability_has_a_row_naming_a_test():
    rows = _rows()
    assert set(ALL_CAPABILITIES) | {"none"} <= set(rows), sorted(set(ALL_CAPABILITIES) - set(rows))
    for name, row in rows.items():
        assert REFERENCE.search(row), name


def test_every_named_test_exists():
    missing = []
    for row in _rows().values():
        for path, name in REFERENCE.findall(row):
            full = os.path.join(ROOT, path)
            names = set()
            if os.path.exists(full):
                with open(full, encoding="utf-8") as handle:
                    names = {n.name for n in ast.walk(ast.parse(handle.read())) if isinstance(n, ast.FunctionDef)}
            if name not in names:
                missing.append("{}::{}".format(path, name))
    assert missing == []
