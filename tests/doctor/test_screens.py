"""What an admin sees (issue #13 item 1): doctor's output on simulated hosts, kept as golden
screens in tests/doctor/screens/ and compared exactly, at 80 and 120 columns on a terminal and as
plain lines for a pipe. Regenerate them after an intended change with

    NVDOCKER_UPDATE_SCREENS=1 python -m pytest tests/doctor/test_screens.py

and read the diff (``git diff tests/doctor/screens``) before committing it.

The checks run for real on the simulated host; before rendering, the temporary paths in the
results are mapped to the paths a real host would show (so line folding does not depend on the
length of a temporary directory's name).
"""

import dataclasses
import io
import os
import re

import pytest

from nvdocker_setup.cli import render
from nvdocker_setup.doctor.checks import DoctorReport, run_checks
from nvdocker_setup.doctor.facts import DoctorOptions, Facts
from tests.doctor.simhost import UNIT

SCREENS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screens")
UPDATE = os.environ.get("NVDOCKER_UPDATE_SCREENS") == "1"
NVIDIA_STOCK = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}, "default-runtime": "nvidia"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _ready(host, engine):
    engine()


def _driver_missing(host, engine):
    engine()
    host.remove("/proc/driver/nvidia/version")


def _nvidia_stock(host, engine):
    engine(Runtimes={"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}}, DefaultRuntime="nvidia")
    host.write_config(NVIDIA_STOCK)


def _no_docker(host, engine):
    host.remove(UNIT)
    host.remove_dockerd()
    host.remove("/etc/docker/daemon.json")


SCENARIOS = {
    "ready": (_ready, "ready"),
    "driver-missing": (_driver_missing, "blocked"),
    "nvidia-stock": (_nvidia_stock, "blocked"),
    "no-docker": (_no_docker, "blocked"),
}


def _normalised(report: DoctorReport, host) -> DoctorReport:
    """The report with the simulated host's temporary paths shown as a real host's."""
    socket = host.docker_socket or host.socket
    pairs = [(socket, "/var/run/docker.sock"), (host.socket, "/var/run/docker.sock"), (host.root + "/", "/"),
             (host.root, "/"), (host.state_dir, "/var/lib/nvdocker-setup"), (host.base, "/sim")]

    def fix(text):
        if text is None:
            return None
        for old, new in pairs:
            text = text.replace(old, new)
        return text

    return DoctorReport([dataclasses.replace(result, detail=fix(result.detail), hint=fix(result.hint))
                         for result in report.results])


@pytest.fixture
def report_of(host, engine):
    def build(name):
        setup, expected = SCENARIOS[name]
        setup(host, engine)
        report = _normalised(run_checks(Facts(host.ctx(), DoctorOptions())), host)
        assert report.verdict().status == expected, render.doctor_plain_lines(report)
        return report

    return build


def _console(width, terminal=True, color=False):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=terminal, no_color=not color,
                   color_system="truecolor" if color else None, highlight=False, legacy_windows=False)


def screen(report, kind):
    """The text of one screen: ``80``/``120`` (terminal, no colour) or ``plain`` (not a terminal)."""
    console = _console(int(kind), terminal=True) if kind != "plain" else _console(80, terminal=False)
    render.print_doctor(report, console)
    return console.file.getvalue()


def _compare(name, text):
    path = os.path.join(SCREENS, name + ".txt")
    if UPDATE:
        os.makedirs(SCREENS, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    assert os.path.exists(path), "no golden screen {}: regenerate with NVDOCKER_UPDATE_SCREENS=1".format(path)
    with open(path, encoding="utf-8") as handle:
        expected = handle.read()
    assert text == expected, "screen {} changed; if intended, regenerate with NVDOCKER_UPDATE_SCREENS=1".format(name)


def _assert_well_formed(text, width=None):
    for line in text.splitlines():
        assert line == line.rstrip(), "trailing spaces: {!r}".format(line)
        assert not line.endswith("…") and "…" not in line, "truncated: {!r}".format(line)
        if width is not None:
            from rich.cells import cell_len

            assert cell_len(line) <= width, "wider than {}: {!r}".format(width, line)


@pytest.mark.parametrize("kind", ["80", "120", "plain"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_screen(report_of, name, kind):
    report = report_of(name)
    text = screen(report, kind)
    _assert_well_formed(text, None if kind == "plain" else int(kind))
    assert text.splitlines()[0].startswith("GPU containers: ")
    # every fix is there whole: the terminal layout folds, it never drops a word
    folded = " ".join(text.split())
    for result in report.results:
        if result.hint and result.status in ("warn", "fail"):
            if kind == "plain":
                assert "  fix: " + " ".join(result.hint.split()) + "\n" in text
            else:
                assert " ".join(result.hint.split()).replace(" ", "") in folded.replace(" ", "")
    _compare("{}.{}".format(name, kind), text)


def test_plain_lines_grep_well(report_of):
    report = report_of("nvidia-stock")
    lines = screen(report, "plain").splitlines()
    rows = [line for line in lines if re.match(r"^(ok|warn|fail|skip) +[a-z0-9-]+: ", line)]
    assert len(rows) == len(report.results)  # one line per check
    assert [line.split()[1].rstrip(":") for line in rows] == [result.id for result in report.results]
    assert all(re.match(r"^(ok    |warn  |fail  |skip  )", line) for line in rows)
    fixes = [line for line in lines if line.startswith("  fix: ")]
    assert len(fixes) == sum(1 for result in report.results if result.hint and result.status in ("warn", "fail"))
    assert lines[0] == ("GPU containers: blocked at the runtime binaries: runtime-binary: "
                        + " ".join(report.by_id("runtime-binary").detail.split()))
    assert "[engine config]" in lines
    assert "fail  config-default-runtime: (follows from runtime binaries: runtime-binary) default runtime" in "\n".join(lines)


def test_sections_are_headings_in_layer_order_not_a_column(report_of):
    text = screen(report_of("driver-missing"), "80")
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line in
                ("driver", "runtime binaries", "engine config", "docker daemon", "host", "CDI", "containers")]
    assert headings == ["driver", "runtime binaries", "engine config", "docker daemon", "host", "CDI", "containers"]
    rows = [line for line in text.splitlines() if re.match(r"^  [✓!✗-] ", line)]
    assert rows and all(line[2:10] in ("✓ ok    ", "! warn  ", "✗ fail  ", "- skip  ") for line in rows)
    assert "- skip  driver-gpus  (follows from driver: driver-kernel-module)" in text


def test_wide_terminal_puts_ids_in_a_column(report_of):
    text = screen(report_of("ready"), "120")
    starts = {line.index("driver-") for line in text.splitlines() if re.match(r"^  ✓ ok    driver-", line)}
    details = {len(line) - len(line[10:].split("  ", 1)[1].lstrip()) for line in text.splitlines()
               if re.match(r"^  ✓ ok    [a-z0-9-]+  ", line)}
    assert starts == {10} and len(details) == 1  # every result starts in the same column


def test_colour_only_when_asked(report_of):
    report = report_of("driver-missing")
    coloured = _console(80, color=True)
    render.print_doctor(report, coloured)
    text = coloured.file.getvalue()
    assert "\x1b[" in text and ANSI.sub("", text) == screen(report, "80")
    assert "\x1b[" not in screen(report, "plain")
    assert "\x1b[31" not in screen(report, "80").replace("\x1b[1;31", "")  # NO_COLOR: no red


def test_a_long_path_is_folded_not_cut():
    from nvdocker_setup.doctor.checks import CheckResult

    path = "/opt/" + "very-long-directory-name/" * 6 + "daemon.json"
    report = DoctorReport([CheckResult("config-parse", "docker-config", "t", "fail", "cannot read " + path,
                                       "fix " + path)])
    for width in (40, 60, 80):
        text = screen_at(report, width)
        _assert_well_formed(text, width)
        assert path in "".join(line.strip() for line in text.splitlines())


def screen_at(report, width):
    console = _console(width)
    render.print_doctor(report, console)
    return console.file.getvalue()
