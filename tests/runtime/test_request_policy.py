"""Request policy for shared hosts and Kubernetes (issue #11, item 6).

``accept-envvar-when-unprivileged = false`` ignores ``NVIDIA_VISIBLE_DEVICES`` in a container
without ``CAP_SYS_ADMIN``; ``accept-device-list-as-volume-mounts = true`` takes the devices from
``/dev/null`` mounts under ``/var/run/nvidia-container-devices/`` and removes them; CDI names of
kind ``nvidia.com/gpu`` in the variable stand for their device.
"""

import json
import os

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import args as runtime_args
from nvdocker_setup.runtime import config as runtime_config
from nvdocker_setup.runtime.config import RuntimeConfig
from nvdocker_setup.runtime.main import Log, prepare_bundle
from nvdocker_setup.runtime.request import (
    DEVICE_LIST_ROOT,
    MAX_DEVICE_LIST_MOUNTS,
    is_privileged,
    parse_visible_devices,
    resolve,
)
from tests.runtime.conftest import base_spec, read_config, write_bundle
from tests.runtime.test_launcher import run as run_launcher
from tests.runtime.test_request import DOCKER_GPUS_HOOK

UUID1 = "GPU-9e8d7c6b-5a49-4382-8170-6f5e4d3c2b1a"
DOCKER_DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                       "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                       "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
STRICT = dict(accept_envvar_unprivileged=False, accept_volume_mounts=True)


def spec_with(env=(), caps=DOCKER_DEFAULT_CAPS, mounts=(), **extra):
    spec = base_spec(list(env), **extra)
    spec["process"]["capabilities"] = {name: list(caps) for name in ("bounding", "effective", "permitted")}
    spec["mounts"] = spec["mounts"] + list(mounts)
    return spec


def device_mount(name, source="/dev/null"):
    return {"destination": DEVICE_LIST_ROOT + "/" + name, "type": "bind", "source": source, "options": ["rbind", "ro"]}


def create(tmp_path, driver_root, spec, **config):
    bundle = tmp_path / "b"
    data = write_bundle(bundle, spec)
    log_path = str(tmp_path / "nvdocker.log")
    parsed = runtime_args.parse(["--root", "/r", "create", "--bundle", str(bundle), "c1"])
    prepare_bundle(parsed, RuntimeConfig(driver_root=driver_root.path, **config), Log(log_path, True))
    log = open(log_path).read() if os.path.exists(log_path) else ""
    return data, (bundle / "config.json").read_bytes(), log


def device_paths(spec):
    """The GPU nodes (/dev/nvidia<N>) the spec gives; control nodes come with any request."""
    return sorted(d["path"] for d in spec.get("linux", {}).get("devices", []) if d["path"][len("/dev/nvidia"):].isdigit())


# --- the variable in unprivileged containers -------------------------------------------------------

def test_unprivileged_container_gets_nothing_from_the_variable_and_the_log_says_why(tmp_path, driver_root):
    data, after, log = create(tmp_path, driver_root, spec_with(["NVIDIA_VISIBLE_DEVICES=all"]), accept_envvar_unprivileged=False)
    assert after == data  # byte for byte: no edits
    assert "NVIDIA_VISIBLE_DEVICES ignored: the container is not privileged" in log
    assert "accept-envvar-when-unprivileged = false" in log


def test_the_default_still_accepts_the_variable(tmp_path, driver_root):
    _, after, _ = create(tmp_path, driver_root, spec_with(["NVIDIA_VISIBLE_DEVICES=1"]))
    assert device_paths(json.loads(after)) == ["/dev/nvidia1"]


def test_a_privileged_container_still_gets_its_devices(tmp_path, driver_root):
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=1"], caps=DOCKER_DEFAULT_CAPS + ["CAP_SYS_ADMIN"])
    _, after, _ = create(tmp_path, driver_root, spec, accept_envvar_unprivileged=False)
    assert "/dev/nvidia1" in device_paths(json.loads(after)) and "/dev/nvidia0" not in device_paths(json.loads(after))


def test_cap_sys_admin_must_be_in_the_bounding_set():
    assert not is_privileged(spec_with(caps=DOCKER_DEFAULT_CAPS))
    assert is_privileged(spec_with(caps=["CAP_SYS_ADMIN"]))
    spec = spec_with()
    spec["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN")  # not bounding: not privileged
    assert not is_privileged(spec)


@pytest.mark.parametrize(
    "capabilities",
    [None, "CAP_SYS_ADMIN", ["CAP_SYS_ADMIN"], {"bounding": "CAP_SYS_ADMIN"}, {"bounding": None}, {"bounding": [1, {}]}],
)
def test_odd_capability_shapes_are_unprivileged(capabilities):
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=0"])
    spec["process"]["capabilities"] = capabilities
    assert not is_privileged(spec)
    assert resolve(spec, accept_envvar_unprivileged=False) is None


