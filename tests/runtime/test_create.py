"""`create` on the simulated driver root: the edits, the untouched no-request case, the errors.

In-process through ``prepare_bundle`` for the edits, and as a process (``python -m
nvdocker_setup.runtime``, the entry that works without the C launcher) for the exec and the
error reporting.
"""

import json
import os
import subprocess
import sys

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import args as runtime_args
from nvdocker_setup.runtime.config import RuntimeConfig
from nvdocker_setup.runtime.main import Log, prepare_bundle
from tests.runtime.conftest import REPO, base_spec, read_config, write_bundle
from tests.runtime.test_request import DOCKER_GPUS_HOOK, NETWORK_HOOK

LIB = "/usr/lib/x86_64-linux-gnu/"


def create(bundle, driver_root, **config):
    parsed = runtime_args.parse(["--root", "/r", "create", "--bundle", str(bundle), "c1"])
    prepare_bundle(parsed, RuntimeConfig(driver_root=driver_root.path, **config), Log(None, False))
    return read_config(bundle)


def test_no_request_leaves_config_json_byte_identical(tmp_path, driver_root):
    data = write_bundle(tmp_path / "b", base_spec(["NVIDIA_DRIVER_CAPABILITIES=all"], hooks={"prestart": [NETWORK_HOOK]}))
    before = os.stat(str(tmp_path / "b" / "config.json"))
    create(tmp_path / "b", driver_root)
    assert (tmp_path / "b" / "config.json").read_bytes() == data
    assert os.stat(str(tmp_path / "b" / "config.json")).st_ino == before.st_ino  # not even rewritten


