"""The RPM's erase path is the Debian prerm's (issue #19, item 5): %preun runs the same
docker-config helper, byte for byte, with the same command, so the decision that
test_deb_remove_live_dockerd.py checks against a live dockerd (reload when that is enough,
restart when a reload cannot forget the removed default runtime; NVDOCKER2_RESTART=no warns
instead) is the one an `rpm -e` takes. Read from the built .rpm with `rpm -qp`."""

import hashlib
import re
from pathlib import Path

from tests.packaging.test_rpm import query, scriptlets

REPO = Path(__file__).resolve().parents[2]
HELPER = "/usr/libexec/nvdocker2/docker-config"


def test_preun_runs_the_debian_prerms_helper_and_documents_the_restart_opt_out(rpms):
    preun = scriptlets(rpms["nvdocker2"])["preuninstall"]
    assert re.match(r'if \[ "\$1" -eq 0 \]; then\n\s+{} --settings /etc/sysconfig/nvdocker2 unconfigure '
                    .format(re.escape(HELPER)), preun), preun

    # the packaged helper is the tree's debian/scripts/docker-config (the .deb's too), unchanged
    digests = dict(line.split(" ", 1) for line in
                   query(rpms["nvdocker2"], "--qf", "[%{FILENAMES} %{FILEDIGESTS}\n]").splitlines() if " " in line)
    algo = query(rpms["nvdocker2"], "--qf", "%{FILEDIGESTALGO}").strip()
    hasher = {"8": hashlib.sha256, "1": hashlib.md5, "10": hashlib.sha512}[algo]
    source = (REPO / "debian" / "scripts" / "docker-config").read_bytes()
    assert digests[HELPER].strip() == hasher(source).hexdigest()
    # ... which takes nvdocker-setup's own apply decision on removal, and has the opt-out
    assert '"uninstall", "--json"' in source.decode() and '"--apply", "auto", "--yes"' in source.decode()
    assert "choose_method" in source.decode()

    # the settings file the scriptlets read documents the opt-out and the restart command
    sysconfig = (REPO / "rpm" / "nvdocker2.sysconfig").read_text()
    assert "#NVDOCKER2_RESTART=yes" in sysconfig and "systemctl restart docker" in sysconfig
    assert "/etc/sysconfig/nvdocker2" in query(rpms["nvdocker2"], "--configfiles")
