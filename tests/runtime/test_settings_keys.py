"""The runtime.conf keys of issue #23 and what each does to a created spec: ``log-level``,
``no-cgroups``, ``supported-driver-capabilities``, ``ignore-imex-channel-requests``; the C launcher
reading ``runtimes`` from a file `nvdocker-setup config` edited; the key lists kept in step."""

import json
import os

import pytest
from typer.testing import CliRunner

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import args as runtime_args
from nvdocker_setup.runtime import config as runtime_config
from nvdocker_setup.runtime import settings_edit
from nvdocker_setup.runtime.config import RuntimeConfig, from_values, parse_ini
from nvdocker_setup.runtime.main import Log, prepare_bundle
from tests.runtime.conftest import base_spec, read_config, write_bundle
from tests.runtime.test_create import LIB, create
from tests.runtime.test_launcher import run as run_launcher
from tests.runtime.test_request_policy import STRICT, device_mount, spec_with

IMEX_CHANNEL = "/dev/nvidia-caps-imex-channels/channel"


def test_every_key_the_runtime_reads_is_editable_and_documented():
    assert [key.name for key in settings_edit.KEYS] == list(runtime_config.KEYS)
    assert set(settings_edit.ALIASES.values()) <= set(runtime_config.KEYS)
    # the module docstring's example file holds every key, and the runtime reads it
    example = runtime_config.__doc__.split("::\n", 1)[1].split("\n\n", 1)[0]
    values = parse_ini("\n".join(line[4:] for line in example.splitlines()))["runtime"]
    assert sorted(values) == sorted(runtime_config.KEYS)
    from_values(values)


@pytest.mark.parametrize("text, level", [
    ("", "warning"), ("debug = true\n", "debug"), ("log-level = Info\n", "info"),
    ("debug = true\nlog-level = error\n", "error"),  # log-level, when set, decides
])
def test_log_level_and_the_older_debug(text, level):
    assert from_values(parse_ini(text)["runtime"]).log_level == level


@pytest.mark.parametrize("text, fragment", [
    ("log-level = verbose\n", "log-level must be one of error, warning, info, debug"),
    ("no-cgroups = perhaps\n", "no-cgroups must be true or false"),
    ("supported-driver-capabilities = compute,cuda\n", "unknown driver capability 'cuda'"),
    ("ignore-imex-channel-requests = 2\n", "ignore-imex-channel-requests must be true or false"),
])
def test_bad_values_are_refused_by_load(tmp_path, text, fragment):
    conf = tmp_path / "rt.conf"
    conf.write_text("[runtime]\n" + text)
    with pytest.raises(GpuSetupError, match=fragment):
        runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})


def _created(tmp_path, driver_root, env, log_level, **config):
    """Create in ``tmp_path``; the spec and what the log got at ``log_level``."""
    write_bundle(tmp_path / "b", base_spec(env))
    log = tmp_path / "nvdocker.log"
    parsed = runtime_args.parse(["--root", "/r", "create", "--bundle", str(tmp_path / "b"), "c1"])
    prepare_bundle(parsed, RuntimeConfig(driver_root=driver_root.path, **config), Log(str(log), log_level))
    return read_config(tmp_path / "b"), log.read_text() if log.exists() else ""


@pytest.mark.parametrize("level, summary, decisions", [
    ("error", False, False), ("warning", False, False), ("info", True, False), ("debug", True, True),
])
def test_log_level_decides_what_the_log_gets(tmp_path, driver_root, level, summary, decisions):
    """info: a line for each GPU container; debug: every decision too (a container without a request)."""
    _spec, log = _created(tmp_path / "gpu", driver_root, ["NVIDIA_VISIBLE_DEVICES=0"], level)
    assert ("info pid=" in log and "devices=0 via env" in log) == summary
    _spec, log = _created(tmp_path / "plain", driver_root, [], level)
    assert ("no GPU request, spec untouched" in log) == decisions
    levels = Log(str(tmp_path / "levels.log"), level)
    levels.write("warning", "left out something")
    levels.write("error", "a failure")
    written = (tmp_path / "levels.log").read_text()
    assert "a failure" in written and ("left out something" in written) == (level != "error")


