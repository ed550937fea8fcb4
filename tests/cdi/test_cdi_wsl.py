"""``cdi generate`` on a simulated WSL2 driver root (issue #11 item 5): one ``all`` device."""

import pytest

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cdi import validate
from nvdocker_setup.driver import discover
from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.edits import request_edits
from nvdocker_setup.runtime.config import RuntimeConfig
from tests.support.driver_root import DXG_NODE, WSL_LIB_DIR, wsl_root_or_skip

HOOK = RuntimeConfig().hook_command()


@pytest.fixture(scope="module")
def wsl_root(tmp_path_factory):
    return wsl_root_or_skip(str(tmp_path_factory.mktemp("wsl-cdi") / "root"))


@pytest.fixture(scope="module")
def generated(wsl_root):
    return cdi_spec.generate(discover(wsl_root.path), HOOK)


def test_one_all_device_with_dxg(generated, wsl_root):
    assert [device["name"] for device in generated["devices"]] == ["all"]
    (node,) = generated["devices"][0]["containerEdits"]["deviceNodes"]
    assert node["path"] == "/dev/dxg" and node["hostPath"] == wsl_root.host("/dev/dxg")
    assert (node["major"], node["minor"]) == DXG_NODE
    assert cdi_spec.qualified_names(generated) == ["nvidia.com/gpu=all"]


def test_common_edits_mount_the_wsl_files_read_only_with_the_ldcache_folder(generated, wsl_root):
    common = generated["containerEdits"]
    assert "deviceNodes" not in common  # no /dev/nvidiactl on WSL2
    targets = {m["containerPath"]: m for m in common["mounts"]}
    assert {WSL_LIB_DIR + "/libcuda.so.1", WSL_LIB_DIR + "/libcuda.so.1.1", WSL_LIB_DIR + "/libdxcore.so",
            WSL_LIB_DIR + "/libnvidia-ml.so.1", "/usr/bin/nvidia-smi"} == set(targets)
    assert all("ro" in m["options"] and "nosuid" in m["options"] and "nodev" in m["options"] for m in targets.values())
    (hook,) = common["hooks"]
    assert hook["args"][hook["args"].index("--folder") + 1] == WSL_LIB_DIR


def test_it_validates_and_declares_the_same_cdi_version(generated):
    # the cdiVersion rules are unchanged: device names "all" and deviceNode hostPath need 0.5.0
    assert generated["cdiVersion"] == cdi_spec.minimum_version(generated) == "0.5.0"
    assert validate.schema_problems(generated) == []
    assert validate.problems(generated) == []


def test_the_version_is_unknown_and_not_read_from_libcuda_so_1_1(generated, wsl_root):
    driver = discover(wsl_root.path)
    assert cdi_spec.library_driver_version(generated) is None  # libcuda.so.1.1 is no driver version
    meta = cdi_spec.metadata(driver)
    text = cdi_spec.render(generated, as_json=False, meta=meta)
    assert cdi_spec.parse(text, "x.yaml") == generated
    assert cdi_spec.driver_version_of(generated, cdi_spec.header_metadata(text)) == driver.version == "unknown"


def test_cdi_all_equals_the_runtimes_edits(generated, wsl_root):
    driver = discover(wsl_root.path)
    runtime_edits = request_edits(driver, driver.gpus, ALL_CAPABILITIES, HOOK)
    from_cdi = cdi_spec.device_edits(generated, "all")
    from_cdi.env = [e for e in from_cdi.env if e not in cdi_spec.CDI_ONLY_ENV]
    assert from_cdi.device_nodes == runtime_edits.device_nodes
    assert from_cdi.mounts == runtime_edits.mounts and from_cdi.hooks == runtime_edits.hooks


# -- the driver store (issue #20) ----------------------------------------------------------------------

STORE = "/usr/lib/wsl/drivers/nvlti.inf_amd64_3ab2c1d0e9f8a7b6"


@pytest.fixture
def store_root(tmp_path):
    root = wsl_root_or_skip(str(tmp_path / "root"))
    folder = root.host(STORE)
    import os

    os.makedirs(folder)
    os.makedirs(root.host("/usr/lib/wsl/drivers/u0398252.inf_amd64_0f0e0d0c0b0a0908"))  # another vendor's
    for name in ("libcuda.so.1.1", "libcuda_loader.so", "libnvidia-ml.so.1", "libnvidia-ml_loader.so",
                 "libnvidia-ptxjitcompiler.so.1", "nvcubins.bin", "nvidia-smi", "nvlddmkm.sys"):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"x")
    with open(root.host("/usr/lib/wsl/drivers/u0398252.inf_amd64_0f0e0d0c0b0a0908/libcuda_loader.so"), "wb") as handle:
        handle.write(b"x")
    return root


def mounted(root, capabilities):
    return {m.container_path for m in request_edits(discover(root.path), [], capabilities, HOOK).mounts}


def test_the_driver_stores_files_are_mounted_at_their_own_path_per_capability(store_root):
    compute = mounted(store_root, ("compute",))
    assert {STORE + "/libcuda.so.1.1", STORE + "/libcuda_loader.so", STORE + "/libnvidia-ptxjitcompiler.so.1",
            STORE + "/nvcubins.bin"} <= compute
    assert not {p for p in compute if "ml_loader" in p or p.endswith("nvlddmkm.sys") or "u0398252" in p}
    utility = mounted(store_root, ("utility",))
    assert {STORE + "/libnvidia-ml.so.1", STORE + "/libnvidia-ml_loader.so", STORE + "/nvidia-smi"} <= utility
    assert not {p for p in utility if "cuda" in p or "nvcubins" in p}
    # the ld cache hook indexes /usr/lib/wsl/lib, never the store (its libcuda.so.1.1 is loaded by path)
    edits = request_edits(discover(store_root.path), [], ("compute", "utility"), HOOK)
    assert all(STORE not in arg for hook in edits.hooks for arg in hook.args)


def test_a_driver_store_file_a_user_could_replace_is_left_out(store_root):
    import os

    os.chown(store_root.host(STORE + "/nvcubins.bin"), 65534, 65534)
    driver = discover(store_root.path)
    assert STORE + "/nvcubins.bin" not in {c for _, c in driver.wsl_store_files(("compute",))}
    assert any(note.startswith(STORE + "/nvcubins.bin") for note in driver.refused)
