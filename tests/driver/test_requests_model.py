"""Capabilities, NVIDIA_REQUIRE_* checks and the ContainerEdits model."""

import pytest

from nvdocker_setup.driver import requirements
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES, libraries_for, parse_capabilities
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import ContainerEdits, DeviceNode, Hook, Mount
from nvdocker_setup.driver.requirements import Facts, check, cuda_version_for_driver


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ("compute", "utility")),
        ("", ("compute", "utility")),
        ("utility", ("utility",)),
        (" video , compute ", ("compute", "video")),
        ("all", ALL_CAPABILITIES),
        ("compute,all", ALL_CAPABILITIES),
        ("GRAPHICS,display,compat32", ("compat32", "display", "graphics")),
    ],
)
def test_capabilities(value, expected):
    assert parse_capabilities(value) == expected


def test_an_unknown_capability_is_refused_with_the_list():
    with pytest.raises(GpuSetupError) as caught:
        parse_capabilities("compute,cuda")
    assert "'cuda'" in caught.value.message and "utility" in caught.value.hint


def test_library_lists_follow_nvidia():
    assert "libcuda.so" in libraries_for(["compute"]) and "libnvidia-ml.so" in libraries_for(["utility"])
    assert "libcuda.so" not in libraries_for(["utility"])
    assert "libnvcuvid.so" in libraries_for(["video"]) and "libGLX_nvidia.so" in libraries_for(["graphics"])


@pytest.mark.parametrize(
    "driver, cuda",
    [("550.54.14", "12.4"), ("550.127.05", "12.4"), ("535.183.01", "12.2"), ("570.86.15", "12.8"), ("470.256.02",
            "11.4"), ("300.1", "0.0")],
)
def test_cuda_version_for_driver(driver, cuda):
    assert cuda_version_for_driver(driver) == cuda


FACTS = Facts("550.54.14", "12.4")


@pytest.mark.parametrize(
    "env",
    [
        {"NVIDIA_REQUIRE_CUDA": "cuda>=12.4"},
        {"NVIDIA_REQUIRE_CUDA": "cuda>=12.4 brand=tesla,driver>=470,driver<471"},
        {"NVIDIA_REQUIRE_CUDA": "cuda>=13.0 driver>=550"},  # second alternative holds
        {"NVIDIA_REQUIRE_CUDA": "cuda>=12.0,driver>=550,driver<551"},
        {"NVIDIA_REQUIRE_DRIVER": "driver>=535", "NVIDIA_REQUIRE_CUDA": "cuda=12.4"},
        {"NVIDIA_REQUIRE_JETPACK": "cuda>=99"},  # never checked
        {"NVIDIA_REQUIRE_CUDA": ""},
    ],
)
def test_requirements_that_hold(env):
    check(env, FACTS)


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.5"}, "cuda>=12.5"),
        ({"NVIDIA_REQUIRE_CUDA": "cuda>=12.5 brand=tesla,driver>=550"}, "no GPU to check brand"),
        ({"NVIDIA_REQUIRE_DRIVER": "driver<550"}, "driver<550"),
        ({"NVIDIA_REQUIRE_ARCH": "arch>=8.0"}, "no GPU to check arch"),
    ],
)
def test_requirements_that_fail_name_the_condition_and_the_driver(env, fragment):
    with pytest.raises(GpuSetupError) as caught:
        check(env, FACTS)
    assert fragment in caught.value.message and "550.54.14" in caught.value.message and "CUDA 12.4" in caught.value.message
    assert "NVIDIA_DISABLE_REQUIRE" in caught.value.hint


@pytest.mark.parametrize("condition", ["cuda", "gpu>=1", "cuda>=x"])
def test_unreadable_conditions_are_errors(condition):
    with pytest.raises(GpuSetupError):
        check({"NVIDIA_REQUIRE_CUDA": condition}, FACTS)


@pytest.mark.parametrize("value, disabled", [("1", True), ("true", True), ("TRUE", True), ("0", False), ("no", False), ("", False)])
def test_disable_require(value, disabled):
    assert requirements.disabled({"NVIDIA_DISABLE_REQUIRE": value}) is disabled


def test_model_round_trips_through_cdi_and_merges_without_duplicates():
    node = DeviceNode("/dev/nvidia0", 195, 0, host_path="/r/dev/nvidia0", file_mode=0o666)
    ctl = DeviceNode("/dev/nvidiactl", 195, 255)
    mount = Mount("/r/usr/lib/libcuda.so.1", "/usr/lib/libcuda.so.1")
    hook = Hook("createContainer", "/usr/bin/hook", ["hook", "update-ldcache"])
    edits = ContainerEdits(["A=1"], [ctl, node], [mount], [hook])
    assert ContainerEdits.from_cdi(edits.to_cdi()) == edits
    assert edits.to_cdi()["deviceNodes"][1]["hostPath"] == "/r/dev/nvidia0"
    assert "hostPath" not in edits.to_cdi()["deviceNodes"][0]
    merged = edits.merged(ContainerEdits(["A=1", "B=2"], [node, DeviceNode("/dev/nvidia1", 195, 1)], [mount], [hook]))
    assert merged.env == ["A=1", "B=2"]
    assert [n.path for n in merged.device_nodes] == ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"]
    assert len(merged.mounts) == 1 and len(merged.hooks) == 1
    assert edits.device_nodes == [ctl, node]  # merged() does not change its operands
    assert ContainerEdits().is_empty() and ContainerEdits.from_cdi(None).is_empty()
    assert node.to_oci() == {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0, "fileMode": 0o666, "uid": 0, "gid": 0}
    assert node.cgroup_rule() == {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rwm"}
    assert mount.to_oci()["options"] == ["ro", "nosuid", "nodev", "rbind", "rprivate"]
