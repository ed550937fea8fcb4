"""The C launcher: passthrough with the identical argv, `create` to Python only when the spec can
request GPUs, the real runtime from runtime.conf, and errors where containerd reads them.

Whether Python ran is told by the debug log: the Python runtime writes a line for every create
it sees (``debug = true`` in the fake runtime's config); the launcher writes nothing on success.
"""

import json
import os
import re
import subprocess

import pytest

from nvdocker_setup.runtime import request
from tests.runtime.conftest import base_spec, read_config, write_bundle


def run(launcher, argv, fake_runtime, driver_root=None, cwd=None, env=None):
    merged = fake_runtime.env(driver_root.path if driver_root else None)
    merged.update(env or {})
    return subprocess.run([launcher] + argv, env=merged, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


PASSTHROUGH = [
    ["state", "c1"],
    ["--root", "/r", "--log", "/dev/null", "--log-format", "json", "start", "c1"],
    ["--root=/r", "--log=/dev/null", "--log-format=json", "--systemd-cgroup", "--debug", "delete", "--force", "c1"],
    ["--rootless", "create", "state", "create"],
    ["--criu", "create", "--root", "create", "kill", "create", "KILL"],
    ["-root", "create", "-log", "/dev/null", "ps", "c1"],
    ["--log-format", "create", "--rootless=true", "exec", "--process", "p.json", "c1"],
    ["--cgroup-manager", "create", "--log-level", "create", "pause", "c1"],
    ["features"],
    ["--version"],
    [],
    ["run", "--bundle", ".", "c1"],
    ["spec", "--bundle", "create"],
]


@pytest.mark.parametrize("argv", PASSTHROUGH, ids=[" ".join(a) or "(none)" for a in PASSTHROUGH])
def test_passthrough_argv_is_identical_and_never_starts_python(launcher, fake_runtime, tmp_path, argv):
    # A spec that requests GPUs in the working directory: had "create" been misread as the
    # subcommand, Python would run and log (and fail: there is no driver here).
    write_bundle(tmp_path / "cwd", base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
    done = run(launcher, argv, fake_runtime, cwd=str(tmp_path / "cwd"))
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path] + argv
    assert fake_runtime.log_lines() == []


@pytest.mark.parametrize(
    "bundle_args",
    [["--bundle", "{b}"], ["--bundle={b}"], ["-b", "{b}"], ["-b={b}"], ["-bundle", "{b}"], []],
    ids=["--bundle B", "--bundle=B", "-b B", "-b=B", "-bundle B", "cwd"],
)
def test_create_with_a_request_goes_to_python(launcher, fake_runtime, driver_root, tmp_path, bundle_args):
    bundle = tmp_path / "b"
    write_bundle(bundle, base_spec(["NVIDIA_VISIBLE_DEVICES=1"]))
    argv = ["--root", "/r", "--log", str(tmp_path / "log.json"), "--log-format", "json", "create"]
    argv += [a.format(b=bundle) for a in bundle_args] + ["--pid-file", str(bundle / "init.pid"), "c1"]
    done = run(launcher, argv, fake_runtime, driver_root, cwd=str(bundle))
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path] + argv
    assert any("create c1: devices=1 via env" in line for line in fake_runtime.log_lines())
    assert "/dev/nvidia1" in [d["path"] for d in read_config(bundle)["linux"]["devices"]]


@pytest.mark.parametrize(
    "spec",
    [
        base_spec(),
        base_spec(["NVIDIA_DRIVER_CAPABILITIES=all"], hooks={"prestart": [{"path": "/proc/1/exe", "args": ["libnetwork-setkey"]}]}),
    ],
)
def test_create_without_a_request_skips_python(launcher, fake_runtime, tmp_path, spec):
    data = write_bundle(tmp_path / "b", spec)
    argv = ["--root", "/r", "create", "--bundle", str(tmp_path / "b"), "c1"]
    done = run(launcher, argv, fake_runtime)
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path] + argv
    assert fake_runtime.log_lines() == []
    assert (tmp_path / "b" / "config.json").read_bytes() == data


