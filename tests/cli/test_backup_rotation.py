"""Backups that records depend on survive rotation; failed writes cost no backup slot; a file
install created is removed again (issue #9, item 7)."""

import json

from nvdocker_setup import operations
from nvdocker_setup.errors import WriteFailed

ORIGINAL = b'{"debug": false}\n'


def _names(cli):
    return [b["name"] for b in cli("backups", "list", "--json").json["backups"]]


def _churn(cli, rounds):
    """Changes that each take a backup without touching the install record's original backup."""
    for _ in range(rounds):
        assert cli.install("--cdi").exit_code == 0
        value = json.loads(cli.config.read_text())
        del value["features"]
        cli.config.write_text(json.dumps(value))


def test_the_original_backup_outlives_rotation(cli):
    cli.config.write_bytes(ORIGINAL)
    assert cli.install().exit_code == 0
    original = _names(cli)[0]
    _churn(cli, 14)  # 14 more backups of the same file: rotation keeps 10
    names = _names(cli)
    assert original in names
    assert len(names) == 11  # the ten newest plus the protected original
    assert cli.install("--cdi").exit_code == 0  # the file is ours again, exactly
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0
    assert cli.config.read_bytes() == ORIGINAL


def test_uninstall_removes_a_file_install_created_even_after_rotation(cli):
    assert cli.install().exit_code == 0
    _churn(cli, 12)
    assert cli.install("--cdi").exit_code == 0
    assert cli("uninstall").exit_code == 0
    assert not cli.config.exists()


def test_failed_writes_take_no_backup_slot(cli, monkeypatch):
    cli.config.write_bytes(ORIGINAL)
    assert cli.install().exit_code == 0
    before = _names(cli)

    def refuse(*_args, **_kwargs):
        raise WriteFailed("disk full (injected)")

    monkeypatch.setattr(operations, "write_atomically", refuse)
    for _ in range(12):
        outcome = cli.install("--cdi", "--json")
        assert outcome.exit_code == 8, outcome.stdout
    monkeypatch.undo()
    assert _names(cli) == before
    copies = sorted(p.name for p in (cli.state_dir / "backups").iterdir())
    assert copies == sorted([n + ".json" for n in before] + ["manifest.json"])
    record = cli("show", "--json").json["record"]
    assert record["cdi_changed"] is False  # the refused change left no trace in the record
    assert cli("uninstall").exit_code == 0
    assert cli.config.read_bytes() == ORIGINAL
