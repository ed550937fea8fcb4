"""udev/71-nvdocker-dev-char.rules ships in nvdocker-setup (the package of the command it runs),
.deb and .rpm alike, under /usr/lib/udev/rules.d, byte for byte the file in the repository."""

import pathlib

from tests.packaging import support
from tests.packaging.support import run

REPO = pathlib.Path(__file__).resolve().parents[2]
RULE = "/usr/lib/udev/rules.d/71-nvdocker-dev-char.rules"


def test_the_deb_ships_the_udev_rule_in_nvdocker_setup(debs, tmp_path):
    assert RULE in support.deb_files(debs["nvdocker-setup"])
    for name in ("nvdocker-toolkit", "nvdocker2"):
        assert RULE not in support.deb_files(debs[name])
    run(["dpkg-deb", "-x", debs["nvdocker-setup"], str(tmp_path)])
    assert (tmp_path / RULE.lstrip("/")).read_bytes() == (REPO / "udev/71-nvdocker-dev-char.rules").read_bytes()


def test_the_rpm_ships_the_udev_rule_in_nvdocker_setup(rpms):
    def files(name):
        return run(["rpm", "-qpl", rpms[name]], env=support.system_env()).stdout.split()

    assert RULE in files("nvdocker-setup")
    assert RULE not in files("nvdocker-toolkit") and RULE not in files("nvdocker2")
