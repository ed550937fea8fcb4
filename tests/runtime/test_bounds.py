"""Bounds on what a container can make the runtime do or say (issue #9, items 1, 2 and 7): request
sizes, bounded messages, a stderr nobody reads, deep JSON, wrong types, and the env of our hooks."""

import copy
import json
import os
import subprocess
import sys
import time

import pytest

from nvdocker_setup.driver.edits import HookCommand
from nvdocker_setup.driver.errors import GpuSetupError, quoted
from nvdocker_setup.driver.model import HOOK_ENV, Hook
from nvdocker_setup.runtime import jsonio
from nvdocker_setup.runtime.request import (
    MAX_VALUE_CHARS,
    check_request_sizes,
    environment,
    nvidia_hook_indexes,
    parse_visible_devices,
    resolve,
)
from tests.runtime.conftest import REPO, base_spec, read_config, write_bundle

MIB = 1 << 20


# -- sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_REQUIRE_CUDA", "NVIDIA_DISABLE_REQUIRE"])
@pytest.mark.parametrize("size", [40000, MIB])
def test_oversized_request_values_are_refused_in_a_few_words(name, size):
    spec = base_spec(["NVIDIA_VISIBLE_DEVICES=0", name + "=" + "1" * size])
    with pytest.raises(GpuSetupError) as caught:
        resolve(spec)
    assert caught.value.message == "{} is {} characters long; at most {} are accepted".format(name, size, MAX_VALUE_CHARS)


def test_values_at_the_bound_are_accepted():
    check_request_sizes({"NVIDIA_VISIBLE_DEVICES": "0" * MAX_VALUE_CHARS, "NVIDIA_REQUIRE_CUDA": "c" * MAX_VALUE_CHARS}, {})


def test_a_long_variable_name_is_not_echoed_whole():
    name = "NVIDIA_REQUIRE_" + "X" * 50000
    with pytest.raises(GpuSetupError) as caught:
        check_request_sizes({name: "c" * (MAX_VALUE_CHARS + 1)}, {})
    assert len(str(caught.value)) < 500


def test_too_many_requirement_variables():
    env = {"NVIDIA_REQUIRE_{}".format(i): "cuda>=1" for i in range(65)}
    with pytest.raises(GpuSetupError, match="65 NVIDIA_REQUIRE_\\* variables; at most 64"):
        check_request_sizes(env, {})
    del env["NVIDIA_REQUIRE_0"]
    check_request_sizes(env, {})


def test_huge_cdi_annotation_lists():
    many = {"cdi.k8s.io/k{}".format(i): "nvidia.com/gpu=0" for i in range(10000)}
    with pytest.raises(GpuSetupError, match="10000 cdi.k8s.io/ annotations; at most 64"):
        resolve(base_spec(annotations=many))
    long_value = {"cdi.k8s.io/k": ",".join(["nvidia.com/gpu=0"] * 50000)}
    with pytest.raises(GpuSetupError) as caught:
        resolve(base_spec(annotations=long_value))
    assert "characters long; at most 8192 are accepted" in caught.value.message and len(str(caught.value)) < 500
    other = {"example.com/k{}".format(i): "x" for i in range(10000)}  # not ours: not counted
    assert resolve(base_spec(annotations=other)) is None


def test_messages_echo_at_most_a_part_of_a_value_once():
    with pytest.raises(GpuSetupError) as caught:
        parse_visible_devices("x" * 8000)
    message = str(caught.value)
    assert "(8000 characters)" in message and "x" * 201 not in message and len(message) < 600
    assert message.count("x" * 200) == 1  # not twice
    with pytest.raises(GpuSetupError) as caught:
        parse_visible_devices("0," + "y" * 8000)
    assert len(str(caught.value)) < 900


def test_quoted():
    assert quoted("abc") == "'abc'"
    assert quoted("a" * 1000, 10) == "'aaaaaaaaaa'... (1000 characters)"


def test_a_huge_digit_selector_is_a_clean_error(driver_root):
    from nvdocker_setup.driver.discovery import discover

    driver = discover(driver_root.path)
    for selector in ("9" * 5000, "\u00b2", "\u0661"):
        with pytest.raises(GpuSetupError, match="unknown GPU"):
            driver.find_gpu(selector)


# -- types ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hooks", [
    {"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook", "args": {"a": 1}}]},
    {"prestart": [{"path": {"a": 1}, "args": [{"b": 2}]}]},
    {"prestart": [{"path": "/x", "args": "nvidia-container-runtime-hook"}]},
    {"prestart": {"path": "/usr/bin/nvidia-container-runtime-hook"}},
    {"prestart": [{"path": "/x", "args": []}]},
    ["a"],
])
def test_odd_hook_entries_do_not_break_request_detection(hooks):
    found = nvidia_hook_indexes({"hooks": hooks})
    assert found in ([], [0])


