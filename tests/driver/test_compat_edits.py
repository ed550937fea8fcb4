"""The runtime and ``cdi generate`` pass the CUDA forward-compatibility options to the one ld
cache hook (issue #11, item 3): the same argv from driver/edits.py, hook args only, the CDI
spec's ``cdiVersion`` unchanged."""

import copy

from nvdocker_setup.driver import capabilities as caps
from nvdocker_setup.driver.compat import COMPAT_DIR
from nvdocker_setup.driver.discovery import discover
from nvdocker_setup.driver.edits import HookCommand, common_edits, request_edits
from nvdocker_setup.runtime.config import RuntimeConfig

VERSION = "550.54.14"
COMPAT_ARGS = ["--cuda-compat-dir", COMPAT_DIR, "--host-driver-version", VERSION]


def hook_args(edits):
    (hook,) = edits.hooks
    return hook.args


def contains(args, part):
    return any(args[i:i + len(part)] == part for i in range(len(args)))


def test_the_runtime_hook_carries_the_host_driver_version_for_compute(driver_root):
    driver = discover(driver_root.path)
    assert driver.version == VERSION
    hook = RuntimeConfig(driver_root=driver_root.path).hook_command()
    args = hook_args(request_edits(driver, driver.gpus, list(caps.DEFAULT_CAPABILITIES), hook, "/r"))
    assert contains(args, COMPAT_ARGS) and args.count("--cuda-compat-dir") == 1
    # without compute the driver's libcuda is not mounted: no compat step
    assert not contains(hook_args(common_edits(driver, [caps.UTILITY], hook, "/r")), ["--cuda-compat-dir"])


def test_a_version_that_is_not_one_is_left_out():
    hook = HookCommand("/usr/bin/hook", ["hook"], "/sbin/ldconfig")
    for bad in ("550", "550.54.14; rm -rf /", "", "x.y"):
        assert "--cuda-compat-dir" not in hook.ldcache_hook(["/usr/lib"], "/r", (), bad).args
    assert contains(hook.ldcache_hook(["/usr/lib"], "/r", (), VERSION).args, COMPAT_ARGS)


def test_the_cdi_spec_hook_has_the_same_options_and_the_same_cdi_version(driver_root):
    from nvdocker_setup.cdi import spec as cdi_spec
    from nvdocker_setup.cdi import validate

    spec = cdi_spec.generate(discover(driver_root.path), RuntimeConfig(driver_root=driver_root.path).hook_command())
    (hook,) = spec["containerEdits"]["hooks"]
    assert contains(hook["args"], COMPAT_ARGS)
    without = copy.deepcopy(spec)
    args = without["containerEdits"]["hooks"][0]["args"]
    index = args.index("--cuda-compat-dir")
    del args[index:index + 4]
    assert cdi_spec.minimum_version(spec) == cdi_spec.minimum_version(without) == spec["cdiVersion"] == "0.5.0"
    assert validate.problems(spec) == []
