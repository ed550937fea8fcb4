"""runtime.conf: the INI subset, defaults, environment overrides, finding the real runtime."""

import os
import sys

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.runtime import config
from nvdocker_setup.runtime.config import RuntimeConfig, find_real_runtime, load, parse_ini


def test_ini_rules():
    text = (
        "# comment\n"
        "debug = yes\n"  # before any section: [runtime]
        "[runtime]\n"
        "runtimes = crun\n"
        "    runc\n"  # continuation
        "; another comment\n"
        "Driver-Root: /run/nvidia/driver\n"
        "log =\n"
        "[other]\n"
        "runtimes = ignored\n"
    )
    sections = parse_ini(text)
    assert sections["runtime"] == {"debug": "yes", "runtimes": "crun runc", "driver-root": "/run/nvidia/driver", "log": ""}
    assert sections["other"] == {"runtimes": "ignored"}


def test_a_line_without_a_value_names_the_line():
    with pytest.raises(GpuSetupError) as caught:
        parse_ini("[runtime]\nruntimes runc\n", "rt.conf")
    assert "rt.conf line 2" in caught.value.message


def test_defaults_when_the_file_is_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.conf"))
    loaded = load({})
    assert loaded.path is None and loaded.runtimes == ["runc", "crun"] and loaded.driver_root == "/"
    assert loaded.log is None and loaded.debug is False and loaded.hook_path is None
    assert loaded.ldconfig in ("/sbin/ldconfig", "/sbin/ldconfig.real")


def test_file_then_environment(tmp_path):
    conf = tmp_path / "rt.conf"
    conf.write_text("[runtime]\nruntimes = crun, /opt/runc\ndriver-root = /a\nlog = /var/log/x.log\ndebug = true\n"
                    "hook-path = /usr/bin/h\nldconfig = /sbin/ldconfig\n")
    loaded = load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    assert loaded.runtimes == ["crun", "/opt/runc"] and loaded.driver_root == "/a" and loaded.debug is True
    assert loaded.log == "/var/log/x.log" and loaded.path == str(conf)
    command = loaded.hook_command()
    assert command.path == "/usr/bin/h" and command.args == ["h"] and command.ldconfig == "/sbin/ldconfig"
    assert load({"NVDOCKER_RUNTIME_CONFIG": str(conf), "NVDOCKER_DRIVER_ROOT": "/b"}).driver_root == "/b"


@pytest.mark.parametrize("text, fragment", [("debug = maybe\n", "debug"), ("hook-path = relative/h\n", "absolute")])
def test_bad_values(tmp_path, text, fragment):
    conf = tmp_path / "rt.conf"
    conf.write_text(text)
    with pytest.raises(GpuSetupError) as caught:
        load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    assert fragment in caught.value.message


def test_an_explicit_config_must_exist(tmp_path):
    with pytest.raises(GpuSetupError) as caught:
        load({"NVDOCKER_RUNTIME_CONFIG": str(tmp_path / "nope.conf")})
    assert "NVDOCKER_RUNTIME_CONFIG" in caught.value.message


def test_default_hook_runs_this_interpreter_on_the_hook_script():
    command = RuntimeConfig().hook_command()
    assert command.path == sys.executable and command.args[:3] == [sys.executable, "-I", "-S"]
    assert command.args[3].endswith(os.path.join("nvdocker_setup", "hook", "__main__.py")) and os.path.exists(command.args[3])


def executable(path) -> str:
    path.write_text("#!/bin/sh\n")
    os.chmod(str(path), 0o755)
    return str(path)


def test_find_real_runtime_in_order_on_path_and_never_ourselves(tmp_path):
    bin_a, bin_b = tmp_path / "a", tmp_path / "b"
    bin_a.mkdir()
    bin_b.mkdir()
    crun = executable(bin_b / "crun")
    runc = executable(bin_a / "runc")
    (bin_a / "notexec").write_text("")
    env = {"PATH": "{}:{}".format(bin_a, bin_b)}
    assert find_real_runtime(RuntimeConfig(runtimes=["notexec", "crun", "runc"]), env) == crun
    assert find_real_runtime(RuntimeConfig(runtimes=["runc", "crun"]), env) == runc
    assert find_real_runtime(RuntimeConfig(runtimes=[crun]), {}) == crun
    os.symlink(runc, str(tmp_path / "me"))
    assert find_real_runtime(RuntimeConfig(runtimes=["runc", "crun"]), env, exclude=[str(tmp_path / "me")]) == crun
    with pytest.raises(GpuSetupError) as caught:
        find_real_runtime(RuntimeConfig(runtimes=["nope", "/no/such"]), env)
    assert "nope, /no/such" in caught.value.message and "runtimes" in caught.value.hint
