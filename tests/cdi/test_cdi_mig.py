"""`cdi generate` with MIG devices and IMEX channels (issue #11, item 4), on the simulated MIG root."""

import json
import os

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cdi import validate
from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from nvdocker_setup.driver import discover
from nvdocker_setup.runtime.config import RuntimeConfig
from nvdocker_setup.runtime.main import edits_for
from nvdocker_setup.runtime.request import resolve
from tests.runtime.conftest import base_spec
from tests.support.driver_root import MIG_UUIDS, simulated_mig_root_fixture


@pytest.fixture(scope="module")
def mig_root(tmp_path_factory):
    return simulated_mig_root_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def generated(mig_root):
    return cdi_spec.generate(discover(mig_root.path), None)


def nodes(spec, name):
    return sorted(node.path for node in cdi_spec.device_edits(spec, name).device_nodes)


def test_mig_devices_by_index_and_uuid_with_the_parent_gpu_and_cap_nodes(generated, mig_root):
    names = [device["name"] for device in generated["devices"]]
    assert names[4:] == ["0:0", MIG_UUIDS[0], "0:1", MIG_UUIDS[1], "all"]
    for name, expected in mig_root.mig_devices.items():
        own = sorted(node["path"] for device in generated["devices"] if device["name"] == name
                     for node in device["containerEdits"]["deviceNodes"])
        assert own == sorted(expected)
    assert set(mig_root.mig_devices["0:1"]) <= set(nodes(generated, MIG_UUIDS[1]))
    everything = nodes(generated, "all")
    assert "/dev/nvidia1" in everything and all(set(paths) <= set(everything) for paths in mig_root.mig_devices.values())


def test_the_spec_still_validates_at_the_same_version(generated):
    assert validate.problems(generated) == [] and generated["cdiVersion"] == "0.5.0"


@pytest.mark.parametrize("name", ["0:0", "0:1", MIG_UUIDS[1], "all"])
def test_cdi_mig_devices_equal_the_runtimes(generated, mig_root, name):
    config = RuntimeConfig(driver_root=mig_root.path)
    wanted = resolve(base_spec(["NVIDIA_VISIBLE_DEVICES=" + name, "NVIDIA_DRIVER_CAPABILITIES=all"]))
    runtime = edits_for(wanted, config)
    from_cdi = cdi_spec.device_edits(generated, name)
    assert sorted(n.path for n in from_cdi.device_nodes) == sorted(n.path for n in runtime.device_nodes)
    assert from_cdi.mounts == runtime.mounts


def test_imex_channels_are_their_own_kind(mig_root):
    imex = cdi_spec.generate_imex(discover(mig_root.path))
    assert imex["kind"] == "nvidia.com/imex-channel" and cdi_spec.qualified_names(imex) == [
        "nvidia.com/imex-channel=0", "nvidia.com/imex-channel=1"]
    assert nodes(imex, "1") == ["/dev/nvidia-caps-imex-channels/channel1"]
    assert validate.problems(imex) == [] and imex["cdiVersion"] == "0.5.0"


def test_no_imex_spec_without_channels(driver_root_plain):
    assert cdi_spec.generate_imex(discover(driver_root_plain.path)) is None


@pytest.fixture(scope="module")
def driver_root_plain(tmp_path_factory):
    from tests.support.driver_root import simulated_driver_root_fixture

    return simulated_driver_root_fixture(tmp_path_factory)


