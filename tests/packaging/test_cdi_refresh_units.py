"""The CDI refresh units in the packages: nvdocker-setup ships nvdocker-cdi-refresh.{path,service}
(byte for byte systemd/), they pass `systemd-analyze verify` as installed from the .deb, dpkg's
maintainer scripts enable them (deb-systemd-helper) and forget them on purge, and the RPM's
scriptlets preset them on first installation and disable them on erase. The install/purge cycle
in a Debian chroot is in test_deb_install.py, the RPM one in test_rpm.py."""

import re

from tests.packaging import support
from tests.packaging.support import REPO, run
from tests.support import systemd_units

UNITS = ("nvdocker-cdi-refresh.path", "nvdocker-cdi-refresh.service")
DEB_UNIT_DIR = "/lib/systemd/system/"
RPM_UNIT_DIR = "/usr/lib/systemd/system/"
PRESET = "/usr/lib/systemd/system-preset/80-nvdocker-setup.preset"


def test_the_deb_ships_the_units_in_nvdocker_setup(debs, tmp_path):
    files = support.deb_files(debs["nvdocker-setup"])
    for unit in UNITS:
        assert DEB_UNIT_DIR + unit in files
        for other in ("nvdocker-toolkit", "nvdocker2"):
            assert DEB_UNIT_DIR + unit not in support.deb_files(debs[other])
    assert PRESET not in files, "Debian enables through deb-systemd-helper, not presets"
    root = support.extract_debs([debs["nvdocker-toolkit"], debs["nvdocker-setup"]], tmp_path / "root")
    for unit in UNITS:
        assert (root / DEB_UNIT_DIR.lstrip("/") / unit).read_bytes() == (REPO / "systemd" / unit).read_bytes()
    # verify, as installed: ExecStart's /usr/bin/nvdocker-setup is the packaged one; ExecCondition's
    # /bin/sh is every host's (the extracted tree holds only our packages)
    (root / "bin").mkdir(exist_ok=True)
    (root / "bin/sh").write_text("#!/bin/sh\n")
    (root / "bin/sh").chmod(0o755)
    done = systemd_units.verify(root, [DEB_UNIT_DIR.lstrip("/") + unit for unit in UNITS])
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout


def test_the_deb_maintainer_scripts_enable_the_units_and_purge_forgets_them(debs, tmp_path):
    control = tmp_path / "control"
    run(["dpkg-deb", "-e", debs["nvdocker-setup"], control])
    postinst, postrm = (control / "postinst").read_text(), (control / "postrm").read_text()
    for name in ("postinst", "postrm", "prerm"):
        if (control / name).exists():
            run(["sh", "-n", control / name])
    for unit in UNITS:
        assert re.search(r"^\s+deb-systemd-helper enable '{}'".format(re.escape(unit)), postinst, re.M), postinst
    assert "deb-systemd-helper purge 'nvdocker-cdi-refresh.path' 'nvdocker-cdi-refresh.service'" in postrm, postrm
    # started (so the spec is there right after installation) through deb-systemd-invoke, which asks policy-rc.d
    assert "deb-systemd-invoke $_dh_action 'nvdocker-cdi-refresh.path' 'nvdocker-cdi-refresh.service'" in postinst


def _rpm(rpm, *args):
    return run(["rpm", "-qp"] + list(args) + [rpm], env=support.system_env()).stdout


def test_the_rpm_ships_the_units_and_its_scriptlets_preset_them(rpms):
    files = _rpm(rpms["nvdocker-setup"], "-l").split()
    for unit in UNITS:
        assert RPM_UNIT_DIR + unit in files
        for other in ("nvdocker-toolkit", "nvdocker2"):
            assert RPM_UNIT_DIR + unit not in _rpm(rpms[other], "-l").split()
    assert PRESET in files
    assert "enable nvdocker-cdi-refresh.path" in (REPO / "systemd/80-nvdocker-setup.preset").read_text()
    sections = re.split(r"^(\w+) scriptlet \(using \S+\):$", _rpm(rpms["nvdocker-setup"], "--scripts"), flags=re.M)
    scripts = dict(zip(sections[1::2], sections[2::2]))
    units = " ".join(UNITS)
    # Fedora's %systemd_post/%systemd_preun (systemd-update-helper) or the spec's fallbacks (systemctl)
    assert re.search(r"(preset|install-system-units) " + re.escape(units), scripts["postinstall"]), scripts
    assert re.search(r"^if \[ \$1 -eq 1 \]", scripts["postinstall"], re.M), "preset on first installation only"
    assert re.search(r"(disable --now|remove-system-units) " + re.escape(units), scripts["preuninstall"]), scripts
    assert re.search(r"^if \[ \$1 -eq 0 \]", scripts["preuninstall"], re.M), "disabled on erase only, not on upgrade"
