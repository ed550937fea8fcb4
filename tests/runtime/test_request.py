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
    spec = base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=1,vendor.com/net=eth0",
            "cdi.k8s.io/b": "nvidia.com/gpu=GPU-x", "other": "nvidia.com/gpu=0"})
    request = resolve(spec)
    assert request.devices == ["1", "GPU-x"] and request.sources == ["cdi"]
    both = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=0"], annotations={"cdi.k8s.io/a": "nvidia.com/gpu=all"}))
    assert both.devices == ["all"] and both.sources == ["env", "cdi"]
    with pytest.raises(GpuSetupError):
        resolve(base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=0:1"}))


# -- requests we cannot honour yet (issue #14, item 3) ------------------------------------------------------


@pytest.mark.parametrize("name", ["NVIDIA_IMEX_CHANNELS", "NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"])
@pytest.mark.parametrize(
    "gpus", [[], ["NVIDIA_VISIBLE_DEVICES=all"], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES=none"]],
    ids=["alone", "with-all", "with-void", "with-none"],
)
def test_unsupported_requests_fail_whatever_else_was_asked(name, gpus):
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec(gpus + [name + "=0,1"]))
    message = str(caught.value)
    assert message.startswith("{}='0,1' asks for ".format(name)) and "nvdocker-runtime does not support" in message
    assert "hint: unset {}".format(name) in message


def test_cdi_annotations_with_imex_fail_too():
    spec = base_spec(["NVIDIA_IMEX_CHANNELS=all"], annotations={"cdi.k8s.io/x": "nvidia.com/gpu=0"})
    with pytest.raises(GpuSetupError, match="IMEX channels"):
        resolve(spec)


@pytest.mark.parametrize("value", ["", " ", "void", "none", "VOID"])
def test_unsupported_variables_that_ask_for_nothing_are_no_request(value):
    assert resolve(base_spec(["NVIDIA_IMEX_CHANNELS=" + value, "NVIDIA_MIG_CONFIG_DEVICES=" + value])) is None
    wanted = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_MIG_MONITOR_DEVICES=" + value]))
    assert wanted is not None and wanted.devices == ["1"]


@pytest.mark.parametrize("name", ["NVIDIA_IMEX_CHANNELS", "NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"])
def test_unsupported_values_are_bounded_like_the_others(name):
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec([name + "=" + "7," * 20000]))
    assert str(caught.value).startswith("{} is 40000 characters long; at most 8192 are accepted".format(name))
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec([name + "=" + "x" * 8000]))
    assert len(str(caught.value)) < 600 and "(8000 characters)" in str(caught.value)
