"""cdi checks: specs written by nvdocker_setup.cdi for the simulated driver, then broken."""

import os

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.driver import discover
from tests.doctor.simhost import RUNTIME

SPEC = "/etc/cdi/nvdocker.yaml"


def _spec(host):
    return cdi_spec.generate(discover(host.root), None)


def _meta(host, **changes):
    meta = cdi_spec.metadata(discover(host.root))
    meta.update({"nvdocker-setup/" + key.replace("_", "-"): value for key, value in changes.items()})
    return meta


def _write(host, value, path=SPEC, as_json=False, meta=None):
    """As `cdi generate` writes it: YAML with our metadata header (JSON has none)."""
    host.write(path, cdi_spec.render(value, as_json=as_json, meta=_meta(host) if meta is None else meta).decode())


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
    _write(host, with_spec, meta=_meta(host, driver_version="535.104.05"))  # the header wins over the mounts
    result = host.run("cdi-driver-version")
    assert result.status == "fail" and "was made for driver 535.104.05" in result.detail
    assert "nvdocker-setup cdi generate" in result.hint


def test_stale_spec_from_an_older_release_with_annotations(host, with_spec):
    with_spec["annotations"] = {cdi_spec.DRIVER_VERSION_ANNOTATION: "535.104.05"}
    with_spec["cdiVersion"] = "0.6.0"
    _write(host, with_spec, meta={})
    result = host.run("cdi-driver-version")
    assert result.status == "fail" and "was made for driver 535.104.05" in result.detail


def test_stale_json_spec_from_its_library_names(host, with_spec):
    host.remove(SPEC)
    text = cdi_spec.render(with_spec, as_json=True).decode().replace("550.54.14", "535.104.05")
    host.write("/etc/cdi/nvdocker.json", text)
    result = host.run("cdi-driver-version")
    assert result.status == "fail" and "/etc/cdi/nvdocker.json was made for driver 535.104.05" in result.detail


def test_driver_version_of_a_foreign_spec_from_its_mounts(host, with_spec):
    _write(host, with_spec, meta={})
    assert host.run("cdi-driver-version").status == "ok"
    for edits in [with_spec.get("containerEdits", {})] + [device["containerEdits"] for device in with_spec["devices"]]:
        edits.pop("mounts", None)
    _write(host, with_spec, meta={})
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
    assert cdi_spec.load(host.path("/srv/cdi/nvdocker.yaml"))["kind"] == "nvidia.com/gpu"
    assert host.run("cdi-spec").status == "ok"


def _spec_with_hook(host):
    from nvdocker_setup.driver.edits import HookCommand

    return cdi_spec.generate(discover(host.root), HookCommand("/usr/bin/nvdocker-runtime-hook",
            ["nvdocker-runtime-hook"], "/sbin/ldconfig"))


def test_hooks_of_a_generated_spec_carry_env(host):
    _write(host, _spec_with_hook(host))
    result = host.run("cdi-hooks-env")
    assert result.status == "ok", result
    assert "1 hook(s)" in result.detail


@pytest.mark.parametrize("where, status", [("header", "fail"), ("annotations", "fail"), (None, "warn")])
def test_a_hook_without_env_is_flagged(host, where, status):
    """Ours (generator in the YAML header, or in older releases' annotations): fail; foreign: warn."""
    value = _spec_with_hook(host)
    for hook in value["containerEdits"]["hooks"]:
        del hook["env"]  # what specs from before the CVE-2025-23266-class fix look like
    if where == "annotations":
        value["annotations"] = {cdi_spec.GENERATOR_ANNOTATION: "nvdocker-setup 0.1.0"}
        value["cdiVersion"] = "0.6.0"
    _write(host, value, meta=_meta(host) if where == "header" else {})
    result = host.run("cdi-hooks-env")
    assert result.status == status, result
    assert "has no env" in result.detail and "LD_PRELOAD" in result.detail
    assert "nvdocker-setup cdi generate" in result.hint


def test_no_spec_skips_the_hook_check(host):
    assert host.run("cdi-hooks-env").status == "skip"


