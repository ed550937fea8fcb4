"""The collection's quality gates: ansible-lint (production profile) clean, and ansible-test sanity
clean with Debian 12's ansible-core 2.14 and the current one from PyPI (scripts/ansible-quality.sh;
the skipped rule and the ignored sanity check are explained in the collection's README)."""

import os
import subprocess

from tests.fleet import support


def test_ansible_lint_and_ansible_test_sanity_are_clean():
    support.need(os.geteuid() == 0, "needs root (the tools live under /var/cache/nvdocker-tests)")
    support.need(os.path.exists("/usr/bin/ansible-test"), "Debian 12's ansible package is not installed (make deps)")
    done = subprocess.run(["bash", str(support.REPO / "scripts" / "ansible-quality.sh")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=1800)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Profile 'production' was required, and it passed" in done.stdout
    assert "ansible-quality: ok" in done.stdout
