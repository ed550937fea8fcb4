"""`cdi generate` the way nvidia-ctk users drive it (issue #23, item 2): --mode, device names,
kind, --no-all-device, --device-id, --format, --dev-root, the same from the environment; the
YAML it writes; and `cdi transform root`."""

import json
import os
import stat
import subprocess

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cdi import transform, yamlio
from tests.cdi.test_cli_cdi import cli  # noqa: F401 - the fixture
from tests.support.driver_root import build_driver_root, missing_tools


def generated(cli, tmp_path, *args, name="spec.yaml"):  # noqa: F811
    out = tmp_path / name
    done = cli("cdi", "generate", "-o", str(out), *args)
    assert done.exit_code == 0, done.stderr
    return cdi_spec.load(str(out)), out


def names(spec):
    return [device["name"] for device in spec["devices"]]


# -- YAML ------------------------------------------------------------------------------------------------


def test_a_yaml_spec_is_block_yaml_that_reads_back_the_same(cli, tmp_path):  # noqa: F811
    spec, out = generated(cli, tmp_path)
    text = out.read_text()
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body[0] == 'cdiVersion: "0.5.0"' and body[1] == 'kind: "nvidia.com/gpu"' and "devices:" in body
    assert not text.lstrip("#").strip().startswith("{")
    assert yamlio.loads(text) == spec
    try:  # Debian's python3-yaml in the Debian pass; the real consumers read it in tests/newer_docker
        import yaml
    except ImportError:
        return
    assert yaml.safe_load(text) == spec


@pytest.mark.parametrize("value", [
    {"a": "x"}, {"a": []}, {"a": {}}, {"a": [1, -2, 3.5, True, None, "s"]}, {"a": [{"b": 1, "c": [{"d": "e"}]}]},
    {"a": [[1, 2], [], {}]}, {"weird key/with:colon": "v", "a b": {"c": "\n\t\"quoted\" ü"}}, {"a": ["- not a list", "#x"]},
    {"a": [{"k": [1]}, {"k": {}}]},
])
def test_yaml_round_trips_and_every_parser_agrees(value):
    text = yamlio.dumps(value)
    assert yamlio.loads(text) == value
    try:
        import yaml
    except ImportError:
        return
    assert yaml.safe_load(text) == value


@pytest.mark.parametrize("text", ["a:\n\tb: 1\n", "a: 1\na: 2\n", "a:\n", "a: b\n", "a: {b: 1}\n"])
def test_yaml_outside_the_subset_is_refused(text):
    with pytest.raises(ValueError):
        yamlio.loads(text)


def test_format_json_overrides_the_yaml_name_and_old_json_in_yaml_specs_still_read(cli, tmp_path):  # noqa: F811
    spec, out = generated(cli, tmp_path, "--format", "json")
    assert json.loads(out.read_text()) == spec
    (tmp_path / "old.yaml").write_text("# nvdocker-setup/driver-version: 550.54.14\n" + json.dumps(spec, indent=2))
    assert cdi_spec.load_document(str(tmp_path / "old.yaml")).header["nvdocker-setup/driver-version"] == "550.54.14"


# -- names, kind, devices ---------------------------------------------------------------------------------


def test_device_name_strategies(cli, tmp_path, driver_root):  # noqa: F811
    spec, _ = generated(cli, tmp_path, "--device-name-strategy", "type-index")
    assert names(spec) == ["gpu0", "gpu1", "all"]
    spec, _ = generated(cli, tmp_path, "--device-name-strategy", "uuid", "--device-name-strategy", "index", name="b.yaml")
    assert names(spec) == [driver_root.gpus[0].uuid, "0", driver_root.gpus[1].uuid, "1", "all"]
    assert cli("cdi", "generate", "-o", str(tmp_path / "c.yaml"), "--device-name-strategy", "serial").exit_code == 2


def test_vendor_class_no_all_device_and_device_id(cli, tmp_path, driver_root):  # noqa: F811
    spec, _ = generated(cli, tmp_path, "--vendor", "example.com", "--class", "accel", "--no-all-device", "--device-id", "1")
    assert spec["kind"] == "example.com/accel"
    assert names(spec) == ["1", driver_root.gpus[1].uuid]
    assert [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]] == ["/dev/nvidia1"]
    bad = cli("cdi", "generate", "-o", str(tmp_path / "x.yaml"), "--device-id", "7")
    assert bad.exit_code != 0 and "unknown GPU" in bad.stderr
    assert cli("cdi", "generate", "-o", str(tmp_path / "y.yaml"), "--vendor", "bad vendor!").exit_code == 2


