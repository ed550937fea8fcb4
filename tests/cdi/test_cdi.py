"""CDI spec generation: content, cdiVersion, schema, text forms, and one model with the runtime."""

import copy
import json
import os

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cdi import validate
from nvdocker_setup.driver import discover
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.edits import request_edits
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import ContainerEdits
from nvdocker_setup.runtime import args as runtime_args
from nvdocker_setup.runtime import spec as runtime_spec
from nvdocker_setup.runtime.config import RuntimeConfig
from nvdocker_setup.runtime.main import Log, prepare_bundle
from tests.runtime.conftest import base_spec, read_config, write_bundle

HOOK = RuntimeConfig().hook_command()


@pytest.fixture(scope="module")
def generated(driver_root):
    return cdi_spec.generate(discover(driver_root.path), HOOK)


def test_devices_by_index_uuid_and_all(generated, driver_root):
    gpu0, gpu1 = driver_root.gpus
    # 0.5.0: what Debian 12's podman 4.3 still reads (device names "0", device node hostPath)
    assert generated["kind"] == "nvidia.com/gpu" and generated["cdiVersion"] == "0.5.0"
    assert "annotations" not in generated  # they would need 0.6.0
    names = [device["name"] for device in generated["devices"]]
    assert names == ["0", gpu0.uuid, "1", gpu1.uuid, "all"]
    nodes = {d["name"]: [n["path"] for n in d["containerEdits"]["deviceNodes"]] for d in generated["devices"]}
    assert nodes["1"] == nodes[gpu1.uuid] == ["/dev/nvidia1"] and nodes["all"] == ["/dev/nvidia0", "/dev/nvidia1"]
    assert cdi_spec.recorded_driver_version(generated) == "550.54.14"  # from libcuda.so.550.54.14
    assert cdi_spec.qualified_names(generated)[-1] == "nvidia.com/gpu=all"


