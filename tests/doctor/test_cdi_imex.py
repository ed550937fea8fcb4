"""doctor's cdi checks know the IMEX channels' spec `cdi generate` writes beside the GPUs' one
(``<stem>-imex-channel.<ext>``, kind nvidia.com/imex-channel; issue #11): validated and listed by
cdi-spec, checked for staleness (driver version, channels) by cdi-driver-version."""

import os

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.driver import discover
from tests.doctor.simhost import SimHost
from tests.support.driver_root import simulated_mig_root_fixture

SPEC = "/etc/cdi/nvdocker.yaml"
IMEX_SPEC = "/etc/cdi/nvdocker-imex-channel.yaml"


@pytest.fixture(scope="module")
def mig_template(tmp_path_factory):
    return simulated_mig_root_fixture(tmp_path_factory)


@pytest.fixture
def mig_host(tmp_path, mig_template):
    if os.geteuid() != 0:
        pytest.skip("simulated hosts need root (device nodes, root-owned binaries)")
    host = SimHost(str(tmp_path), mig_template)
    driver = discover(host.root)
    meta = cdi_spec.metadata(driver)
    host.write(SPEC, cdi_spec.render(cdi_spec.generate(driver, None), as_json=False, meta=meta).decode())
    host.imex = cdi_spec.generate_imex(driver)
    host.write(IMEX_SPEC, cdi_spec.render(host.imex, as_json=False, meta=meta).decode())
    return host


def test_the_imex_spec_is_listed_and_fresh(mig_host):
    result = mig_host.run("cdi-spec")
    assert result.status == "ok", result
    assert "IMEX channels: {} (2 channels, cdiVersion 0.5.0)".format(IMEX_SPEC) in result.detail
    assert IMEX_SPEC in result.data["specs"]
    fresh = mig_host.run("cdi-driver-version")
    assert fresh.status == "ok" and "the IMEX channels' spec lists the host's channels" in fresh.detail, fresh


def test_imex_channel_0_beside_gpu_0_is_no_conflict(mig_host):
    """Names are per kind: nvidia.com/imex-channel=0 and nvidia.com/gpu=0 are two devices."""
    assert "conflicting" not in mig_host.run("cdi-spec").detail


def test_an_invalid_imex_spec_fails(mig_host):
    broken = dict(mig_host.imex, devices=[{"name": "chan nel/0", "containerEdits": {}}])
    mig_host.write(IMEX_SPEC, cdi_spec.render(broken, as_json=True).decode())
    result = mig_host.run("cdi-spec")
    assert result.status == "fail" and IMEX_SPEC in result.detail, result


def test_an_imex_spec_from_before_a_driver_upgrade_is_stale(mig_host):
    mig_host.write(IMEX_SPEC, open(mig_host.path(IMEX_SPEC)).read().replace("550.54.14", "535.104.05"))
    result = mig_host.run("cdi-driver-version")
    assert result.status == "fail", result
    assert "{} (IMEX channels): it was made for driver 535.104.05".format(IMEX_SPEC) in result.detail
    assert "library mounts" not in result.detail and "nvdocker-setup cdi generate" in result.hint


def test_an_imex_spec_with_other_channels_than_the_host_is_stale(mig_host):
    driver = discover(mig_host.root)
    fewer = dict(mig_host.imex, devices=mig_host.imex["devices"][:1])
    mig_host.write(IMEX_SPEC, cdi_spec.render(fewer, as_json=True).decode())  # JSON: no driver recorded
    result = mig_host.run("cdi-driver-version")
    assert result.status == "fail" and "it lists channel(s) 0, the host has 0, 1" in result.detail, result
    assert driver.mig.imex_channels() == [0, 1]


def test_a_stale_gpu_spec_and_imex_spec_are_one_failure(mig_host):
    for path in (SPEC, IMEX_SPEC):
        mig_host.write(path, open(mig_host.path(path)).read().replace("550.54.14", "535.104.05"))
    result = mig_host.run("cdi-driver-version")
    assert result.status == "fail" and len(result.data["stale"]) == 2, result