def test_dockers_gpus_hook_sets_the_variable_after_the_image_so_it_is_honoured():
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=1"], hooks={"prestart": [DOCKER_GPUS_HOOK]})
    request = resolve(spec, accept_envvar_unprivileged=False)
    assert request.devices == ["1"] and request.sources == ["env", "--gpus"]


def test_cdi_annotations_are_not_the_images_and_still_count():
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=all"], annotations={"cdi.k8s.io/gpu": "nvidia.com/gpu=0"})
    notes = []
    request = resolve(spec, accept_envvar_unprivileged=False, notes=notes)
    assert request.devices == ["0"] and request.sources == ["cdi"] and len(notes) == 1


# --- device lists as volume mounts -----------------------------------------------------------------

def test_a_volume_mount_list_gives_exactly_those_devices_removes_the_mounts_and_ignores_the_variable(tmp_path, driver_root):
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=all"], mounts=[device_mount("1")])
    _, after, log = create(tmp_path, driver_root, spec, **STRICT)
    edited = json.loads(after)
    assert device_paths(edited) == ["/dev/nvidia1"]
    assert not any(DEVICE_LIST_ROOT in m["destination"] for m in edited["mounts"])
    assert {"destination": "/proc", "type": "proc", "source": "proc"} in edited["mounts"]
    assert "NVIDIA_VISIBLE_DEVICES ignored: the device list under" in log and "devices=1 via mounts" in log


def test_a_volume_mount_list_works_in_privileged_containers_too():
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=0"], caps=["CAP_SYS_ADMIN"], mounts=[device_mount("1")])
    assert resolve(spec, **STRICT).devices == ["1"]


@pytest.mark.parametrize(
    "names, devices",
    [(["0", UUID1], ["0", UUID1]), (["1", "all"], ["all"]), (["1", "1"], ["1"]), (["nvidia.com/gpu=1"], None)],
)
def test_volume_mount_names(names, devices):
    mounts = [device_mount(name) for name in names]
    if devices is None:  # a "/" in the name: not one component
        with pytest.raises(GpuSetupError, match="cannot read a device"):
            resolve(spec_with(mounts=mounts), **STRICT)
        return
    request = resolve(spec_with(mounts=mounts), **STRICT)
    assert request.devices == devices and request.sources == ["mounts"] and request.mount_indexes == [1 + i for i in range(len(names))]


def test_destinations_are_normalized():
    mounts = [dict(device_mount("x"), destination="/var//run/./nvidia-container-devices/1/")]
    assert resolve(spec_with(mounts=mounts), **STRICT).devices == ["1"]


def test_an_image_volume_there_is_not_a_device_list():
    # Docker and containerd's CRI turn an image's VOLUME into a mount with a volume directory as source
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=void"], mounts=[device_mount("all", source="/var/lib/docker/volumes/abc/_data")])
    notes = []
    assert resolve(spec, notes=notes, **STRICT) is None
    assert "source is not /dev/null" in notes[0]


def test_without_the_setting_mounts_are_no_request_and_stay():
    spec = spec_with(mounts=[device_mount("1")])
    assert resolve(spec) is None
    spec = spec_with(["NVIDIA_VISIBLE_DEVICES=0"], mounts=[device_mount("1")])
    assert resolve(spec).devices == ["0"] and resolve(spec).mount_indexes == []


def test_a_void_list_still_removes_its_mounts(tmp_path, driver_root):
    _, after, _ = create(tmp_path, driver_root, spec_with(mounts=[device_mount("void")]), **STRICT)
    edited = json.loads(after)
    assert device_paths(edited) == [] and not any(DEVICE_LIST_ROOT in m["destination"] for m in edited["mounts"])


@pytest.mark.parametrize(
    "mounts",
    [
        "x", None, [None, 1, "m", [], {}], [{"destination": None}], [{"destination": 7, "source": "/dev/null"}],
        [{"destination": DEVICE_LIST_ROOT + "/1", "source": None}], [{"destination": DEVICE_LIST_ROOT + "/1", "source": ["/dev/null"]}],
        [{"destination": "/elsewhere/nvidia-container-devices/1", "source": "/dev/null"}],
        [{"destination": DEVICE_LIST_ROOT + "-x/1", "source": "/dev/null"}],
    ],
)
def test_odd_mount_shapes_are_no_request(mounts):
    spec = base_spec()
    spec["mounts"] = mounts
    assert resolve(spec, **STRICT) is None


@pytest.mark.parametrize(
    "name, fragment",
    [("", "cannot read a device"), ("a/b", "cannot read a device"), ("0,1", "cannot read a device"), ("gpu0", "cannot read device"),
     ("MIG-x", "cannot read device"), ("0:1:0", "cannot read device"), ("none\u0000", "cannot read device")],
)
def test_bad_device_names_are_one_bounded_message(name, fragment):
    spec = spec_with(mounts=[dict(device_mount("x"), destination=DEVICE_LIST_ROOT + "/" + name)])
    with pytest.raises(GpuSetupError) as caught:
        resolve(spec, **STRICT)
    assert fragment in caught.value.message and len(str(caught.value)) < 600


