"""Golden screens of ``doctor --engine containerd`` on the simulated host (see test_screens.py for
how they are kept and regenerated): a healthy containerd and a few broken ones."""

import pytest

from nvdocker_setup.doctor.checks import run_checks
from nvdocker_setup.engines.containerd import cri
from tests.doctor.ctdhost import config_text, ctd_facts, live_status
from tests.doctor.test_screens import _assert_well_formed, _compare, _normalised, screen

SCENARIOS = {
    # name: (config.toml, containerd version, CRI Status answer, verdict)
    "containerd-ready": (config_text(systemd=False), (1, 7, 24), live_status(), "ready"),
    "containerd-not-loaded": (config_text(systemd=False), (1, 7, 24), live_status(runtimes={}), "blocked"),
    "containerd-cri-disabled": (config_text(systemd=False, ours=False, extra='disabled_plugins = ["cri"]\n'),
                                (1, 6, 20), cri.CriUnavailable(
                                    "containerd on /run/containerd/containerd.sock does not serve the CRI API "
                                    "(/runtime.v1.RuntimeService/Status unimplemented)",
                                    hint="is the CRI plugin disabled? see `ctr plugins ls` and `disabled_plugins`"),
                                "blocked"),
    "containerd-v1-on-2": (config_text(version=1, systemd=False), (2, 1, 9), live_status(runtimes={}), "blocked"),
}


@pytest.mark.parametrize("kind", ["80", "120", "plain"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_containerd_screen(host, name, kind):
    text_config, version, status, expected = SCENARIOS[name]
    report = _normalised(run_checks(ctd_facts(host, text_config, version=version, status=status)), host)
    assert report.verdict().status == expected
    text = screen(report, kind)
    _assert_well_formed(text, None if kind == "plain" else int(kind))
    assert "[engine config]" not in text and "docker daemon" not in text
    _compare("{}.{}".format(name, kind), text)