def test_a_json_spec_of_ours_with_hooks_passes_the_hook_check(host):
    host.write("/etc/cdi/nvdocker.json", cdi_spec.render(_spec_with_hook(host), as_json=True).decode())
    assert host.run("cdi-hooks-env").status == "ok"


# -- which cdiVersion the installed consumers read -------------------------------------------------


def test_spec_declaring_less_than_it_uses_is_judged_by_what_it_uses(host, with_spec, engine):
    with_spec["annotations"] = {"a/b": "c"}  # needs 0.6.0, declared 0.5.0: Docker 25 still reads it
    _write(host, with_spec)
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "features": {"cdi": True}})
    fake = engine(CDISpecDirs=["/etc/cdi", "/var/run/cdi"])
    fake.version = dict(fake.version, Version="25.0.3")
    assert host.run("cdi-docker-support").status == "ok"
    with_spec["kind"] = "nvidia.com/gpu.x"  # a dot in the class needs 0.6.0 too; still within 25.0
    with_spec["cdiVersion"] = "0.5.0"
    with_spec["annotations"] = {}
    with_spec["containerEdits"]["additionalGids"] = [44]  # 0.7.0
    with_spec["kind"] = "nvidia.com/gpu"
    _write(host, with_spec)
    result = host.run("cdi-docker-support")
    assert result.status == "fail", result
    assert "declares cdiVersion 0.5.0 but uses fields of 0.7.0, but Docker 25.0.3 reads up to 0.6.0" in result.detail


def _podman(host, says="podman version 4.3.1", code=0):
    host.fake_tool("podman", "[ \"$1\" = --version ] || exit 64\necho '{}'\nexit {}\n".format(says, code))


@pytest.mark.parametrize("podman, declared, status", [
    ("podman version 4.3.1", "0.5.0", "ok"),
    ("podman version 4.3.1", "0.6.0", "warn"),
    ("podman version 4.9.3", "0.6.0", "warn"),  # between 4.3 and 5.4: taken to read what 4.3 reads
    ("podman version 5.4.2", "0.8.0", "ok"),
    ("podman version 5.4.2", "1.0.0", "warn"),
    ("podman.real version 5.8.0", "0.8.0", "ok"),
])
def test_podman_reads_the_spec(host, with_spec, podman, declared, status):
    with_spec["cdiVersion"] = declared
    _write(host, with_spec)
    _podman(host, podman)
    result = host.run("cdi-podman-support")
    assert result.status == status, result
    if status == "warn":
        assert "/etc/cdi/nvdocker.yaml declares cdiVersion {}".format(declared) in result.detail
        assert "unresolvable CDI devices" in result.detail and "nvdocker-setup cdi generate" in result.hint


def test_podman_43_refuses_annotations_whatever_the_declared_version(host, with_spec):
    with_spec["annotations"] = {"nvdocker-setup/driver-version": "550.54.14"}  # an older release's spec
    with_spec["cdiVersion"] = "0.6.0"
    _write(host, with_spec, meta={})
    _podman(host)
    result = host.run("cdi-podman-support")
    assert result.status == "warn" and "podman 4.3.1 reads up to 0.5.0" in result.detail


def test_podman_check_skips(host, with_spec):
    assert host.run("cdi-podman-support").status == "skip"  # not installed
    assert "not installed" in host.run("cdi-podman-support").detail
    _podman(host, "something else", code=3)
    result = host.run("cdi-podman-support")
    assert result.status == "skip" and "exit 3" in result.detail
    _podman(host, "podman version 4.2.0")
    assert host.run("cdi-podman-support").status == "skip"


def test_podman_reads_only_its_own_directories(host, with_spec):
    """dockerd's cdi-spec-dirs do not count for podman: it reads /etc/cdi and /var/run/cdi."""
    _podman(host)
    os.makedirs(host.path("/srv/cdi"))
    os.rename(host.path(SPEC), host.path("/srv/cdi/nvdocker.yaml"))
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME}}, "cdi-spec-dirs": ["/srv/cdi"]})
    assert host.run("cdi-spec").status == "ok"
    assert host.run("cdi-podman-support").status == "skip"
