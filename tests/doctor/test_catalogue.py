"""Every known failure mode is detected by a check that exists, or documented as undetectable;
docs/doctor.md lists every failure mode and every check."""

import os
import re

from nvdocker_setup.doctor.catalogue import CATALOGUE, FAILURE_MODES, Detected, Undetectable
from nvdocker_setup.doctor.checks import all_checks

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "doctor.md")


def _docs() -> str:
    with open(DOCS, encoding="utf-8") as handle:
        return handle.read()


def test_the_catalogue_has_the_18_failure_modes_in_order():
    assert [mode.number for mode in FAILURE_MODES] == list(range(1, 19))
    assert len(CATALOGUE) == 18 and list(CATALOGUE) == [mode.id for mode in FAILURE_MODES]


def test_every_failure_mode_is_detected_by_real_checks_or_explained():
    ids = {item.id for item in all_checks()}
    for catalogue_id, how in CATALOGUE.items():
        assert isinstance(how, (Detected, Undetectable)), catalogue_id
        if isinstance(how, Detected):
            assert how.checks, catalogue_id
            assert set(how.checks) <= ids, (catalogue_id, set(how.checks) - ids)
        else:
            assert len(how.why) > 40, catalogue_id


def test_docs_list_every_failure_mode_with_its_checks_or_why_not():
    docs = _docs()
    rows = {}
    for line in docs.splitlines():
        match = re.match(r"^\| (\d+) \| `([a-z0-9-]+)` \|", line)
        if match:
            rows[match.group(2)] = (int(match.group(1)), line)
    assert set(rows) == set(CATALOGUE)
    for mode in FAILURE_MODES:
        number, line = rows[mode.id]
        assert number == mode.number
        if isinstance(mode.how, Detected):
            for check_id in mode.how.checks:
                assert "`{}`".format(check_id) in line, (mode.id, check_id)
        else:
            assert "not detectable" in line, mode.id


def test_docs_describe_every_check():
    docs = _docs()
    for item in all_checks():
        assert "| `{}` |".format(item.id) in docs, item.id