def test_the_same_settings_from_the_environment(cli, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NVDOCKER_CDI_DEVICE_NAME_STRATEGY", "type-index")
    monkeypatch.setenv("NVDOCKER_CDI_NO_ALL_DEVICE", "true")
    monkeypatch.setenv("NVDOCKER_CDI_FORMAT", "json")
    out = tmp_path / "env.yaml"
    monkeypatch.setenv("NVDOCKER_CDI_OUTPUT", str(out))
    done = cli("cdi", "generate")
    assert done.exit_code == 0, done.stderr
    spec = json.loads(out.read_text())
    assert names(spec) == ["gpu0", "gpu1"]


# -- modes and the device root ----------------------------------------------------------------------------


@pytest.fixture
def own_root(tmp_path):
    if os.geteuid() != 0 or missing_tools():
        pytest.skip("the simulated root needs root, gcc and ldconfig")
    return build_driver_root(str(tmp_path / "own"), mig=True)


def test_management_mode_is_one_all_device_with_every_nvidia_node(cli, tmp_path, own_root):  # noqa: F811
    os.mknod(os.path.join(own_root.path, "dev/nvidia-fs0"), stat.S_IFCHR | 0o666, os.makedev(241, 0))
    spec, _ = generated(cli, tmp_path, "--mode", "management", "--driver-root", own_root.path)
    assert names(spec) == ["all"]
    nodes = {n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]}
    common = {n["path"] for n in spec["containerEdits"]["deviceNodes"]}
    assert {"/dev/nvidia0", "/dev/nvidia1"} <= nodes and "/dev/nvidiactl" in common and not nodes & common
    assert any(path.startswith("/dev/nvidia-caps/nvidia-cap") for path in nodes)  # MIG config/monitor caps
    assert any(path.startswith("/dev/nvidia-caps-imex-channels/channel") for path in nodes)
    assert "/dev/nvidia-fs0" not in nodes
    assert any(m["containerPath"].endswith("/nvidia-smi") for m in spec["containerEdits"]["mounts"])


@pytest.mark.parametrize("mode, node, kind", [("gds", "nvidia-fs0", "nvidia.com/gds"), ("gdrcopy", "gdrdrv", "nvidia.com/gdrcopy"),
                                              ("nvswitch", "nvidia-nvswitch0", "nvidia.com/nvswitch")])
def test_an_opt_in_devices_mode(cli, tmp_path, own_root, mode, node, kind):  # noqa: F811
    missing = cli("cdi", "generate", "-o", str(tmp_path / "none.yaml"), "--mode", mode, "--driver-root", own_root.path)
    assert missing.exit_code != 0 and "no such device node" in missing.stderr
    os.mknod(os.path.join(own_root.path, "dev", node), stat.S_IFCHR | 0o666, os.makedev(240, 0))
    spec, _ = generated(cli, tmp_path, "--mode", mode, "--driver-root", own_root.path)
    assert spec["kind"] == kind and names(spec) == ["all"]
    assert [n["path"] for n in spec["devices"][0]["containerEdits"]["deviceNodes"]] == ["/dev/" + node]


def test_imex_mode_writes_the_channels_spec(cli, tmp_path, own_root):  # noqa: F811
    spec, _ = generated(cli, tmp_path, "--mode", "imex", "--driver-root", own_root.path)
    assert spec["kind"] == "nvidia.com/imex-channel" and names(spec) == ["0", "1"]


def test_wsl_mode_on_a_native_driver_is_refused(cli, tmp_path):  # noqa: F811
    done = cli("cdi", "generate", "-o", str(tmp_path / "w.yaml"), "--mode", "wsl")
    assert done.exit_code != 0 and "not WSL2's" in done.stderr


