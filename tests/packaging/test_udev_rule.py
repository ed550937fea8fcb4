"""The udev rules (udev/71-nvdocker-dev-char.rules, udev/71-nvdocker-cdi-refresh.rules) ship in
nvdocker-setup (the package of the command they run), .deb and .rpm alike, under
/usr/lib/udev/rules.d, byte for byte the files in the repository."""

import pathlib

import pytest

from tests.packaging import support
from tests.packaging.support import run

REPO = pathlib.Path(__file__).resolve().parents[2]
RULES = ("71-nvdocker-dev-char.rules", "71-nvdocker-cdi-refresh.rules")
RULES_DIR = "/usr/lib/udev/rules.d/"


@pytest.mark.parametrize("name", RULES)
def test_the_deb_ships_the_udev_rule_in_nvdocker_setup(debs, tmp_path, name):
    rule = RULES_DIR + name
    assert rule in support.deb_files(debs["nvdocker-setup"])
    for package in ("nvdocker-toolkit", "nvdocker2"):
        assert rule not in support.deb_files(debs[package])
    run(["dpkg-deb", "-x", debs["nvdocker-setup"], str(tmp_path)])
    assert (tmp_path / rule.lstrip("/")).read_bytes() == (REPO / "udev" / name).read_bytes()


def test_the_rpm_ships_the_udev_rules_in_nvdocker_setup(rpms):
    def files(name):
        return run(["rpm", "-qpl", rpms[name]], env=support.system_env()).stdout.split()

    for name in RULES:
        assert RULES_DIR + name in files("nvdocker-setup")
        assert RULES_DIR + name not in files("nvdocker-toolkit") and RULES_DIR + name not in files("nvdocker2")