def test_common_edits_carry_every_capability_and_the_hook(generated, driver_root):
    common = generated["containerEdits"]
    assert common["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert [n["path"] for n in common["deviceNodes"]] == ["/dev/nvidiactl", "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    targets = {m["containerPath"] for m in common["mounts"]}
    assert set(driver_root.libraries.values()) <= targets and "/usr/bin/nvidia-smi" in targets
    for mount in common["mounts"]:
        assert mount["hostPath"] == driver_root.host(mount["containerPath"])
    (hook,) = common["hooks"]
    assert hook["hookName"] == "createContainer" and os.path.isabs(hook["path"])
    assert "update-ldcache" in hook["args"] and "--rootfs" not in hook["args"]  # CDI reads the state instead


def test_generated_spec_validates(generated):
    assert validate.schema_problems(generated) == []
    assert validate.problems(generated) == []


def minimal():
    return {"cdiVersion": "0.3.0", "kind": "vendor.com/dev", "devices": [{"name": "a", "containerEdits": {"env": ["A=1"]}}]}


@pytest.mark.parametrize(
    "change, version",
    [
        (lambda s: None, "0.3.0"),
        (lambda s: s["devices"][0]["containerEdits"].update(mounts=[{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]), "0.4.0"),
        (lambda s: s["devices"][0].update(name="0"), "0.5.0"),
        (lambda s: s.update(containerEdits={"deviceNodes": [{"path": "/dev/x", "hostPath": "/h/dev/x"}]}), "0.5.0"),
        (lambda s: s.update(annotations={"a/b": "c"}), "0.6.0"),
        (lambda s: s.update(kind="vendor.com/dev.sub"), "0.6.0"),
        (lambda s: s.update(containerEdits={"additionalGids": [5]}), "0.7.0"),
        (lambda s: s.update(containerEdits={"netDevices": [{"hostInterfaceName": "eth1", "name": "eth0"}]}), "1.1.0"),
    ],
)
def test_minimum_version_follows_the_features_used(change, version):
    spec = minimal()
    change(spec)
    assert cdi_spec.minimum_version(spec) == version
    spec["cdiVersion"] = version
    assert validate.schema_problems(spec) == [] and validate.problems(spec) == []


def test_validation_catches_what_engines_refuse(generated):
    low = copy.deepcopy(generated)
    low["cdiVersion"] = "0.4.0"
    assert any("too low" in p and "needs 0.5.0" in p for p in validate.problems(low))
    twice = copy.deepcopy(generated)
    twice["devices"].append(twice["devices"][0])
    assert any("defined twice" in p for p in validate.problems(twice))
    for mutate, where in [
        (lambda s: s.update(unknown=1), "(top)"),
        (lambda s: s.update(kind="nvidia"), "kind"),
        (lambda s: s.update(devices=[]), "devices"),
        (lambda s: s["devices"][0].update(name="-bad-"), "devices/0/name"),
        (lambda s: s["containerEdits"]["hooks"][0].update(path="relative"), "containerEdits/hooks/0/path"),
        (lambda s: s["containerEdits"]["hooks"][0].update(hookName="later"), "containerEdits/hooks/0/hookName"),
        (lambda s: s["containerEdits"]["deviceNodes"][0].update(permissions="rwx"), "containerEdits/deviceNodes/0/permissions"),
    ]:
        broken = copy.deepcopy(generated)
        mutate(broken)
        found = validate.schema_problems(broken)
        assert any(p.startswith(where) for p in found), (where, found)


def test_yaml_and_json_text_read_back(generated, driver_root):
    meta = cdi_spec.metadata(discover(driver_root.path))
    yaml_text = cdi_spec.render(generated, as_json=False, meta=meta)
    assert yaml_text.startswith(b"# CDI spec") and b"550.54.14" in yaml_text.splitlines()[0]
    assert cdi_spec.parse(yaml_text, "x.yaml") == generated
    assert cdi_spec.header_metadata(yaml_text) == meta
    assert cdi_spec.driver_version_of(generated, cdi_spec.header_metadata(yaml_text)) == "550.54.14"
    assert cdi_spec.is_ours(generated, cdi_spec.header_metadata(yaml_text)) and not cdi_spec.is_ours(generated)
    as_json = cdi_spec.render(generated, as_json=True, meta=meta)
    assert json.loads(as_json) == generated and cdi_spec.header_metadata(as_json) == {}
    try:
        import yaml
    except ImportError:
        return
    assert yaml.safe_load(yaml_text) == generated


def test_metadata_lines_survive_odd_values_and_only_the_header_counts():
    meta = {cdi_spec.DRIVER_VERSION_ANNOTATION: "550.54.14", cdi_spec.DRIVER_ROOT_ANNOTATION: "/run/driver root\nx",
            cdi_spec.GENERATOR_ANNOTATION: '"quoted" nvdocker-setup'}
    text = cdi_spec.render(minimal(), as_json=False, meta=meta)
    assert cdi_spec.header_metadata(text) == meta
    assert cdi_spec.parse(text, "x.yaml") == minimal()
    # a metadata-looking comment after the body starts is not ours
    later = cdi_spec.render(minimal(), as_json=False) + b"# nvdocker-setup/generator: nvdocker-setup 9\n"
    assert cdi_spec.header_metadata(later) == {}


def test_annotations_of_older_specs_still_count(generated):
    old = copy.deepcopy(generated)
    old["annotations"] = {cdi_spec.DRIVER_VERSION_ANNOTATION: "535.104.05", cdi_spec.GENERATOR_ANNOTATION: "nvdocker-setup 0.1.0"}
    assert cdi_spec.recorded_driver_version(old) == "535.104.05" and cdi_spec.is_ours(old)
    assert cdi_spec.minimum_version(old) == "0.6.0"


def test_pinned_cdi_version(driver_root):
    driver = discover(driver_root.path)
    for wanted in ("0.5.0", "0.6.0", "v0.8.0", "1.1.0"):
        spec = cdi_spec.generate(driver, HOOK, cdi_version=wanted)
        assert spec["cdiVersion"] == wanted.lstrip("v")
        assert validate.problems(spec) == [] and validate.schema_problems(spec) == []
    with pytest.raises(cdi_spec.VersionRefused) as low:
        cdi_spec.generate(driver, HOOK, cdi_version="0.4.0")
    assert "needs at least 0.5.0" in str(low.value) and "a device node with a hostPath needs 0.5.0" in str(low.value)
    with pytest.raises(cdi_spec.VersionRefused) as unknown:
        cdi_spec.generate(driver, HOOK, cdi_version="0.9.0")
    assert "unknown cdiVersion '0.9.0'" in str(unknown.value)


def test_version_rules_name_every_feature_once(generated):
    assert [rule.feature for rule in cdi_spec.required_features(generated)] == [
        "a mount with a type", "a device node with a hostPath", "a device name that does not start with a letter"]
    assert len({rule.feature for rule in cdi_spec.VERSION_RULES}) == len(cdi_spec.VERSION_RULES)
    assert all(rule.version in cdi_spec.CDI_VERSIONS for rule in cdi_spec.VERSION_RULES)
    # hook env is part of CDI since 0.3.0: a hook with env does not raise the version
    spec = minimal()
    spec["containerEdits"] = {"hooks": [{"hookName": "createContainer", "path": "/bin/true", "env": ["PATH=/bin"]}]}
    assert cdi_spec.minimum_version(spec) == "0.3.0"


def test_a_spec_without_gpus_is_refused(tmp_path, driver_root):
    driver = discover(driver_root.path)
    driver.gpus = []
    with pytest.raises(GpuSetupError) as caught:
        cdi_spec.generate(driver, HOOK)
    assert "no NVIDIA GPU" in caught.value.message


# -- one model: what CDI gives a container is what the runtime gives it -------------------------------

def without_cdi_env(edits: ContainerEdits) -> ContainerEdits:
    edits.env = [e for e in edits.env if e not in cdi_spec.CDI_ONLY_ENV]
    return edits


@pytest.mark.parametrize("name, selector", [("0", "0"), ("1", "1"), ("all", "all")])
def test_cdi_device_edits_equal_the_runtimes(generated, driver_root, name, selector):
    driver = discover(driver_root.path)
    gpus = driver.gpus if selector == "all" else [driver.find_gpu(selector)]
    runtime_edits = request_edits(driver, gpus, ALL_CAPABILITIES, HOOK)
    from_cdi = without_cdi_env(cdi_spec.device_edits(generated, name))
    assert sorted(from_cdi.device_nodes, key=lambda n: n.path) == sorted(runtime_edits.device_nodes, key=lambda n: n.path)
    assert from_cdi.mounts == runtime_edits.mounts and from_cdi.hooks == runtime_edits.hooks and from_cdi.env == runtime_edits.env


def strip_rootfs(hooks):
    stripped = copy.deepcopy(hooks)
    for hook in stripped.get("createContainer", []):
        args = hook["args"]
        if "--rootfs" in args:
            at = args.index("--rootfs")
            del args[at:at + 2]
    return stripped


def test_the_oci_spec_from_cdi_matches_the_runtimes_edit(tmp_path, generated, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=all"]))
    parsed = runtime_args.parse(["create", "--bundle", str(tmp_path / "b"), "c1"])
    prepare_bundle(parsed, RuntimeConfig(driver_root=driver_root.path), Log(None, False))
    by_runtime = read_config(tmp_path / "b")
    by_cdi = base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=all"])
    runtime_spec.apply_edits(by_cdi, without_cdi_env(cdi_spec.device_edits(generated, "1")))
    by_cdi = json.loads(runtime_spec.encode(by_cdi))

    def key(device):
        return device["path"]

    assert sorted(by_cdi["linux"]["devices"], key=key) == sorted(by_runtime["linux"]["devices"], key=key)
    rules = lambda spec: sorted(json.dumps(r, sort_keys=True) for r in spec["linux"]["resources"]["devices"])  # noqa: E731
    assert rules(by_cdi) == rules(by_runtime)
    assert by_cdi["mounts"] == by_runtime["mounts"]
    assert strip_rootfs(by_cdi["hooks"]) == strip_rootfs(by_runtime["hooks"])
    assert by_cdi["process"] == by_runtime["process"]