def test_device_list_mounts_are_bounded_in_number_and_length():
    many = [device_mount(str(i % 2)) for i in range(MAX_DEVICE_LIST_MOUNTS + 1)]
    with pytest.raises(GpuSetupError, match="65 mounts under /var/run/nvidia-container-devices; at most 64"):
        resolve(spec_with(mounts=many), **STRICT)
    with pytest.raises(GpuSetupError, match="devices is 40034 characters long; at most 8192") as caught:
        resolve(spec_with(mounts=[device_mount("0" * 40000)]), **STRICT)
    assert len(str(caught.value)) < 600
    # checked whatever the policy: sizes come before anything else
    with pytest.raises(GpuSetupError, match="at most 64"):
        resolve(spec_with(mounts=many))


# --- CDI names in the variable ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "value, devices",
    [
        ("nvidia.com/gpu=0", ["0"]),
        ("nvidia.com/gpu=all", ["all"]),
        ("nvidia.com/gpu=" + UUID1, [UUID1]),
        ("nvidia.com/gpu=0, 1,nvidia.com/gpu=1", ["0", "1"]),
        ("nvidia.com/gpu=1,all", ["all"]),
    ],
)
def test_cdi_names_in_the_variable(value, devices):
    assert parse_visible_devices(value) == devices


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("vendor.com/net=eth0", "is not of kind nvidia.com/gpu"),
        ("nvidia.com/gpux=0", "is not of kind nvidia.com/gpu"),
        ("NVIDIA.COM/GPU=0", "is not of kind nvidia.com/gpu"),
        ("nvidia.com/gpu=", "is not of kind nvidia.com/gpu"),
        ("0,vendor.com/net=eth0", "is not of kind nvidia.com/gpu"),
        ("nvidia.com/gpu=MIG-GPU-1/0/0", "cannot read device"),
        ("nvidia.com/gpu=gpu0", "cannot read device"),
    ],
)
def test_other_cdi_kinds_are_refused(value, fragment):
    with pytest.raises(GpuSetupError) as caught:
        parse_visible_devices(value)
    assert fragment in caught.value.message


def test_cdi_names_in_the_variable_give_the_same_devices(tmp_path, driver_root):
    _, by_index, _ = create(tmp_path, driver_root, spec_with(["NVIDIA_VISIBLE_DEVICES=1"]))
    _, by_cdi, _ = create(tmp_path, driver_root, spec_with(["NVIDIA_VISIBLE_DEVICES=nvidia.com/gpu=" + UUID1]))
    by_cdi_spec, by_index_spec = json.loads(by_cdi), json.loads(by_index)
    assert device_paths(by_cdi_spec) == ["/dev/nvidia1"]
    for spec in (by_cdi_spec, by_index_spec):
        del spec["process"]["env"]
    assert by_cdi_spec == by_index_spec


# --- configuration and the launcher ----------------------------------------------------------------

def test_the_settings_are_read_from_runtime_conf(tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("[runtime]\naccept-envvar-when-unprivileged = false\naccept-device-list-as-volume-mounts: yes\n")
    config = runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    assert config.accept_envvar_unprivileged is False and config.accept_volume_mounts is True
    conf.write_text("[runtime]\nruntimes = runc\n")
    config = runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    assert config.accept_envvar_unprivileged is True and config.accept_volume_mounts is False
    conf.write_text("[runtime]\naccept-device-list-as-volume-mounts = maybe\n")
    with pytest.raises(GpuSetupError, match="accept-device-list-as-volume-mounts must be true or false"):
        runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})


def test_a_device_list_alone_reaches_python_through_the_launcher(launcher, fake_runtime, driver_root, tmp_path):
    fake_runtime.write_config("runtimes = {}\nlog = {}\ndebug = true\naccept-device-list-as-volume-mounts = true\n".format(
        fake_runtime.path, fake_runtime.log))
    bundle = tmp_path / "b"
    spec = spec_with(mounts=[device_mount("1")])
    bundle.mkdir()
    (bundle / "rootfs").mkdir()
    # as Go's encoder may write it: every "/" escaped, so only the last component is a marker
    (bundle / "config.json").write_text(json.dumps(spec).replace("/", "\\/"))
    done = run_launcher(launcher, ["create", "--bundle", str(bundle), "c1"], fake_runtime, driver_root)
    assert done.returncode == 0, done.stderr
    assert any("devices=1 via mounts" in line for line in fake_runtime.log_lines()), fake_runtime.log_lines()
    edited = read_config(bundle)
    assert "/dev/nvidia1" in device_paths(edited) and not any(DEVICE_LIST_ROOT in m["destination"] for m in edited["mounts"])
