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
        ("0:1,MIG-5b3f8d02-6a1c,1", ["0:1", "MIG-5b3f8d02-6a1c", "1"]),
        ("nvidia.com/gpu=0:0", ["0:0"]),
    ],
)
def test_visible_devices(value, devices):
    assert parse_visible_devices(value) == devices


@pytest.mark.parametrize(
    "value, fragment",
    [("0:1:0", "cannot read"), ("MIG-GPU-x/1/0", "cannot read"), ("0:12345678", "cannot read"), (":1", "cannot read"),
     ("none,1", "cannot be combined"), ("gpu0", "cannot read"), ("0,void", "cannot be combined")],
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
    assert resolve(base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=0:1"})).devices == ["0:1"]
    with pytest.raises(GpuSetupError):
        resolve(base_spec(annotations={"cdi.k8s.io/a": "nvidia.com/gpu=0:1:0"}))


# -- IMEX channels and MIG access (issue #11, item 4) -------------------------------------------------


PRIVILEGED = {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}


@pytest.mark.parametrize(
    "gpus", [[], ["NVIDIA_VISIBLE_DEVICES=all"], ["NVIDIA_VISIBLE_DEVICES=void"], ["NVIDIA_VISIBLE_DEVICES=none"]],
    ids=["alone", "with-all", "with-void", "with-none"],
)
def test_imex_channels_are_a_request_alone_or_with_gpus(gpus):
    wanted = resolve(base_spec(gpus + ["NVIDIA_IMEX_CHANNELS=0, 1,0"]))
    assert wanted.imex_channels == ["0", "1"] and "imex" in wanted.sources
    assert wanted.wants_driver == (gpus not in ([], ["NVIDIA_VISIBLE_DEVICES=void"]))
    assert resolve(base_spec(["NVIDIA_IMEX_CHANNELS=1,all"])).imex_channels == ["all"]


@pytest.mark.parametrize("value", ["x", "0,gpu1", "-1", "12345678", "0:1"])
def test_bad_imex_channels_are_one_bounded_message(value):
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec(["NVIDIA_IMEX_CHANNELS=" + value]))
    assert "NVIDIA_IMEX_CHANNELS" in caught.value.message and len(str(caught.value)) < 600


def test_imex_follows_the_variable_policy_for_unprivileged_containers():
    notes = []
    assert resolve(base_spec(["NVIDIA_IMEX_CHANNELS=0"]), accept_envvar_unprivileged=False, notes=notes) is None
    assert any("NVIDIA_IMEX_CHANNELS ignored" in note for note in notes)
    spec = base_spec(["NVIDIA_IMEX_CHANNELS=0"])
    spec["process"]["capabilities"] = PRIVILEGED
    assert resolve(spec, accept_envvar_unprivileged=False).imex_channels == ["0"]


@pytest.mark.parametrize("name", ["NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"])
@pytest.mark.parametrize("gpus", [[], ["NVIDIA_VISIBLE_DEVICES=all"]], ids=["alone", "with-all"])
def test_mig_access_needs_a_privileged_container(name, gpus):
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec(gpus + [name + "=0,1"]))
    message = str(caught.value)
    assert message.startswith("{}='0,1' asks for MIG ".format(name)) and "only a privileged container" in message
    assert "hint: run it with --privileged" in message
    spec = base_spec(gpus + [name + "=0,GPU-x,0"])
    spec["process"]["capabilities"] = PRIVILEGED
    wanted = resolve(spec)
    field = "mig_config" if "CONFIG" in name else "mig_monitor"
    assert getattr(wanted, field) == ["0", "GPU-x"] and field.replace("_", "-") in wanted.sources


def test_mig_access_values_are_checked():
    spec = base_spec(["NVIDIA_MIG_CONFIG_DEVICES=0:1"])
    spec["process"]["capabilities"] = PRIVILEGED
    with pytest.raises(GpuSetupError, match="cannot read GPU"):
        resolve(spec)


@pytest.mark.parametrize("value", ["", " ", "void", "none", "VOID"])
def test_extra_variables_that_ask_for_nothing_are_no_request(value):
    assert resolve(base_spec(["NVIDIA_IMEX_CHANNELS=" + value, "NVIDIA_MIG_CONFIG_DEVICES=" + value])) is None
    wanted = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_MIG_MONITOR_DEVICES=" + value]))
    assert wanted is not None and wanted.devices == ["1"]


@pytest.mark.parametrize("name", ["NVIDIA_IMEX_CHANNELS", "NVIDIA_MIG_CONFIG_DEVICES", "NVIDIA_MIG_MONITOR_DEVICES"])
def test_extra_values_are_bounded_like_the_others(name):
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec([name + "=" + "7," * 20000]))
    assert str(caught.value).startswith("{} is 40000 characters long; at most 8192 are accepted".format(name))
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec([name + "=" + "x" * 8000]))
    assert len(str(caught.value)) < 600 and "(8000 characters)" in str(caught.value)
