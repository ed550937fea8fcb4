"""`--engine containerd` through the CLI, file side (--apply none): refusals leave the file untouched,
a missing file is created and removed again, the installed containerd's version decides what is
possible (CDI from 1.7, v1 files), records are per engine."""

import json
import os
import subprocess
import sys

import pytest

from nvdocker_setup.exit_status import ExitStatus
from tests.support.containerd import BY_NAME, containerd_or_skip

pytestmark = pytest.mark.containerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V2 = (b'version = 2\n\n# the admin\'s comment\n[plugins."io.containerd.grpc.v1.cri"]\n'
      b'  sandbox_image = "registry.k8s.io/pause:3.9"\n')


def binary(name: str) -> str:
    return os.path.join(containerd_or_skip(BY_NAME[name]), "usr", "bin", "containerd")


@pytest.fixture
def run(tmp_path):
    runtime = tmp_path / "bin" / "nvdocker-runtime"
    runtime.parent.mkdir()
    runtime.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    runtime.chmod(0o755)

    def run(*args, containerd="1.7"):
        env = dict(os.environ, PYTHONPATH=REPO, NVDOCKER_STATE_DIR=str(tmp_path / "state"),
                   NVDOCKER_CONTAINERD_BINARY=binary(containerd))
        argv = [sys.executable, "-m", "nvdocker_setup", *args, "--json"]
        if args[0] == "install" and "--runtime-path" not in args:
            argv[-1:-1] = ["--runtime-path", str(runtime)]
        done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
        return done.returncode, json.loads(done.stdout)

    run.runtime = str(runtime)
    return run


@pytest.mark.parametrize("data, error_id, status", [
    (b'version = 2\n[plugins\n', "containerd-config-invalid", ExitStatus.INVALID_CONFIG),
    (b'version = 2\n[a]\n[a]\n', "containerd-config-duplicate", ExitStatus.INVALID_CONFIG),
    (b'version = 9\n', "containerd-config-unknown-version", ExitStatus.INVALID_CONFIG),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = "x"\n', "containerd-config-bad-table",
     ExitStatus.INVALID_CONFIG),
    (b'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n', "containerd-cri-disabled", ExitStatus.CONFLICT),
])
def test_refusals_leave_the_file_untouched(run, tmp_path, data, error_id, status):
    config = tmp_path / "config.toml"
    config.write_bytes(data)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--apply", "none")
    assert (code, out["error"]["id"]) == (status, error_id), out
    assert out["error"]["hint"]
    assert config.read_bytes() == data
    assert not (tmp_path / "state" / "backups").exists() or not os.listdir(tmp_path / "state" / "backups")


@pytest.mark.parametrize("args, error_id", [
    (("--runtime-arg", "--debug"), "containerd-runtime-args"),
    (("--apply", "reload"), "containerd-no-reload"),
])
def test_options_containerd_cannot_take(run, tmp_path, args, error_id):
    config = tmp_path / "config.toml"
    config.write_bytes(V2)
    code, out = run("install", "--engine", "containerd", "--config", str(config), *args)
    assert code == ExitStatus.USAGE and out["error"]["id"] == error_id, out
    assert config.read_bytes() == V2


def test_cdi_needs_containerd_1_7(run, tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(V2)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--cdi", "--apply", "none",
                    containerd="1.6")
    assert code == ExitStatus.USAGE and out["error"]["id"] == "containerd-cdi-unsupported", out
    assert config.read_bytes() == V2
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--cdi", "--apply", "none")
    assert code == 0 and out["changed"], out
    assert b"enable_cdi = true" in config.read_bytes()


@pytest.mark.parametrize("containerd, version", [("1.6", 2), ("2.1", 3)])
def test_a_missing_file_is_created_in_the_installed_versions_schema_and_removed_again(run, tmp_path, containerd,
                                                                                       version):
    config = tmp_path / "etc" / "containerd" / "config.toml"
    config.parent.mkdir(parents=True)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--apply", "none",
                    containerd=containerd)
    assert code == 0 and out["changed"], out
    text = config.read_text()
    assert text.startswith("version = {}".format(version)) and run.runtime in text
    code, out = run("uninstall", "--engine", "containerd", "--config", str(config), "--apply", "none",
                    containerd=containerd)
    assert code == 0 and out["changed"], out
    assert not config.exists()