def test_dev_root_takes_the_nodes_from_another_root(cli, tmp_path, own_root):  # noqa: F811
    """A driver container: the driver's files in one root, the device nodes in the host's /dev."""
    host = tmp_path / "host"
    host.mkdir()
    subprocess.run(["cp", "-a", os.path.join(own_root.path, "dev"), str(host / "dev")], check=True)  # the nodes as nodes
    spec, _ = generated(cli, tmp_path, "--dev-root", str(host), "--driver-root", own_root.path)
    node = spec["devices"][0]["containerEdits"]["deviceNodes"][0]
    assert node["path"] == "/dev/nvidia0" and node["hostPath"] == str(host / "dev/nvidia0")
    assert cli("cdi", "generate", "-o", str(tmp_path / "z.yaml"), "--dev-root", str(tmp_path / "nowhere"),
               "--driver-root", own_root.path).exit_code != 0


# -- cdi transform root -------------------------------------------------------------------------------------

NVIDIA_STYLE = {
    "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
    "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0"}]}}],
    "containerEdits": {
        "deviceNodes": [{"path": "/dev/nvidiactl", "hostPath": "/run/nvidia/driver/dev/nvidiactl"}],
        "mounts": [{"hostPath": "/run/nvidia/driver/usr/lib/libcuda.so.1", "containerPath": "/usr/lib/libcuda.so.1"},
                   {"hostPath": "/run/nvidia/driver-old/lib.so", "containerPath": "/lib.so"}],
        "hooks": [{"hookName": "createContainer", "path": "/run/nvidia/driver/usr/bin/nvidia-cdi-hook",
                   "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "/run/nvidia/driver/a::/b"]},
                  {"hookName": "prestart", "path": "/run/nvidia/driver/hook",
                   "args": ["hook", "--x=/run/nvidia/driver/y", "/run/nvidia/driver/a::/run/nvidia/driver/b"]},
                  {"hookName": "startContainer", "path": "/run/nvidia/driver/in-container"}],
    },
}


def test_transform_root_host_side_at_component_boundaries_only():
    moved = transform.transform_root(NVIDIA_STYLE, "/run/nvidia/driver", "/")
    edits = moved["containerEdits"]
    assert edits["deviceNodes"][0]["hostPath"] == "/dev/nvidiactl"
    assert moved["devices"][0]["containerEdits"]["deviceNodes"][0]["hostPath"] == "/dev/nvidia0"
    assert [m["hostPath"] for m in edits["mounts"]] == ["/usr/lib/libcuda.so.1", "/run/nvidia/driver-old/lib.so"]
    assert edits["hooks"][0]["path"] == "/usr/bin/nvidia-cdi-hook"
    assert edits["hooks"][0]["args"][-1] == "/run/nvidia/driver/a::/b"  # a createContainer hook's args are the container's
    assert edits["hooks"][1]["args"][1:] == ["--x=/run/nvidia/driver/y", "/a::/b"]
    assert edits["hooks"][2]["path"] == "/run/nvidia/driver/in-container"
    assert NVIDIA_STYLE["containerEdits"]["mounts"][0]["hostPath"].startswith("/run/nvidia/driver")  # a copy
    back = transform.transform_root(moved, "/", "/run/nvidia/driver")
    assert back["containerEdits"]["mounts"][0]["hostPath"] == "/run/nvidia/driver/usr/lib/libcuda.so.1"
    container = transform.transform_root(NVIDIA_STYLE, "/usr", "/opt", relative_to="container")
    assert container["containerEdits"]["mounts"][0]["containerPath"] == "/opt/lib/libcuda.so.1"


def test_cdi_transform_root_on_our_own_spec_keeps_its_format_and_header(cli, tmp_path, driver_root):  # noqa: F811
    spec, out = generated(cli, tmp_path)
    moved = tmp_path / "moved.yaml"
    done = cli("cdi", "transform", "root", "--from", driver_root.path, "--to", "/", "--input", str(out), "--output", str(moved))
    assert done.exit_code == 0, done.stderr
    document = cdi_spec.load_document(str(moved))
    assert document.header[cdi_spec.DRIVER_ROOT_ANNOTATION] == "/"
    hosts = [m["hostPath"] for m in document.spec["containerEdits"]["mounts"]]
    assert hosts and all(not host.startswith(driver_root.path) for host in hosts)
    assert any(host == "/usr/bin/nvidia-smi" for host in hosts)
    assert not moved.read_text().lstrip("#").strip().startswith("{")
    bad = cli("cdi", "transform", "root", "--from", "relative", "--to", "/", "--input", str(out))
    assert bad.exit_code == 2
