"""Editing config.json: what gets added, what is left alone, atomic replacement; jsonio."""

import json
import os
import stat

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import ContainerEdits, DeviceNode, Hook, Mount
from nvdocker_setup.runtime import jsonio, spec
from tests.runtime.conftest import base_spec, write_bundle

EDITS = ContainerEdits(
    env=["NVIDIA_X=1", "PATH=/ignored"],
    device_nodes=[DeviceNode("/dev/nvidiactl", 195, 255, file_mode=0o666), DeviceNode("/dev/nvidia0", 195, 0, file_mode=0o666)],
    mounts=[Mount("/h/usr/lib/libcuda.so.550", "/usr/lib/libcuda.so.550"), Mount("/h/proc", "/proc")],
    hooks=[Hook("createContainer", "/usr/bin/hook", ["hook", "update-ldcache"])],
)


def test_apply_adds_devices_rules_mounts_hooks_and_env_without_overriding():
    value = base_spec()
    value["linux"]["devices"] = [{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]
    spec.apply_edits(value, EDITS)
    assert value["process"]["env"][0].startswith("PATH=/usr/local") and "NVIDIA_X=1" in value["process"]["env"]
    assert "PATH=/ignored" not in value["process"]["env"]
    assert [d["path"] for d in value["linux"]["devices"]] == ["/dev/nvidia0", "/dev/nvidiactl"]  # theirs kept
    rules = value["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1:] == [node.cgroup_rule() for node in EDITS.device_nodes]
    assert [m["destination"] for m in value["mounts"]] == ["/proc", "/usr/lib/libcuda.so.550"]
    assert value["mounts"][1] == {"destination": "/usr/lib/libcuda.so.550", "type": "bind", "source": "/h/usr/lib/libcuda.so.550",
                                  "options": ["ro", "nosuid", "nodev", "rbind", "rprivate"]}
    # a hook entry never inherits the container's environment (issue #9): it always carries its own
    assert value["hooks"]["createContainer"] == [
        {"path": "/usr/bin/hook", "args": ["hook", "update-ldcache"], "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}
    ]


def test_apply_refuses_a_malformed_spec():
    with pytest.raises(GpuSetupError):
        spec.apply_edits(base_spec(mounts={"not": "a list"}), EDITS)


def test_write_atomically_keeps_the_mode_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "config.json")
    with open(path, "w") as handle:
        handle.write("{}")
    os.chmod(path, 0o600)
    spec.write_atomically(path, b'{"a":1}')
    assert open(path, "rb").read() == b'{"a":1}' and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["config.json"]


def test_a_failed_write_leaves_the_original(tmp_path, monkeypatch):
    path = str(tmp_path / "config.json")
    with open(path, "wb") as handle:
        handle.write(b"original")

    def broken_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(GpuSetupError) as caught:
        spec.write_atomically(path, b"new")
    assert "No space left" in caught.value.message
    assert open(path, "rb").read() == b"original" and os.listdir(str(tmp_path)) == ["config.json"]


def test_read_spec_errors_name_the_file(tmp_path):
    with pytest.raises(GpuSetupError) as caught:
        spec.read_spec(str(tmp_path / "config.json"))
    assert "config.json" in caught.value.message
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(GpuSetupError) as caught:
        spec.read_spec(str(tmp_path / "config.json"))
    assert "not valid JSON" in caught.value.message
    data = write_bundle(tmp_path / "b", base_spec())
    assert spec.read_spec(str(tmp_path / "b" / "config.json"))[0] == data


def test_rootfs_of():
    assert spec.rootfs_of("/run/b", {"root": {"path": "rootfs"}}) == "/run/b/rootfs"
    assert spec.rootfs_of("/run/b", {"root": {"path": "/var/lib/x/merged"}}) == "/var/lib/x/merged"
    assert spec.rootfs_of("/run/b", {}) is None


SAMPLES = [
    '{"a": [1, 2.5, -3e10, true, false, null, "\\u00e9t\\u00e9\\n\\"q\\""], "b": {}, "c": "\\ud83d\\ude00"}',
    " [ ] ",
    '"text"',
    "12",
    '{"x": NaN, "y": -Infinity, "z": Infinity}',
    json.dumps(base_spec(["NVIDIA_VISIBLE_DEVICES=all"]), indent=4),
]


@pytest.mark.parametrize("text", SAMPLES)
def test_jsonio_matches_json(text):
    assert repr(jsonio.loads(text)) == repr(json.loads(text))
    assert repr(jsonio.loads(text.encode())) == repr(json.loads(text))
    value = json.loads(text)
    assert jsonio.dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("text", ["", "{", "{} x", "[1,]", "\ufeff{}", '{"a" 1}'])
def test_jsonio_errors_are_jsons(text):
    with pytest.raises(ValueError) as ours:
        jsonio.loads(text)
    with pytest.raises(ValueError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_jsonio_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        jsonio.dumps({"a": object()})
