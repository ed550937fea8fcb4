"""`docker run --gpus 0` under accept-envvar-when-unprivileged = false (issue #19 item B).

dockerd 20.10 (checked on the private dockerd, spec captured): `--gpus 0` / `count=0` adds its
prestart hook and no NVIDIA_VISIBLE_DEVICES; `--gpus 1` / `2` / `all` / `device=0` append theirs
after every container entry (`0`, `0,1`, `all`, `0`). So with the hook but no value of dockerd's
own, the variable read is the image's and must not count.
"""

from nvdocker_setup.runtime.request import dockerd_set_visible_devices, resolve
from tests.runtime.test_request import DOCKER_GPUS_HOOK
from tests.runtime.test_request_policy import spec_with

PATH = "PATH=/usr/bin:/bin"
HOST = "HOSTNAME=c0ffee"


def test_gpus_0_with_the_images_variable_gives_nothing_and_says_why():
    spec = spec_with([PATH, HOST, "NVIDIA_VISIBLE_DEVICES=all", "ZZZ=1"], hooks={"prestart": [DOCKER_GPUS_HOOK]})
    notes = []
    request = resolve(spec, accept_envvar_unprivileged=False, notes=notes)
    assert request is not None and request.devices == [] and request.sources == ["--gpus"]
    assert not request.wants_driver
    assert any("count 0" in note for note in notes)


def test_dockers_own_value_still_counts_with_and_without_the_images():
    for env in ([PATH, HOST, "NVIDIA_VISIBLE_DEVICES=0,1"],
                [PATH, HOST, "NVIDIA_VISIBLE_DEVICES=all", "ZZZ=1", "NVIDIA_VISIBLE_DEVICES=0,1"],
                [PATH, HOST, "NVIDIA_VISIBLE_DEVICES=0,1", "NVIDIA_DRIVER_CAPABILITIES=compute"]):
        spec = spec_with(env, hooks={"prestart": [DOCKER_GPUS_HOOK]})
        assert dockerd_set_visible_devices(spec)
        assert resolve(spec, accept_envvar_unprivileged=False).devices == ["0", "1"]


def test_the_policy_true_or_a_privileged_container_keeps_the_variable():
    spec = spec_with([PATH, HOST, "NVIDIA_VISIBLE_DEVICES=all", "ZZZ=1"], hooks={"prestart": [DOCKER_GPUS_HOOK]})
    assert resolve(spec, accept_envvar_unprivileged=True).devices == ["all"]
    privileged = spec_with([PATH, HOST, "NVIDIA_VISIBLE_DEVICES=all", "ZZZ=1"], hooks={"prestart": [DOCKER_GPUS_HOOK]},
                           caps=["CAP_SYS_ADMIN"])
    assert resolve(privileged, accept_envvar_unprivileged=False).devices == ["all"]
