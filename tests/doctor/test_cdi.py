"""cdi checks: specs written by nvdocker_setup.cdi for the simulated driver, then broken."""

import json
import os

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.driver import discover
from tests.doctor.simhost import RUNTIME

SPEC = "/etc/cdi/nvdocker.yaml"


def _spec(host):
    return cdi_spec.generate(discover(host.root), None)


def _write(host, value, path=SPEC, as_json=False):
    host.write(path, cdi_spec.render(value, as_json=as_json).decode())


@pytest.fixture
def with_spec(host):
    value = _spec(host)
    _write(host, value)
    return value


def test_no_spec_means_cdi_is_not_in_use(host):
    for check_id in ("cdi-spec", "cdi-driver-version", "cdi-docker-support"):
        assert host.run(check_id).status == "skip"


def test_cdi_enabled_without_a_spec(host):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    result = host.run("cdi-spec")
    assert result.status == "warn" and "unresolvable CDI devices" in result.detail
    assert "nvdocker-setup cdi generate" in result.hint


def test_valid_spec(host, with_spec):
    result = host.run("cdi-spec")
    assert result.status == "ok", result
    assert "/etc/cdi/nvdocker.yaml (5 devices, cdiVersion {})".format(with_spec["cdiVersion"]) in result.detail


def test_spec_with_too_low_a_cdi_version(host, with_spec):
    with_spec["cdiVersion"] = "0.3.0"
    _write(host, with_spec)
    result = host.run("cdi-spec")
    assert result.status == "fail" and "cdiVersion 0.3.0 is too low" in result.detail


def test_spec_without_devices(host, with_spec):
    with_spec["devices"] = []
    _write(host, with_spec, path="/var/run/cdi/nvidia.json", as_json=True)
    host.remove(SPEC)
    result = host.run("cdi-spec")
    assert result.status == "fail" and "no devices" in result.detail


def test_unreadable_nvidia_spec(host):
    host.write("/etc/cdi/nvidia.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [\n")
    result = host.run("cdi-spec")
    assert result.status == "fail" and "/etc/cdi/nvidia.yaml" in result.detail


def test_two_specs_with_the_same_devices_in_one_directory(host, with_spec):
    _write(host, with_spec, path="/etc/cdi/nvidia.json", as_json=True)
    result = host.run("cdi-spec")
    assert result.status == "fail" and "conflicting device" in result.detail


def test_spec_matches_the_running_driver(host, with_spec):
    result = host.run("cdi-driver-version")
    assert result.status == "ok" and "550.54.14" in result.detail


def test_stale_spec_after_a_driver_upgrade(host, with_spec):
    with_spec["annotations"][cdi_spec.DRIVER_VERSION_ANNOTATION] = "535.104.05"
    _write(host, with_spec)
    result = host.run("cdi-driver-version")
    assert result.status == "fail" and "was made for driver 535.104.05" in result.detail
    assert "nvdocker-setup cdi generate" in result.hint


def test_driver_version_of_a_foreign_spec_from_its_mounts(host, with_spec):
    del with_spec["annotations"]
    _write(host, with_spec)
    assert host.run("cdi-driver-version").status == "ok"
    for edits in [with_spec.get("containerEdits", {})] + [device["containerEdits"] for device in with_spec["devices"]]:
        edits.pop("mounts", None)
    _write(host, with_spec)
    result = host.run("cdi-driver-version")
    assert result.status == "warn" and "cannot tell which driver" in result.detail


def test_docker_without_cdi(host, with_spec, engine):
    fake = engine()
    fake.version = dict(fake.version, Version="20.10.24+dfsg1")
    result = host.run("cdi-docker-support")
    assert result.status == "warn" and "has no CDI" in result.detail


def test_docker_26_needs_features_cdi(host, with_spec, engine):
    engine()
    result = host.run("cdi-docker-support")
    assert result.status == "warn" and "features.cdi = true" in result.detail
    assert "nvdocker-setup install --cdi" in result.hint


def test_docker_26_with_cdi_loaded(host, with_spec, engine):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    engine(CDISpecDirs=["/etc/cdi", "/var/run/cdi"])
    result = host.run("cdi-docker-support")
    assert result.status == "ok", result


def test_docker_26_has_not_loaded_features_cdi(host, with_spec, engine):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    engine(CDISpecDirs=[])
    result = host.run("cdi-docker-support")
    assert result.status == "fail" and "has not loaded features.cdi" in result.detail and "restart" in result.hint


def test_spec_outside_dockerds_directories(host, with_spec, engine):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    engine(CDISpecDirs=["/var/run/cdi"])
    result = host.run("cdi-docker-support")
    assert result.status == "warn" and "dockerd reads /var/run/cdi" in result.detail


def test_docker_28_2_reads_cdi_by_default_unless_turned_off(host, with_spec, engine):
    fake = engine(CDISpecDirs=["/etc/cdi", "/var/run/cdi"])
    fake.version = dict(fake.version, Version="28.2.2")
    assert host.run("cdi-docker-support").status == "ok"
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": False}})
    result = host.run("cdi-docker-support")
    assert result.status == "warn" and "features.cdi is false" in result.detail


def test_spec_version_newer_than_docker_reads(host, with_spec, engine):
    with_spec["cdiVersion"] = "0.7.0"
    _write(host, with_spec)
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    fake = engine(CDISpecDirs=["/etc/cdi", "/var/run/cdi"])
    fake.version = dict(fake.version, Version="25.0.3")
    result = host.run("cdi-docker-support")
    assert result.status == "fail" and "Docker 25.0.3 reads up to 0.6.0" in result.detail


def test_spec_dirs_from_daemon_json(host, with_spec):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "cdi-spec-dirs": ["/srv/cdi"]})
    assert host.run("cdi-spec").status == "skip"
    os.makedirs(host.path("/srv/cdi"))
    os.rename(host.path(SPEC), host.path("/srv/cdi/nvdocker.yaml"))
    assert json.loads(open(host.path("/srv/cdi/nvdocker.yaml")).read().split("\n", 2)[2])["kind"] == "nvidia.com/gpu"
    assert host.run("cdi-spec").status == "ok"


def _spec_with_hook(host):
    from nvdocker_setup.driver.edits import HookCommand

    return cdi_spec.generate(discover(host.root), HookCommand("/usr/bin/nvdocker-runtime-hook", ["nvdocker-runtime-hook"], "/sbin/ldconfig"))


def test_hooks_of_a_generated_spec_carry_env(host):
    _write(host, _spec_with_hook(host))
    result = host.run("cdi-hooks-env")
    assert result.status == "ok", result
    assert "1 hook(s)" in result.detail


@pytest.mark.parametrize("generator, status", [("nvdocker-setup 0.1.0", "fail"), (None, "warn")])
def test_a_hook_without_env_is_flagged(host, generator, status):
    value = _spec_with_hook(host)
    for hook in value["containerEdits"]["hooks"]:
        del hook["env"]  # what specs from before the CVE-2025-23266-class fix look like
    if generator is None:
        del value["annotations"]
    _write(host, value)
    result = host.run("cdi-hooks-env")
    assert result.status == status, result
    assert "has no env" in result.detail and "LD_PRELOAD" in result.detail
    assert "nvdocker-setup cdi generate" in result.hint


def test_no_spec_skips_the_hook_check(host):
    assert host.run("cdi-hooks-env").status == "skip"