@pytest.mark.parametrize(
    "marker",
    [
        base_spec(["NVIDIA_VISIBLE_DEVICES=void"]),
        base_spec(annotations={"cdi.k8s.io/x": "vendor.com/net=eth0"}),
        base_spec(["X=caf\u00e9"]),  # json.dumps escapes it as \\u00e9: could hide a marker, so Python looks
    ],
)
def test_anything_that_might_be_a_request_goes_to_python_which_decides(launcher, fake_runtime, tmp_path, marker):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(marker))
    data = (bundle / "config.json").read_bytes()
    done = run(launcher, ["create", "--bundle", str(bundle), "c1"], fake_runtime)
    assert done.returncode == 0, done.stderr
    assert any("no GPU request, spec untouched" in line for line in fake_runtime.log_lines())
    assert (bundle / "config.json").read_bytes() == data


def test_python_errors_reach_the_log_and_the_spec_stays(launcher, fake_runtime, driver_root, tmp_path):
    data = write_bundle(tmp_path / "b", base_spec(["NVIDIA_VISIBLE_DEVICES=3"]))
    log = tmp_path / "log.json"
    done = run(launcher, ["--log", str(log), "create", "--bundle", str(tmp_path / "b"), "c1"], fake_runtime, driver_root)
    assert done.returncode == 1 and fake_runtime.argv() is None
    assert "unknown GPU '3'" in json.loads(log.read_text().splitlines()[-1])["msg"]
    assert (tmp_path / "b" / "config.json").read_bytes() == data


def test_runtimes_list_order_continuation_and_other_sections(launcher, fake_runtime, tmp_path):
    fake_runtime.write_config(
        "runtimes = /bin/false\n[other]\nruntimes = /bin/false\n[ Runtime ]\n# first existing wins; a later value replaces\n"
        "runtimes = /no/such/runc,\n    {}\n".format(fake_runtime.path)
    )
    done = run(launcher, ["state", "c1"], fake_runtime)
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path, "state", "c1"]


def test_bare_names_are_searched_on_path(launcher, fake_runtime):
    fake_runtime.write_config("runtimes = fake-runc\n")
    done = run(launcher, ["state", "c1"], fake_runtime, env={"PATH": os.path.dirname(fake_runtime.path)})
    assert done.returncode == 0, done.stderr
    assert fake_runtime.argv() == [fake_runtime.path, "state", "c1"]


def test_no_runtime_found_is_reported_to_log_json(launcher, fake_runtime, tmp_path):
    fake_runtime.write_config("runtimes = /no/such/runc \"quoted\"\n")
    log = tmp_path / "log.json"
    done = run(launcher, ["--log", str(log), "--log-format", "json", "state", "c1"], fake_runtime)
    assert done.returncode == 1
    assert "no OCI runtime found" in done.stderr
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and 'tried: /no/such/runc "quoted"' in entry["msg"] and entry["time"].endswith("Z")


def test_the_launcher_never_execs_itself(launcher, fake_runtime, tmp_path):
    os.symlink(launcher, str(tmp_path / "alias"))
    fake_runtime.write_config("runtimes = {} {}\n".format(launcher, tmp_path / "alias"))
    done = run(launcher, ["--log", str(tmp_path / "log.txt"), "--log-format", "text", "state", "c1"], fake_runtime)
    assert done.returncode == 1 and "no OCI runtime found" in done.stderr
    assert (tmp_path / "log.txt").read_text().startswith('time="') and "level=error" in (tmp_path / "log.txt").read_text()


def test_a_missing_explicit_config_is_an_error(launcher, fake_runtime, tmp_path):
    done = run(launcher, ["state", "c1"], fake_runtime, env={"NVDOCKER_RUNTIME_CONFIG": str(tmp_path / "nope.conf")})
    assert done.returncode == 1 and "NVDOCKER_RUNTIME_CONFIG" in done.stderr


# -- one list of request markers (issue #14, item 3) -------------------------------------------------------

LAUNCHER_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "launcher", "nvdocker-runtime.c")


def c_string_array(source, name):
    """The string literals of ``static const char *const NAME[] = {...};`` in C source, unescaped."""
    match = re.search(r"\b" + re.escape(name) + r"\[\]\s*=\s*\{(.*?)\};", source, re.S)
    assert match, "no array {} in the launcher".format(name)
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)
    items = [item.strip() for item in body.split(",") if item.strip()]
    assert items[-1] == "NULL", items
    strings = []
    for item in items[:-1]:
        assert re.fullmatch(r'"(?:[^"\\]|\\.)*"', item), "not a plain string literal: " + item
        strings.append(re.sub(r"\\(.)", r"\1", item[1:-1]))
    return strings


def test_the_launchers_request_markers_are_the_python_list():
    """Drift between the C array and request.REQUEST_MARKERS would let a request kind skip Python."""
    with open(LAUNCHER_SOURCE) as handle:
        markers = c_string_array(handle.read(), "request_markers")
    assert markers == list(request.REQUEST_MARKERS)