def test_dry_run_writes_nothing_and_records_are_per_engine(run, tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(V2)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--dry-run")
    assert code == 0 and out["would_change"] and not out["changed"] and config.read_bytes() == V2
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--apply", "none")
    assert code == 0 and out["changed"]
    assert b"# the admin's comment" in config.read_bytes()
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["configs"][str(config)]["nvidia"]["engine"] == "containerd"
    # the same file is not Docker's: another engine's verbs refuse it rather than misread it
    code, out = run("uninstall", "--engine", "docker", "--config", str(config), "--apply", "none")
    assert code == ExitStatus.INVALID_CONFIG and config.read_bytes() != V2, out
    code, out = run("uninstall", "--engine", "containerd", "--config", str(config), "--apply", "none")
    assert code == 0 and config.read_bytes() == V2


def test_backups_list_per_engine_file(run, tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_bytes(V2)
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_bytes(b'{"log-level": "warn"}\n')
    assert run("install", "--engine", "containerd", "--config", str(toml), "--apply", "none")[0] == 0
    assert run("install", "--engine", "docker", "--config", str(daemon_json), "--apply", "none")[0] == 0
    code, everything = run("backups", "list")
    assert code == 0 and {b["source"] for b in everything["backups"]} == {str(toml), str(daemon_json)}
    code, only = run("backups", "list", "--engine", "containerd", "--config", str(toml))
    assert code == 0 and {b["source"] for b in only["backups"]} == {str(toml)}, only
    code, only = run("backups", "list", "--config", str(daemon_json))
    assert code == 0 and {b["source"] for b in only["backups"]} == {str(daemon_json)}, only


KATA = (V2 + b'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        b'  runtime_type = "io.containerd.runc.v2"\n'
        b'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        b'  runtime_type = "io.containerd.kata.v2"\n  privileged_without_host_devices = true\n')


def test_a_forced_install_over_a_handler_without_binary_name_is_undone(run, tmp_path):
    """The handler --force replaces runs no BinaryName of its own (kata's shim): the state keeps it,
    later runs read the state back, and uninstall puts it back byte for byte."""
    config = tmp_path / "config.toml"
    config.write_bytes(KATA)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--apply", "none", "--force")
    assert code == 0 and out["changed"], out
    code, out = run("show", "--engine", "containerd", "--config", str(config))
    assert code == 0, out
    code, out = run("uninstall", "--engine", "containerd", "--config", str(config), "--apply", "none")
    assert code == 0, out
    assert config.read_bytes() == KATA


@pytest.mark.parametrize("value", [b"nan", b"inf", b"1979-05-27", b"1979-05-27T07:32:00Z", b"07:32:00"])
@pytest.mark.parametrize("where", ["nvidia", "runc"])
def test_a_handler_the_state_cannot_record_is_refused_before_anything_is_written(run, tmp_path, value, where):
    """A date or a non-finite number in the handler install copies (runc's options) or replaces
    (--force) cannot go into state.json: refused, not a traceback nor a state every later run refuses."""
    data = (V2 + b'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
            b'  runtime_type = "io.containerd.runc.v2"\n'
            b'\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.' + where.encode() + b'.options]\n'
            b'  BinaryName = "/usr/bin/runc"\n  Odd = ' + value + b'\n')
    config = tmp_path / "config.toml"
    config.write_bytes(data)
    code, out = run("install", "--engine", "containerd", "--config", str(config), "--apply", "none", "--force")
    assert out["error"]["id"] in ("runtime-entry-unrecordable", "containerd-config-edit-unsafe"), out
    assert code != 0 and config.read_bytes() == data
    code, out = run("show", "--engine", "containerd", "--config", str(config))
    assert code == 0, out
