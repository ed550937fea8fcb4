"""`backups list` as text (issue #13 item 1): paths are never chopped into pieces. On a terminal
each backup is a heading line and its file, folded to the width; piped, one plain line per backup.
Golden screens in tests/cli/screens/ (regenerate with NVDOCKER_UPDATE_SCREENS=1)."""

import io
import os
import re

import pytest

from nvdocker_setup.adapters.backups import Backup
from nvdocker_setup.cli import render

SCREENS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screens")
UPDATE = os.environ.get("NVDOCKER_UPDATE_SCREENS") == "1"
LONG = "/srv/cluster-configuration/nodes/gpu-node-0042/overrides/docker/daemon.json"


def _backup(name, source, reason, size=812, existed=True):
    return Backup(name=name, created="2026-11-28T13:30:00Z", source=source, existed=existed,
                  sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" if existed else None,
                  size=size if existed else None, mode=0o644, uid=0, gid=0, reason=reason,
                  file="/var/lib/nvdocker-setup/backups/" + name if existed else None)


BACKUPS = [
    _backup("20261128T133000.123456Z-0001", "/etc/docker/daemon.json", "install nvidia"),
    _backup("20261128T134512.000001Z-0002", "/etc/docker/daemon.json", "uninstall nvidia", size=1204),
    _backup("20261129T080000.500000Z-0003", LONG, "install nvdocker", existed=False),
    _backup("20261129T081500.000000Z-0004", "/etc/docker/daemon.json", "restore 20261128T133000.123456Z-0001"),
]


def _screen(kind):
    from rich.console import Console

    terminal = kind != "plain"
    console = Console(file=io.StringIO(), width=int(kind) if terminal else 80, force_terminal=terminal,
                      no_color=True, color_system=None, highlight=False)
    render.print_backups(BACKUPS, console, "/var/lib/nvdocker-setup/backups")
    return console.file.getvalue()


@pytest.mark.parametrize("kind", ["80", "60", "plain"])
def test_backups_screen(kind):
    text = _screen(kind)
    for line in text.splitlines():
        assert line == line.rstrip() and "…" not in line, repr(line)
        if kind != "plain":
            assert len(line) <= int(kind), repr(line)
    joined = "".join(line.strip() for line in text.splitlines())
    for backup in BACKUPS:
        assert backup.source in joined and backup.name in text
    if kind == "80":
        assert "\n    /etc/docker/daemon.json  (812 bytes, sha256 9f86d081884c)\n" in text
    path = os.path.join(SCREENS, "backups.{}.txt".format(kind))
    if UPDATE:
        os.makedirs(SCREENS, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(path, encoding="utf-8") as handle:
        assert text == handle.read(), "regenerate with NVDOCKER_UPDATE_SCREENS=1 if intended"


def test_plain_backups_are_one_line_each_with_the_path_whole():
    header, *lines = _screen("plain").splitlines()
    assert header == "NAME  SOURCE  SIZE  SHA256  REASON"
    assert len(lines) == len(BACKUPS)
    fields = [line.split("  ") for line in lines]
    assert [item[0] for item in fields] == [backup.name for backup in BACKUPS]
    assert [item[1] for item in fields] == [backup.source for backup in BACKUPS]
    assert fields[2][2:4] == ["absent", "-"] and fields[0][2:4] == ["812", "9f86d081884c"]
    assert fields[3][4] == "restore 20261128T133000.123456Z-0001"


def test_backups_list_through_the_cli(cli):
    cli.config.write_text('{"log-driver": "json-file"}\n')
    assert cli.install().exit_code == 0
    piped = cli("backups", "list", env={"COLUMNS": "80"})
    assert piped.exit_code == 0
    header, line = piped.stdout.splitlines()
    assert header.split("  ") == ["NAME", "SOURCE", "SIZE", "SHA256", "REASON"]
    assert re.match(r"^\d{8}T\d{6}\.\d{6}Z-\d{4}  " + re.escape(os.path.realpath(str(cli.config))) + r"  \d+  [0-9a-f]{12}  "
                    r"install nvidia$", line), line
    terminal = cli("backups", "list", env={"COLUMNS": "40", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"})
    text = re.sub(r"\x1b\[[0-9;]*m", "", terminal.stdout)
    assert all(len(line) <= 40 and line == line.rstrip() and "…" not in line for line in text.splitlines())
    assert os.path.realpath(str(cli.config)) in "".join(line.strip() for line in text.splitlines()[1:])
    empty = cli("backups", "list", "--state-dir", str(cli.state_dir) + "-none")
    assert empty.exit_code == 0 and empty.stdout.startswith("no backups in ")
