"""What counts as a GPU request in an OCI spec."""

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime.request import parse_visible_devices, remove_nvidia_hooks, resolve
from tests.runtime.conftest import base_spec

DOCKER_GPUS_HOOK = {
    "path": "/usr/bin/nvidia-container-runtime-hook",
    "args": ["nvidia-container-runtime-hook", "prestart"],
    "env": ["PATH=/usr/bin"],
}
NETWORK_HOOK = {"path": "/proc/1/exe", "args": ["libnetwork-setkey", "-exec-root=/var/run/docker", "c1", "abc"]}


@pytest.mark.parametrize(
    "value, devices",
    [
        ("all", ["all"]),
        ("0,all", ["all"]),
        ("none", []),
        ("void", None),
        ("", None),
        (" , ", None),
        ("1", ["1"]),
        ("0, 1,0", ["0", "1"]),
        ("GPU-4a1c1b6e-3f1d,1", ["GPU-4a1c1b6e-3f1d", "1"]),
    ],
)
def test_visible_devices(value, devices):
    assert parse_visible_devices(value) == devices


@pytest.mark.parametrize(
    "value, fragment",
    [("0:1", "MIG"), ("MIG-1234", "MIG"), ("none,1", "cannot be combined"), ("gpu0", "cannot read"), ("0,void", "cannot be combined")],
)
def test_bad_visible_devices(value, fragment):
    with pytest.raises(GpuSetupError) as caught:
        parse_visible_devices(value)
    assert fragment in caught.value.message and value in caught.value.message


def test_no_request_at_all():
    assert resolve(base_spec()) is None
    assert resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_DRIVER_CAPABILITIES=all"])) is None
    assert resolve(base_spec(hooks={"prestart": [NETWORK_HOOK]})) is None
    assert resolve(base_spec(annotations={"cdi.k8s.io/x": "vendor.com/net=eth0"})) is None


def test_env_request_last_value_wins():
    request = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=void", "NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=utility"]))
    assert request.devices == ["1"] and request.sources == ["env"] and request.wants_driver
    assert request.env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"


def test_none_still_wants_the_driver():
    request = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=none"]))
    assert request.devices == [] and request.wants_driver and not request.all_devices


def test_docker_gpus_hook_is_found_by_path_or_argv0():
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=all"], hooks={"prestart": [NETWORK_HOOK, DOCKER_GPUS_HOOK]})
    request = resolve(spec)
    assert request.all_devices and request.hook_indexes == [1] and request.sources == ["env", "--gpus"]
    renamed = dict(DOCKER_GPUS_HOOK, path="/usr/local/bin/nvidia-container-toolkit")
    assert resolve(base_spec(hooks={"prestart": [renamed]})).hook_indexes == [0]


def test_gpus_hook_without_devices_only_removes_the_hook():
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=void"], hooks={"prestart": [NETWORK_HOOK, DOCKER_GPUS_HOOK]})
    request = resolve(spec)
    assert request.sources == ["--gpus"] and not request.wants_driver
    remove_nvidia_hooks(spec, request.hook_indexes)
    assert spec["hooks"]["prestart"] == [NETWORK_HOOK]
    only = base_spec(hooks={"prestart": [DOCKER_GPUS_HOOK], "poststop": [NETWORK_HOOK]})
    remove_nvidia_hooks(only, resolve(only).hook_indexes)
    assert only["hooks"] == {"poststop": [NETWORK_HOOK]}


def test_cdi_annotations():
    spec = base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=1,vendor.com/net=eth0", "cdi.k8s.io/b": "nvidia.com/gpu=GPU-x", "other": "nvidia.com/gpu=0"})
    request = resolve(spec)
    assert request.devices == ["1", "GPU-x"] and request.sources == ["cdi"]
    both = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=0"], annotations={"cdi.k8s.io/a": "nvidia.com/gpu=all"}))
    assert both.devices == ["all"] and both.sources == ["env", "cdi"]
    with pytest.raises(GpuSetupError):
        resolve(base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=0:1"}))