def test_no_cgroups_gives_the_nodes_without_cgroup_rules(tmp_path, driver_root):
    write_bundle(tmp_path / "a", base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
    ruled = create(tmp_path / "a", driver_root)
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
    bare = create(tmp_path / "b", driver_root, no_cgroups=True)
    assert [d["path"] for d in bare["linux"]["devices"]] == [d["path"] for d in ruled["linux"]["devices"]]
    assert len(ruled["linux"]["resources"]["devices"]) == 1 + len(ruled["linux"]["devices"])
    assert bare["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]  # the engine's own, kept
    assert bare["mounts"] == ruled["mounts"]
    # a spec without linux.resources gets none
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=0"])
    del spec["linux"]["resources"]
    write_bundle(tmp_path / "c", spec)
    edited = create(tmp_path / "c", driver_root, no_cgroups=True)
    assert "resources" not in edited["linux"] and "/dev/nvidia0" in [d["path"] for d in edited["linux"]["devices"]]


def test_supported_driver_capabilities(tmp_path, driver_root):
    utility = ("utility",)
    spec, _log = _created(tmp_path, driver_root, ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=all"],
                          "warning", supported_capabilities=utility)
    mounted = {m["destination"] for m in spec["mounts"]}
    assert LIB + "libnvidia-ml.so.550.54.14" in mounted and LIB + "libcuda.so.550.54.14" not in mounted
    unset, _log = _created(tmp_path, driver_root, ["NVIDIA_VISIBLE_DEVICES=0"], "warning", supported_capabilities=utility)
    assert {m["destination"] for m in unset["mounts"]} == mounted  # the default (utility,compute), cut
    data = write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"]))
    with pytest.raises(GpuSetupError) as refused:
        create(tmp_path / "b", driver_root, supported_capabilities=utility)
    message = str(refused.value)
    assert "asks for compute" in message and "supported-driver-capabilities = utility" in message
    assert "ask for utility or all" in message
    assert (tmp_path / "b" / "config.json").read_bytes() == data
    everything, _log = _created(tmp_path, driver_root, ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=compute"],
                                "warning")
    assert LIB + "libcuda.so.550.54.14" in {m["destination"] for m in everything["mounts"]}  # unset: every capability


def test_ignore_imex_channel_requests(tmp_path, mig_root):
    from tests.runtime.test_request_policy import create as create_logged

    _data, after, log = create_logged(tmp_path / "a", mig_root, spec_with(["NVIDIA_VISIBLE_DEVICES=1",
                                                                            "NVIDIA_IMEX_CHANNELS=all"]))
    assert any(d["path"].startswith(IMEX_CHANNEL) for d in json.loads(after)["linux"]["devices"])
    _data, after, log = create_logged(tmp_path / "b", mig_root, spec_with(["NVIDIA_VISIBLE_DEVICES=1",
                                                                            "NVIDIA_IMEX_CHANNELS=all"]),
                                      ignore_imex_channels=True)
    paths = [d["path"] for d in json.loads(after)["linux"]["devices"]]
    assert "/dev/nvidia1" in paths and not any(path.startswith(IMEX_CHANNEL) for path in paths)
    assert "NVIDIA_IMEX_CHANNELS ignored: ignore-imex-channel-requests = true" in log
    # an IMEX request alone (variable or device-list mount) is no request at all: the spec stays
    only = spec_with(["NVIDIA_IMEX_CHANNELS=0"], mounts=[device_mount("imex/1")])
    data, after, log = create_logged(tmp_path / "c", mig_root, only, ignore_imex_channels=True, **STRICT)
    assert after == data
    assert "the IMEX channels under /var/run/nvidia-container-devices/imex ignored" in log


def test_the_launcher_reads_runtimes_from_an_edited_file(launcher, fake_runtime, tmp_path):
    from nvdocker_setup.cli.main import app

    fake_runtime.write_config("# admin's comment\nruntimes = /no/such/runc\n")
    done = CliRunner().invoke(app, ["config", "--config", fake_runtime.config, "--state-dir", str(tmp_path / "state"),
                                    "--set", "nvidia-container-runtime.runtimes=/no/such/crun,{}".format(fake_runtime.path),
                                    "--set", "no-cgroups", "--in-place"])
    assert done.exit_code == 0, done.output
    with open(fake_runtime.config) as handle:
        assert handle.read().startswith("[runtime]\n# admin's comment\nruntimes = /no/such/crun {}\n".format(
            fake_runtime.path))
    ran = run_launcher(launcher, ["state", "c1"], fake_runtime)
    assert ran.returncode == 0, ran.stderr
    assert fake_runtime.argv() == [fake_runtime.path, "state", "c1"]
    assert os.stat(fake_runtime.config).st_mode & 0o022 == 0