@pytest.mark.parametrize("process", [{"env": {"NVIDIA_VISIBLE_DEVICES": "all"}},
        {"env": "NVIDIA_VISIBLE_DEVICES=all"}, ["x"], {"env": [1, None, {}]}])
def test_odd_process_env_is_no_request(process):
    assert environment({"process": process}) == {}
    assert resolve({"process": process}) is None


# -- deep JSON ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[" * 200000 + "]" * 200000, '{"a":' * 200000 + "1" + "}" * 200000, "[" * 200000])
def test_deep_json_is_a_value_error_quickly(text):
    started = time.monotonic()
    with pytest.raises(ValueError, match="nested too deeply"):
        jsonio.loads(text)
    assert time.monotonic() - started < 1


def test_ordinary_nesting_still_parses():
    assert jsonio.loads("[" * 100 + "]" * 100) == json.loads("[" * 100 + "]" * 100)


# -- as a process: never a traceback, never a blocked stderr ---------------------------------------------------


def runtime_process(bundle, fake_runtime, driver_root, stderr=subprocess.PIPE, log=None):
    argv = [sys.executable, "-I", "-S", os.path.join(REPO, "nvdocker_setup/runtime/__main__.py")]
    if log:
        argv += ["--log", log, "--log-format", "json"]
    argv += ["create", "--bundle", str(bundle), "c1"]
    return subprocess.Popen(argv, env=fake_runtime.env(driver_root.path), stdout=subprocess.PIPE, stderr=stderr)