def test_all_gpus(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
    spec = create(tmp_path / "b", driver_root)
    devices = {d["path"]: (d["major"], d["minor"]) for d in spec["linux"]["devices"]}
    assert devices == {
        "/dev/nvidiactl": (195, 255), "/dev/nvidia-modeset": (195, 254), "/dev/nvidia-uvm": (510, 0),
        "/dev/nvidia-uvm-tools": (510, 1), "/dev/nvidia0": (195, 0), "/dev/nvidia1": (195, 1),
    }
    allowed = {(r["major"], r["minor"]) for r in spec["linux"]["resources"]["devices"] if r.get("allow")}
    assert allowed == set(devices.values())
    mounts = {m["destination"]: m for m in spec["mounts"]}
    # default capabilities utility,compute: no video or graphics libraries
    expected = {LIB + "libcuda.so.550.54.14", LIB + "libnvidia-ptxjitcompiler.so.550.54.14",
            LIB + "libnvidia-ml.so.550.54.14", "/usr/bin/nvidia-smi", "/lib/firmware/nvidia/550.54.14"}
    if driver_root.persistenced_socket:
        expected.add("/run/nvidia-persistenced/socket")
    assert set(mounts) - {"/proc"} == expected
    for destination in expected:
        assert mounts[destination]["source"] == driver_root.host(destination)
        assert mounts[destination]["options"][:3] == ["ro", "nosuid", "nodev"]
    (hook,) = spec["hooks"]["createContainer"]
    links = [hook["args"][i + 1] for i, arg in enumerate(hook["args"]) if arg == "--link"]
    assert hook["args"][-6 - 2 * len(links):-2 * len(links)] == [
        "--ldconfig", RuntimeConfig().ldconfig, "--rootfs", str(tmp_path / "b" / "rootfs"), "--folder", LIB.rstrip("/")]
    # the host's links for utility,compute: the development links and the SONAME links
    assert links == [
        "libcuda.so.1::" + LIB + "libcuda.so", "libcuda.so.550.54.14::" + LIB + "libcuda.so.1",
        "libnvidia-ml.so.1::" + LIB + "libnvidia-ml.so", "libnvidia-ml.so.550.54.14::" + LIB + "libnvidia-ml.so.1",
        "libnvidia-ptxjitcompiler.so.1::" + LIB + "libnvidia-ptxjitcompiler.so",
        "libnvidia-ptxjitcompiler.so.550.54.14::" + LIB + "libnvidia-ptxjitcompiler.so.1",
    ]


def test_one_gpu_by_index_or_uuid_and_capabilities(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=video"]))
    spec = create(tmp_path / "b", driver_root)
    paths = [d["path"] for d in spec["linux"]["devices"]]
    assert "/dev/nvidia1" in paths and "/dev/nvidia0" not in paths
    libraries = [m["destination"] for m in spec["mounts"] if "lib" in m["destination"] and "firmware" not in m["destination"]]
    assert libraries == [LIB + "libnvidia-encode.so.550.54.14"]
    write_bundle(tmp_path / "c", base_spec(["NVIDIA_VISIBLE_DEVICES=" + driver_root.gpus[0].uuid]))
    assert "/dev/nvidia0" in [d["path"] for d in create(tmp_path / "c", driver_root)["linux"]["devices"]]


def test_none_injects_the_driver_without_gpus(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=none"]))
    paths = [d["path"] for d in create(tmp_path / "b", driver_root)["linux"]["devices"]]
    assert "/dev/nvidiactl" in paths and not any(p in paths for p in ("/dev/nvidia0", "/dev/nvidia1"))


def test_docker_gpus_hook_is_replaced_by_our_edits(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=all"], hooks={"prestart": [NETWORK_HOOK, DOCKER_GPUS_HOOK]}))
    spec = create(tmp_path / "b", driver_root)
    assert spec["hooks"]["prestart"] == [NETWORK_HOOK]
    assert "/dev/nvidia1" in [d["path"] for d in spec["linux"]["devices"]]


def test_cdi_annotation_request(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(annotations={"cdi.k8s.io/gpu": "nvidia.com/gpu=0"}))
    paths = [d["path"] for d in create(tmp_path / "b", driver_root)["linux"]["devices"]]
    assert "/dev/nvidia0" in paths and "/dev/nvidia1" not in paths


@pytest.mark.parametrize(
    "env, fragment",
    [
        (["NVIDIA_VISIBLE_DEVICES=7"], "unknown GPU '7'"),
        (["NVIDIA_VISIBLE_DEVICES=0:1"], "MIG"),
        (["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,cuda"], "unknown driver capability"),
        (["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_REQUIRE_CUDA=cuda>=12.5"], "cuda>=12.5"),
    ],
)
def test_bad_requests_leave_the_spec_untouched(tmp_path, driver_root, env, fragment):
    data = write_bundle(tmp_path / "b", base_spec(env))
    with pytest.raises(GpuSetupError) as caught:
        create(tmp_path / "b", driver_root)
    assert fragment in str(caught.value)
    assert (tmp_path / "b" / "config.json").read_bytes() == data
    assert sorted(os.listdir(str(tmp_path / "b"))) == ["config.json", "rootfs"]  # no temp file left


def test_disable_require_skips_the_check(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=13.0", "NVIDIA_DISABLE_REQUIRE=true"]))
    assert "/dev/nvidia0" in [d["path"] for d in create(tmp_path / "b", driver_root)["linux"]["devices"]]


def test_a_brand_alternative_lets_a_newer_cuda_image_run_on_the_datacenter_gpu(tmp_path, driver_root):
    """The simulated GPUs are A100s (brand tesla, arch 8.0) on driver 550 (CUDA 12.4): a CUDA 12.5
    image's `brand=tesla,driver>=550,driver<551` alternative holds (forward compatibility), the
    geforce one does not, and arch>=9.0 is refused naming the GPUs."""
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0",
                                            "NVIDIA_REQUIRE_CUDA=cuda>=12.5 brand=tesla,driver>=550,driver<551"]))
    assert "/dev/nvidia0" in [d["path"] for d in create(tmp_path / "b", driver_root)["linux"]["devices"]]
    for env, fragment in ((["NVIDIA_REQUIRE_CUDA=cuda>=12.5 brand=geforce,driver>=550,driver<551"], "brand tesla"),
                          (["NVIDIA_REQUIRE_ARCH=arch>=9.0"], "arch 8.0")):
        write_bundle(tmp_path / "c", base_spec(["NVIDIA_VISIBLE_DEVICES=all"] + env))
        with pytest.raises(GpuSetupError, match=fragment):
            create(tmp_path / "c", driver_root)


def test_capabilities_none_gives_the_device_nodes_only(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=none"]))
    spec = create(tmp_path / "b", driver_root)
    assert {"/dev/nvidia1", "/dev/nvidiactl"} <= {d["path"] for d in spec["linux"]["devices"]}
    assert not [m for m in spec["mounts"] if m["destination"] != "/proc"]
    assert not spec.get("hooks", {}).get("createContainer")


def test_unknown_gpu_message_names_the_gpus(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=GPU-deadbeef"]))
    with pytest.raises(GpuSetupError) as caught:
        create(tmp_path / "b", driver_root)
    for gpu in driver_root.gpus:
        assert gpu.uuid in caught.value.message


# -- as a process: python -m nvdocker_setup.runtime ------------------------------------------------

def run_python_runtime(argv, fake_runtime, driver_root, cwd=None):
    env = fake_runtime.env(driver_root.path)
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, "-m", "nvdocker_setup.runtime"] + argv, env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
    )


def test_python_entry_passes_the_identical_argv(tmp_path, fake_runtime, driver_root):
    argv = ["--root", "/r", "--log", "/dev/null", "--log-format", "json", "delete", "--force", "c1"]
    done = run_python_runtime(argv, fake_runtime, driver_root)
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path] + argv


def test_python_entry_creates_from_the_working_directory(tmp_path, fake_runtime, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0"]))
    argv = ["create", "--pid-file", "p", "c1"]
    done = run_python_runtime(argv, fake_runtime, driver_root, cwd=str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path] + argv
    assert "/dev/nvidia0" in [d["path"] for d in read_config(tmp_path / "b")["linux"]["devices"]]
    assert any("devices=0 via env" in line for line in fake_runtime.log_lines())


def test_python_entry_reports_errors_where_docker_looks(tmp_path, fake_runtime, driver_root):
    data = write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=5"]))
    log = tmp_path / "log.json"
    argv = ["--log", str(log), "--log-format", "json", "create", "--bundle", str(tmp_path / "b"), "c1"]
    done = run_python_runtime(argv, fake_runtime, driver_root)
    assert done.returncode == 1
    assert fake_runtime.argv() is None  # the real runtime never ran
    assert "unknown GPU '5'" in done.stderr
    (line,) = log.read_text().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["msg"].startswith("nvdocker-runtime: unknown GPU '5'") and entry["time"]
    assert any("error" in line and "unknown GPU" in line for line in fake_runtime.log_lines())
    assert (tmp_path / "b" / "config.json").read_bytes() == data


def test_text_log_format(tmp_path, fake_runtime, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=5"]))
    log = tmp_path / "log.txt"
    done = run_python_runtime(["--log", str(log), "--log-format", "text", "create", "-b", str(tmp_path / "b"),
            "c1"], fake_runtime, driver_root)
    assert done.returncode == 1
    assert log.read_text().startswith('time="') and 'level=error msg="nvdocker-runtime: unknown GPU' in log.read_text()


def test_a_config_typo_blocks_create_but_never_delete(tmp_path, fake_runtime, driver_root):
    fake_runtime.write_config("runtimes = {}\ndebug = perhaps\n".format(fake_runtime.path))
    # delete falls back to the default runtimes (runc answers "container does not exist")
    assert "debug must be" not in run_python_runtime(["delete", "nvdocker-test-absent"], fake_runtime, driver_root).stderr
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0"]))
    done = run_python_runtime(["create", "--bundle", str(tmp_path / "b"), "c1"], fake_runtime, driver_root)
    assert done.returncode == 1 and "debug must be true or false" in done.stderr


# -- legacy CUDA images and runtime.conf's disable-require (issue #20) --------------------------------


def test_runtime_conf_disable_require_skips_every_check(tmp_path, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=13.0"]))
    with pytest.raises(GpuSetupError, match="cuda>=13.0"):
        create(tmp_path / "b", driver_root)
    write_bundle(tmp_path / "c", base_spec(["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=13.0"]))
    assert "/dev/nvidia0" in [d["path"] for d in create(tmp_path / "c", driver_root, disable_require=True)["linux"]["devices"]]


def test_a_legacy_cuda_image_gets_every_gpu_and_capability_and_its_cuda_requirement(tmp_path, driver_root):
    """CUDA_VERSION and no NVIDIA_REQUIRE_CUDA (CUDA < 9 images): NVIDIA's defaults."""
    write_bundle(tmp_path / "b", base_spec(["CUDA_VERSION=8.0.61"]))
    spec = create(tmp_path / "b", driver_root)
    assert {"/dev/nvidia0", "/dev/nvidia1"} <= {d["path"] for d in spec["linux"]["devices"]}
    mounted = {m["destination"] for m in spec["mounts"]}
    assert LIB + "libGLX_nvidia.so.550.54.14" in mounted and LIB + "libcuda.so.550.54.14" in mounted  # all capabilities
    write_bundle(tmp_path / "c", base_spec(["CUDA_VERSION=13.0.1"]))  # newer than the 550 driver's 12.4
    with pytest.raises(GpuSetupError, match="cuda>=13.0"):
        create(tmp_path / "c", driver_root)


@pytest.mark.parametrize("env", [
    ["CUDA_VERSION=8.0.61", "NVIDIA_REQUIRE_CUDA=cuda>=8.0"],  # a modern image: its own variables decide
    ["CUDA_VERSION=8.0.61", "NVIDIA_VISIBLE_DEVICES=void"],
    ["CUDA_VERSION="],
])
def test_what_is_not_a_legacy_request_stays_untouched(tmp_path, driver_root, env):
    before = write_bundle(tmp_path / "b", base_spec(env))
    create(tmp_path / "b", driver_root)
    assert (tmp_path / "b" / "config.json").read_bytes() == before


def test_a_legacy_image_in_an_unprivileged_container_follows_the_envvar_policy(tmp_path, driver_root):
    before = write_bundle(tmp_path / "b", base_spec(["CUDA_VERSION=8.0.61"]))
    create(tmp_path / "b", driver_root, accept_envvar_unprivileged=False)
    assert (tmp_path / "b" / "config.json").read_bytes() == before


# -- opt-in devices: NVIDIA_GDS, NVIDIA_MOFED, NVIDIA_NVSWITCH, NVIDIA_GDRCOPY = enabled (issue #20) --------


@pytest.fixture
def gated_root(tmp_path):
    import stat

    from tests.support.driver_root import build_driver_root, missing_tools

    if os.geteuid() != 0 or missing_tools():
        pytest.skip("the simulated root needs root, gcc and ldconfig")
    root = build_driver_root(str(tmp_path / "root"))
    nodes = {"nvidia-fs0": (241, 0), "nvidia-fs1": (241, 1), "infiniband/uverbs0": (231, 192), "infiniband/rdma_cm": (10, 58),
             "infiniband/umad0": (231, 0), "nvidia-nvswitchctl": (240, 255), "nvidia-nvswitch0": (240, 0), "gdrdrv": (238, 0)}
    for name, (major, minor) in nodes.items():
        path = os.path.join(root.path, "dev", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    return root


@pytest.mark.parametrize("feature, expected", [
    ("NVIDIA_GDS", {"/dev/nvidia-fs0", "/dev/nvidia-fs1"}),
    ("NVIDIA_MOFED", {"/dev/infiniband/uverbs0", "/dev/infiniband/rdma_cm", "/dev/infiniband/umad0"}),
    ("NVIDIA_NVSWITCH", {"/dev/nvidia-nvswitchctl", "/dev/nvidia-nvswitch0"}),
    ("NVIDIA_GDRCOPY", {"/dev/gdrdrv"}),
])
def test_an_enabled_opt_in_feature_gets_its_device_nodes_and_only_then(tmp_path, gated_root, feature, expected):
    every = {"/dev/nvidia-fs0", "/dev/nvidia-fs1", "/dev/infiniband/uverbs0", "/dev/infiniband/rdma_cm",
             "/dev/infiniband/umad0", "/dev/nvidia-nvswitchctl", "/dev/nvidia-nvswitch0", "/dev/gdrdrv"}
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0", feature + "=enabled"]))
    spec = create(tmp_path / "b", gated_root)
    devices = {d["path"] for d in spec["linux"]["devices"]}
    assert devices & every == expected
    allowed = {(r.get("major"), r.get("minor")) for r in spec["linux"]["resources"]["devices"] if r.get("allow")}
    assert all((d["major"], d["minor"]) in allowed for d in spec["linux"]["devices"] if d["path"] in expected)
    write_bundle(tmp_path / "c", base_spec(["NVIDIA_VISIBLE_DEVICES=0", feature + "=disabled"]))
    assert not {d["path"] for d in create(tmp_path / "c", gated_root)["linux"]["devices"]} & every
    before = write_bundle(tmp_path / "d", base_spec([feature + "=enabled"]))  # no GPU request: nothing at all
    create(tmp_path / "d", gated_root)
    assert (tmp_path / "d" / "config.json").read_bytes() == before


def test_an_opt_in_node_a_user_owns_or_a_symlink_is_not_given(tmp_path, gated_root):
    os.chown(os.path.join(gated_root.path, "dev/nvidia-fs1"), 65534, 65534)
    os.symlink("/dev/sda", os.path.join(gated_root.path, "dev/nvidia-fs2"))
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_GDS=enabled"]))
    devices = {d["path"] for d in create(tmp_path / "b", gated_root)["linux"]["devices"]}
    assert "/dev/nvidia-fs0" in devices and not {"/dev/nvidia-fs1", "/dev/nvidia-fs2"} & devices


# -- the device nodes' groups (NVIDIA's default; no-additional-gids-for-device-nodes opts out) --------------


@pytest.fixture
def drm_root(tmp_path):
    from tests.support.driver_root import add_drm, build_driver_root, drm_names, missing_tools

    if os.geteuid() != 0 or missing_tools():
        pytest.skip("the simulated root needs root, gcc and ldconfig")
    root = build_driver_root(str(tmp_path / "root"))
    add_drm(root.path, root.gpus)
    card, render = drm_names(root.gpus[1])
    os.chown(os.path.join(root.path, "dev/dri", card), 0, 44)  # video, 0660 as udev makes it
    os.chown(os.path.join(root.path, "dev/dri", render), 0, 109)  # render
    os.chmod(os.path.join(root.path, "dev/dri", render), 0o660)
    return root


def test_a_graphics_container_gets_the_groups_of_its_drm_nodes(tmp_path, drm_root):
    """A non-root user in the container can open /dev/dri/renderD*: the process gets the nodes'
    groups (0660 nodes only; a world-usable node needs none), after the image's own."""
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=1", "NVIDIA_DRIVER_CAPABILITIES=graphics,compute,utility"])
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [27]}
    write_bundle(tmp_path / "b", spec)
    done = create(tmp_path / "b", drm_root)
    assert done["process"]["user"]["additionalGids"] == [27, 44, 109]
    write_bundle(tmp_path / "c", spec)
    kept = create(tmp_path / "c", drm_root, no_additional_gids=True)
    assert kept["process"]["user"]["additionalGids"] == [27]
    write_bundle(tmp_path / "d", base_spec(["NVIDIA_VISIBLE_DEVICES=1"]))  # no DRM node: nothing added
    assert "additionalGids" not in create(tmp_path / "d", drm_root).get("process", {}).get("user", {})