def test_the_marker_parser_sees_a_drift():
    source = 'static const char *const request_markers[] = {"NVIDIA_VISIBLE_DEVICES", "\\\\u", NULL};'
    assert c_string_array(source, "request_markers") == ["NVIDIA_VISIBLE_DEVICES", "\\u"]
    assert c_string_array(source, "request_markers") != list(request.REQUEST_MARKERS)


def test_every_request_kind_has_a_marker():
    for name, _ in request.EXTRA_REQUESTS:
        assert name in request.REQUEST_MARKERS
    assert request.VISIBLE_DEVICES in request.REQUEST_MARKERS
    assert all(hook in request.REQUEST_MARKERS for hook in request.NVIDIA_HOOK_NAMES)
    assert request.CDI_ANNOTATION_PREFIX.startswith(tuple(request.REQUEST_MARKERS))


def test_an_imex_request_alone_reaches_python_and_gets_its_channel(launcher, fake_runtime, mig_root, tmp_path):
    write_bundle(tmp_path / "b", base_spec(["NVIDIA_IMEX_CHANNELS=1"]))
    done = run(launcher, ["create", "--bundle", str(tmp_path / "b"), "c1"], fake_runtime, mig_root)
    assert done.returncode == 0 and fake_runtime.argv() is not None, done.stderr
    devices = read_config(tmp_path / "b")["linux"]["devices"]
    assert [device["path"] for device in devices] == ["/dev/nvidia-caps-imex-channels/channel1"]
    assert not read_config(tmp_path / "b").get("mounts", [])[1:]  # no driver files for IMEX alone


@pytest.mark.parametrize("env", [["NVIDIA_MIG_CONFIG_DEVICES=all"], ["NVIDIA_MIG_MONITOR_DEVICES=all"]],
                         ids=lambda env: env[0].split("=")[0])
def test_a_mig_access_request_alone_reaches_python_and_is_refused_unprivileged(launcher, fake_runtime, mig_root,
                                                                              tmp_path, env):
    data = write_bundle(tmp_path / "b", base_spec(env))
    log = tmp_path / "log.json"
    done = run(launcher, ["--log", str(log), "create", "--bundle", str(tmp_path / "b"), "c1"], fake_runtime, mig_root)
    assert done.returncode == 1 and fake_runtime.argv() is None, done.stderr
    name = env[0].split("=")[0]
    message = json.loads(log.read_text().splitlines()[-1])["msg"]
    assert "{} asks for".format(env[0].replace("=", "='", 1) + "'") in message and "only a privileged" in message, message
    assert "nvdocker-runtime:" in done.stderr and name in done.stderr
    assert (tmp_path / "b" / "config.json").read_bytes() == data


def test_the_launcher_offers_itself_as_the_hook_only_when_trusted(launcher, fake_runtime, driver_root, tmp_path):
    """The C launcher is also the ld cache hook (no second interpreter start), named in the
    spec by its real path; a copy that a user could replace (a world-writable directory) is not
    offered, and the spec gets the Python hook instead."""
    from nvdocker_setup.runtime.config import NATIVE_HOOK_NAME, hook_script

    def hook_of(binary, name):
        bundle = tmp_path / name
        write_bundle(bundle, base_spec(["NVIDIA_VISIBLE_DEVICES=all"]))
        done = run(binary, ["create", "--bundle", str(bundle), name], fake_runtime, driver_root)
        assert done.returncode == 0, done.stderr
        hooks = read_config(bundle)["hooks"]["createContainer"]
        assert len(hooks) == 1 and hooks[0]["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        return hooks[0]

    trusted = hook_of(launcher, "trusted")
    assert trusted["path"] == os.path.realpath(launcher) and trusted["args"][:2] == [NATIVE_HOOK_NAME, "update-ldcache"]
    if os.geteuid() != 0:
        return  # as another user, every path is as trusted as the caller: nothing more to tell apart
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    copy = shared / "nvdocker-runtime"
    copy.write_bytes(open(launcher, "rb").read())
    os.chmod(str(copy), 0o755)
    untrusted = hook_of(str(copy), "untrusted")
    assert untrusted["path"] != str(copy) and NATIVE_HOOK_NAME not in untrusted["args"]
    assert untrusted["args"][untrusted["args"].index(hook_script()) + 1] == "update-ldcache"