def invoke(mig_root, tmp_path, *args):
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    env = {"NVDOCKER_RUNTIME_CONFIG": str(absent), "NVDOCKER_DRIVER_ROOT": mig_root.path, "COLUMNS": "200", "NO_COLOR": "1"}
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def test_generate_writes_the_imex_spec_next_to_the_gpus_and_removes_it_when_gone(mig_root, tmp_path):
    out = tmp_path / "cdi" / "nvdocker.yaml"
    done = invoke(mig_root, tmp_path, "cdi", "generate", "--output", str(out), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    imex_out = tmp_path / "cdi" / "nvdocker-imex-channel.yaml"
    assert report["imex_output"] == str(imex_out) and "nvidia.com/gpu=0:1" in report["devices"]
    assert "nvidia.com/imex-channel=1" in report["devices"]
    spec, header = cdi_spec.load_document(str(imex_out))
    assert spec["kind"] == "nvidia.com/imex-channel" and cdi_spec.is_ours(spec, header)
    assert os.stat(str(imex_out)).st_mode & 0o777 == 0o644
    again = invoke(mig_root, tmp_path, "cdi", "generate", "--output", str(out), "--json")
    assert json.loads(again.stdout)["changed"] is False
    # the same output for a root without channels: our old IMEX spec goes
    channels = os.path.join(mig_root.path, "dev/nvidia-caps-imex-channels")
    os.rename(channels, channels + ".hidden")
    try:
        gone = invoke(mig_root, tmp_path, "cdi", "generate", "--output", str(out), "--json")
    finally:
        os.rename(channels + ".hidden", channels)
    assert gone.exit_code == 0 and json.loads(gone.stdout)["imex_output"] is None
    assert not imex_out.exists()


def test_imex_path():
    assert cdi_spec.imex_path("/etc/cdi/nvdocker.yaml") == "/etc/cdi/nvdocker-imex-channel.yaml"
    assert cdi_spec.imex_path("/etc/cdi/nvdocker.json") == "/etc/cdi/nvdocker-imex-channel.json"
    assert cdi_spec.imex_path("/etc/cdi.d/spec") == "/etc/cdi.d/spec-imex-channel"


# -- cdi list knows the IMEX spec ------------------------------------------------------------------


@pytest.fixture
def listed_mig(mig_root, tmp_path):
    out = tmp_path / "cdi" / "nvdocker.yaml"
    done = invoke(mig_root, tmp_path, "cdi", "generate", "--output", str(out))
    assert done.exit_code == 0, done.stderr
    return out, tmp_path / "cdi" / "nvdocker-imex-channel.yaml"


def test_list_shows_the_imex_spec_beside_the_gpus(mig_root, tmp_path, listed_mig):
    out, imex_out = listed_mig
    report = json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)
    assert report["stale"] is False and "nvidia.com/gpu=0:1" in [d["name"] for d in report["devices"]]
    imex = report["imex"]
    assert imex["spec"] == str(imex_out) and imex["stale"] is False and imex["stale_reason"] is None
    assert imex["driver_version"] == "550.54.14" and imex["cdiVersion"] == "0.5.0"
    assert imex["devices"] == [
        {"name": "nvidia.com/imex-channel=0", "device_nodes": ["/dev/nvidia-caps-imex-channels/channel0"]},
        {"name": "nvidia.com/imex-channel=1", "device_nodes": ["/dev/nvidia-caps-imex-channels/channel1"]},
    ]
    text = invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out))
    assert text.exit_code == 0 and "{} (IMEX channels, cdiVersion 0.5.0)".format(imex_out) in text.stdout
    assert "`-- nvidia.com/imex-channel=1\n    `-- /dev/nvidia-caps-imex-channels/channel1" in text.stdout
    assert text.stdout.count("every GPU container also gets") == 1 and "stale" not in text.stderr


def test_list_says_the_imex_spec_is_stale_after_a_driver_upgrade(mig_root, tmp_path, listed_mig):
    out, imex_out = listed_mig
    imex_out.write_text(imex_out.read_text().replace("550.54.14", "535.104.05"))
    report = json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)
    assert report["stale"] is False and report["imex"]["stale"] is True
    assert report["imex"]["stale_reason"] == "it was made for driver 535.104.05, the driver is now 550.54.14"
    text = invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out))
    assert "the IMEX spec {} is stale: it was made for driver 535.104.05".format(imex_out) in text.stderr


def test_list_says_the_imex_spec_is_stale_when_the_channels_changed(mig_root, tmp_path, listed_mig):
    out, imex_out = listed_mig
    driver = discover(mig_root.path)
    imex = cdi_spec.generate_imex(driver)
    imex["devices"] = imex["devices"][:1]  # written when only channel 0 existed
    imex_out.write_bytes(cdi_spec.render(imex, as_json=False, meta=cdi_spec.metadata(driver)))
    report = json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)
    assert report["imex"]["stale_reason"] == "it lists channel(s) 0, the host has 0, 1"
    # a foreign file of another kind at that name is not ours to list
    imex_out.write_text('{"cdiVersion": "0.5.0", "kind": "example.com/thing", "devices": []}\n')
    assert json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)["imex"] is None
    imex_out.write_text("kind: [unreadable\n")
    assert json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)["imex"] is None


def test_list_without_an_imex_spec_says_null(mig_root, tmp_path, listed_mig):
    out, imex_out = listed_mig
    imex_out.unlink()
    assert json.loads(invoke(mig_root, tmp_path, "cdi", "list", "--spec", str(out), "--json").stdout)["imex"] is None


def test_imex_staleness_bounds_what_it_echoes(mig_root):
    driver = discover(mig_root.path)
    hostile = {"kind": cdi_spec.IMEX_KIND, "devices": [{"name": str(n)} for n in range(100)]}
    reason = cdi_spec.imex_staleness(hostile, None, driver)
    assert reason.startswith("it lists channel(s) 0, 1, 2") and "and 84 more" in reason and len(reason) < 200
