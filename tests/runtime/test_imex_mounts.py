"""IMEX channels requested as volume mounts (issue #11), as NVIDIA's device plugins pass them:
``/dev/null`` mounted at ``/var/run/nvidia-container-devices/imex/<channel>``, read only with
``accept-device-list-as-volume-mounts = true``; then ``NVIDIA_IMEX_CHANNELS`` is ignored, and the
mounts are removed from the spec like the GPU device list's."""

import json

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime.request import DEVICE_LIST_ROOT, resolve
from tests.runtime.test_request_policy import STRICT, create, device_mount, spec_with

CHANNELS = "/dev/nvidia-caps-imex-channels/channel"


def imex_paths(spec):
    return sorted(d["path"] for d in spec.get("linux", {}).get("devices", []) if d["path"].startswith(CHANNELS))


def test_an_imex_mount_gives_that_channel_removes_the_mount_and_ignores_the_variable(tmp_path, mig_root):
    spec = spec_with(["NVIDIA_IMEX_CHANNELS=all"], mounts=[device_mount("imex/1")])
    _, after, log = create(tmp_path, mig_root, spec, **STRICT)
    edited = json.loads(after)
    assert imex_paths(edited) == [CHANNELS + "1"]
    assert not any(DEVICE_LIST_ROOT in m["destination"] for m in edited["mounts"])
    assert "NVIDIA_IMEX_CHANNELS ignored: the IMEX channels under" in log and "imex-channels=1" in log


def test_imex_mounts_beside_gpu_mounts_and_the_variable_for_gpus():
    """The GPU list and the IMEX list are read apart: IMEX mounts alone leave NVIDIA_VISIBLE_DEVICES
    in charge of the GPUs (under the variable policy), GPU mounts beside them take over as before."""
    both = resolve(spec_with(mounts=[device_mount("0"), device_mount("imex/0"), device_mount("imex/1")]), **STRICT)
    assert both.devices == ["0"] and both.imex_channels == ["0", "1"] and both.mount_indexes == [1, 2, 3]
    privileged = resolve(spec_with(["NVIDIA_VISIBLE_DEVICES=1"], caps=["CAP_SYS_ADMIN"], mounts=[device_mount("imex/0")]),
                         **STRICT)
    assert privileged.devices == ["1"] and "env" in privileged.sources and privileged.imex_channels == ["0"]
    notes = []
    unprivileged = resolve(spec_with(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_IMEX_CHANNELS=1"],
                                     mounts=[device_mount("imex/0")]), notes=notes, **STRICT)
    assert unprivileged.devices == [] and unprivileged.imex_channels == ["0"] and unprivileged.mount_indexes == [1]
    assert any("NVIDIA_VISIBLE_DEVICES ignored: the container is not privileged" in note for note in notes)


@pytest.mark.parametrize("names, channels", [(["imex/0", "imex/0"], ["0"]), (["imex/1", "imex/all"], ["all"])])
def test_imex_mount_names(names, channels):
    request = resolve(spec_with(mounts=[device_mount(name) for name in names]), **STRICT)
    assert request.imex_channels == channels and "imex" in request.sources and request.devices == []


@pytest.mark.parametrize("name", ["imex/x", "imex/0/1", "imex/" + "9" * 40, "imex/-1"])
def test_bad_imex_mount_names_are_one_bounded_message(name):
    with pytest.raises(GpuSetupError, match="cannot read an IMEX channel from the mount") as raised:
        resolve(spec_with(mounts=[device_mount(name)]), **STRICT)
    assert len(str(raised.value)) < 400


def test_imex_mounts_need_the_setting_and_a_dev_null_source():
    spec = spec_with(mounts=[device_mount("imex/0")])
    assert resolve(spec) is None  # the default: mounts are no request, and stay
    volume = spec_with(mounts=[device_mount("imex/0", source="/var/lib/docker/volumes/v/_data")])
    assert resolve(volume, **STRICT) is None


def test_an_unknown_channel_by_mount_is_refused_with_the_channels_there(tmp_path, mig_root):
    with pytest.raises(GpuSetupError, match="unknown IMEX channel '7': this host has channels 0, 1"):
        create(tmp_path, mig_root, spec_with(mounts=[device_mount("imex/7")]), **STRICT)
