"""doctor's driver-dev-char-links names `nvdocker-setup system create-dev-char-symlinks`, and that
command, run on the same simulated host, turns the check ok."""

import os

from typer.testing import CliRunner

from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app


def _systemd_cgroups(host):
    host.write_config({"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
                       "exec-opts": ["native.cgroupdriver=systemd"]})


def _run(*args):
    output.reset_consoles()
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_the_hinted_command_fixes_the_dev_char_check(host):
    _systemd_cgroups(host)
    failed = host.run("driver-dev-char-links")
    assert failed.status == "fail", failed
    command = failed.hint.split("`")[1]
    assert command == "nvdocker-setup system create-dev-char-symlinks --driver-root " + host.root
    code, text = _run(*command.split()[1:])
    assert code == 0, text
    assert os.readlink(host.path("/dev/char/195:0")) == "../nvidia0"
    fixed = host.run("driver-dev-char-links")
    assert fixed.status == "ok", fixed
    assert "all 5 NVIDIA nodes" in fixed.detail
    # and the fix is idempotent: a second run leaves the check ok and changes nothing
    code, text = _run(*command.split()[1:])
    assert code == 0 and "nothing to do" in text
    assert host.run("driver-dev-char-links").status == "ok"


def test_the_hint_names_the_driver_root_only_when_the_nodes_are_under_it():
    from types import SimpleNamespace

    from nvdocker_setup.doctor.driver import _root_option

    assert _root_option(SimpleNamespace(root="/", dev_root="/dev")) == ""
    assert _root_option(SimpleNamespace(root="/srv/sim", dev_root="/srv/sim/dev")) == " --driver-root /srv/sim"
    # a driver container's root: its libraries, but the kernel's nodes on the host's /dev
    assert _root_option(SimpleNamespace(root="/run/nvidia/driver", dev_root="/dev")) == ""