@pytest.mark.parametrize("name, spec_text", [
    ("deep", '{"process":{"env":["NVIDIA_VISIBLE_DEVICES=all"]},"x":' + "[" * 200000 + "]" * 200000 + "}"),
    ("args_object", json.dumps(base_spec(hooks={"prestart": [{"path": "/usr/bin/nvidia-container-runtime-hook", "args": {"a": 1}}]}))),
    ("env_object", json.dumps(dict(base_spec(), process={"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}))),
    ("root_list", json.dumps(dict(base_spec(["NVIDIA_VISIBLE_DEVICES=all"]), root=["rootfs"]))),
    ("mounts_object", json.dumps(dict(base_spec(["NVIDIA_VISIBLE_DEVICES=all"]), mounts={"a": 1}))),
    ("linux_list", json.dumps(dict(base_spec(["NVIDIA_VISIBLE_DEVICES=all"]), linux=[1]))),
    ("annotations_list", json.dumps(dict(base_spec(["NVIDIA_VISIBLE_DEVICES=0"]), annotations=["cdi.k8s.io/x"]))),
    ("selector_superscript", json.dumps(base_spec(["NVIDIA_VISIBLE_DEVICES=\u00b2"]))),
], ids=lambda value: value if len(value) < 40 else "spec")
def test_malformed_specs_never_give_a_traceback(tmp_path, fake_runtime, driver_root, name, spec_text):
    bundle = tmp_path / "b"
    write_bundle(bundle, {})
    (bundle / "config.json").write_text(spec_text)
    process = runtime_process(bundle, fake_runtime, driver_root)
    _, stderr = process.communicate(timeout=30)
    assert b"Traceback" not in stderr, stderr.decode()
    if process.returncode != 0:
        assert process.returncode == 1 and len(stderr.splitlines()) == 1 and b"nvdocker-runtime:" in stderr


def filled_pipe():
    """A pipe whose buffer is full and that nobody reads: what the shim's stderr pipe is to a runtime
    that writes more than 64 KiB before exiting."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"z" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def test_an_error_with_a_full_stderr_pipe_still_exits_and_logs_first(tmp_path, fake_runtime, driver_root):
    bundle = tmp_path / "b"
    write_bundle(bundle, base_spec(["NVIDIA_VISIBLE_DEVICES=" + "x" * 34000]))
    log = str(tmp_path / "runc-log.json")
    read_end, write_end = filled_pipe()
    try:
        process = runtime_process(bundle, fake_runtime, driver_root, stderr=write_end, log=log)
        os.close(write_end)
        process.communicate(timeout=10)  # blocked forever before the fix
    finally:
        os.close(read_end)
    assert process.returncode == 1
    with open(log) as handle:
        (line,) = handle.read().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and "NVIDIA_VISIBLE_DEVICES is 34000 characters long" in entry["msg"]
    assert len(line) < 1000


def test_the_launcher_does_not_block_on_a_full_stderr_pipe_either(tmp_path, launcher, fake_runtime):
    env = fake_runtime.env()
    env["NVDOCKER_RUNTIME_CONFIG"] = str(tmp_path / ("missing-" + "m" * 3000))  # fail() in C, with a long detail
    log = str(tmp_path / "log.json")
    read_end, write_end = filled_pipe()
    try:
        process = subprocess.Popen([launcher, "--log", log, "state", "c1"], env=env, stdout=subprocess.DEVNULL, stderr=write_end)
        os.close(write_end)
        process.wait(timeout=10)
    finally:
        os.close(read_end)
    assert process.returncode == 1
    with open(log) as handle:
        entry = json.loads(handle.read())
    assert entry["msg"].startswith("nvdocker-runtime: cannot read NVDOCKER_RUNTIME_CONFIG=") and len(entry["msg"]) < 2100


def test_the_launcher_message_to_a_normal_stderr_is_bounded_and_whole(tmp_path, launcher, fake_runtime):
    env = fake_runtime.env()
    env["NVDOCKER_RUNTIME_CONFIG"] = str(tmp_path / "missing")
    done = subprocess.run([launcher, "state", "c1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    expected = "nvdocker-runtime: cannot read NVDOCKER_RUNTIME_CONFIG={}\n".format(env["NVDOCKER_RUNTIME_CONFIG"])
    assert done.returncode == 1 and done.stderr == expected


def test_a_one_mebibyte_request_through_the_launcher_is_refused_quickly(tmp_path, launcher, fake_runtime, driver_root):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=" + "0," * (MIB // 2)]))
    started = time.monotonic()
    done = subprocess.run([launcher, "create", "--bundle", str(tmp_path / "b"), "c1"], env=fake_runtime.env(driver_root.path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=10)
    assert time.monotonic() - started < 5
    assert done.returncode == 1
    assert done.stderr == (
        "nvdocker-runtime: NVIDIA_VISIBLE_DEVICES is 1048576 characters long; at most 8192 are accepted "
        "(hint: request GPUs by index, UUID or all; see NVIDIA_VISIBLE_DEVICES in the documentation)\n"
    )
    assert fake_runtime.argv() is None


# -- the env of every hook we emit ---------------------------------------------------------------------------


def test_hook_command_emits_env_and_absolute_paths_only():
    hook = HookCommand("/usr/bin/python3", ["/usr/bin/python3", "-I", "-S", "/h.py"], "/sbin/ldconfig").ldcache_hook(["/usr/lib"], "/r")
    oci = hook.to_oci()
    assert oci["env"] == list(HOOK_ENV) == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] and oci["path"] == "/usr/bin/python3"
    assert hook.to_cdi()["env"] == list(HOOK_ENV)
    for path, ldconfig in (("python3", "/sbin/ldconfig"), ("/usr/bin/python3", "ldconfig"), ("", "/sbin/ldconfig")):
        with pytest.raises(GpuSetupError, match="absolute"):
            HookCommand(path, [path], ldconfig)


def test_a_hook_given_no_env_still_gets_one():
    assert Hook("createContainer", "/x").to_oci() == {"path": "/x", "env": list(HOOK_ENV)}


def test_create_adds_a_hook_with_its_own_env_whatever_the_container_env(tmp_path, driver_root):
    from nvdocker_setup.runtime import args as runtime_args
    from nvdocker_setup.runtime.config import RuntimeConfig
    from nvdocker_setup.runtime.main import Log, prepare_bundle

    evil = ["LD_PRELOAD=./evil.so", "LD_AUDIT=./evil.so", "LD_LIBRARY_PATH=.", "GCONV_PATH=.", "PYTHONPATH=.", "NVIDIA_VISIBLE_DEVICES=all"]
    write_bundle(tmp_path / "b", base_spec(evil))
    prepare_bundle(runtime_args.parse(["create", "--bundle", str(tmp_path / "b"), "c1"]),
            RuntimeConfig(driver_root=driver_root.path), Log(None, False))
    spec = read_config(tmp_path / "b")
    hooks = [hook for point in spec["hooks"].values() for hook in point]
    assert hooks and all(hook["env"] == list(HOOK_ENV) and os.path.isabs(hook["path"]) for hook in hooks)
    assert all(os.path.isabs(arg) for hook in hooks for arg in hook["args"] if arg.endswith(".py"))


def test_cdi_spec_hooks_carry_env_without_raising_the_cdi_version(driver_root):
    from nvdocker_setup.cdi import spec as cdi_spec
    from nvdocker_setup.cdi import validate
    from nvdocker_setup.driver.discovery import discover
    from nvdocker_setup.runtime.config import RuntimeConfig

    spec = cdi_spec.generate(discover(driver_root.path), RuntimeConfig(driver_root=driver_root.path).hook_command())
    hooks = [hook for edits in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]] for hook in edits.get("hooks", ())]
    assert hooks and all(hook["env"] == list(HOOK_ENV) and hook["path"].startswith("/") for hook in hooks)
    without_env = copy.deepcopy(spec)
    for hook in without_env["containerEdits"]["hooks"]:
        del hook["env"]
    assert cdi_spec.minimum_version(spec) == cdi_spec.minimum_version(without_env) == spec["cdiVersion"]
    assert validate.problems(spec) == []
    pytest.importorskip("jsonschema")
    assert validate.schema_problems(spec) == []
