"""`nvdocker-setup cdi generate|list` in-process, on the simulated driver root."""

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from nvdocker_setup.exit_status import ExitStatus


class Outcome:
    def __init__(self, result) -> None:
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


@pytest.fixture
def cli(tmp_path, driver_root):
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    env = {"NVDOCKER_RUNTIME_CONFIG": str(absent), "NVDOCKER_DRIVER_ROOT": driver_root.path, "COLUMNS": "200", "NO_COLOR": "1"}

    def invoke(*args: str) -> Outcome:
        output.reset_consoles()
        try:
            runner = CliRunner(mix_stderr=False)
        except TypeError:
            runner = CliRunner()
        return Outcome(runner.invoke(app, list(args), env=env, catch_exceptions=False))

    return invoke


def mode(path) -> int:
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_generate_yaml_then_no_change(cli, tmp_path):
    out = tmp_path / "cdi" / "nvdocker.yaml"
    first = cli("cdi", "generate", "--output", str(out))
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("wrote {}".format(out)) and "nvidia.com/gpu=all" in first.stdout
    spec, header = cdi_spec.load_document(str(out))
    assert spec["cdiVersion"] == "0.5.0" and mode(out) == 0o644 and "annotations" not in spec
    assert header[cdi_spec.DRIVER_VERSION_ANNOTATION] == "550.54.14"
    assert header[cdi_spec.GENERATOR_ANNOTATION].startswith("nvdocker-setup ")
    inode = os.stat(str(out)).st_ino
    again = cli("cdi", "generate", "--output", str(out))
    assert again.exit_code == 0 and again.stdout.startswith("no change:") and os.stat(str(out)).st_ino == inode


def test_generate_json_by_extension_with_a_json_report(cli, tmp_path):
    out = tmp_path / "nvdocker.json"
    out.write_text("{}")
    os.chmod(str(out), 0o600)
    done = cli("cdi", "generate", "-o", str(out), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["changed"] is True and report["format"] == "json" and report["driver_version"] == "550.54.14"
    assert len(report["devices"]) == 5
    assert json.loads(out.read_text())["kind"] == "nvidia.com/gpu" and mode(out) == 0o644
    assert [name for name in os.listdir(str(tmp_path)) if name.startswith(".")] == []  # no temp file left


def test_generate_again_unchanged_keeps_the_file_and_says_so_in_json(cli, tmp_path):
    """What lets the refresh units run it as often as they like: same bytes, nothing written."""
    out = tmp_path / "nvdocker.yaml"
    assert cli("cdi", "generate", "-o", str(out)).exit_code == 0
    past = os.stat(str(out)).st_mtime_ns - 5 * 10**9
    os.utime(str(out), ns=(past, past))  # any rewrite would move the mtime from here
    before = os.stat(str(out))
    done = cli("cdi", "generate", "-o", str(out), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["changed"] is False and report["output"] == str(out)
    after = os.stat(str(out))
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (before.st_ino, before.st_mtime_ns, before.st_ctime_ns)
    # a different file at the path is replaced, and the report says so
    out.write_text(out.read_text().replace("550.54.14", "1.2.3", 1))
    report = json.loads(cli("cdi", "generate", "-o", str(out), "--json").stdout)
    assert report["changed"] is True and "1.2.3" not in out.read_text()


def test_generate_to_stdout(cli):
    done = cli("cdi", "generate", "-o", "-")
    assert done.exit_code == 0
    assert cdi_spec.parse(done.stdout.encode(), "stdout")["kind"] == "nvidia.com/gpu"


def test_generate_without_a_driver_fails_with_a_hint(cli, tmp_path):
    done = cli("cdi", "generate", "-o", str(tmp_path / "x.yaml"), "--driver-root", str(tmp_path / "nowhere"))
    assert done.exit_code == ExitStatus.NOT_FOUND
    assert "gpu-driver" in done.stderr and "driver-root" in done.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_list_shows_devices_and_staleness(cli, tmp_path):
    out = tmp_path / "nvdocker.yaml"
    assert cli("cdi", "generate", "-o", str(out)).exit_code == 0
    listed = cli("cdi", "list", "--spec", str(out))
    assert listed.exit_code == 0, listed.stderr
    assert "stale" not in listed.stderr
    lines = listed.stdout.splitlines()
    gpu1 = next(i for i, line in enumerate(lines) if "nvidia.com/gpu=1," in line)
    assert lines[gpu1].startswith("|-- nvidia.com/gpu=1, nvidia.com/gpu=GPU-")  # a GPU and its UUID name, one branch
    assert lines[gpu1 + 1] == "|   `-- /dev/nvidia1"
    spec, header = cdi_spec.load_document(str(out))
    header[cdi_spec.DRIVER_VERSION_ANNOTATION] = "535.104.05"
    out.write_bytes(cdi_spec.render(spec, as_json=False, meta=header))
    stale = cli("cdi", "list", "--spec", str(out), "--json")
    report = json.loads(stale.stdout)
    assert report["stale"] is True and report["driver_version"] == "535.104.05" and report["current_driver_version"] == "550.54.14"
    assert report["devices"][-1] == {"name": "nvidia.com/gpu=all", "device_nodes": ["/dev/nvidia0", "/dev/nvidia1"]}
    assert "stale" in cli("cdi", "list", "--spec", str(out)).stderr


def test_list_without_a_spec_says_to_generate(cli, tmp_path):
    done = cli("cdi", "list", "--spec", str(tmp_path / "absent.yaml"))
    assert done.exit_code == ExitStatus.NOT_FOUND and "cdi generate" in done.stderr and "cdi-spec-missing" in done.stderr


def test_list_of_a_json_spec_reads_the_driver_from_its_libraries(cli, tmp_path):
    out = tmp_path / "nvdocker.json"
    assert cli("cdi", "generate", "-o", str(out)).exit_code == 0
    assert out.read_text().startswith("{")  # no comment: JSON has none
    report = json.loads(cli("cdi", "list", "--spec", str(out), "--json").stdout)
    assert report["driver_version"] == "550.54.14" and report["stale"] is False and report["cdiVersion"] == "0.5.0"


def test_generate_with_a_pinned_cdi_version(cli, tmp_path):
    out = tmp_path / "nvdocker.yaml"
    done = cli("cdi", "generate", "-o", str(out), "--cdi-version", "0.7.0", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["cdiVersion"] == "0.7.0" and cdi_spec.load(str(out))["cdiVersion"] == "0.7.0"


@pytest.mark.parametrize("wanted, says", [
    ("0.4.0", "cdiVersion 0.4.0 cannot express this spec, which needs at least 0.5.0"),
    ("0.3.0", "a device name that does not start with a letter needs 0.5.0"),
    ("2.0.0", "unknown cdiVersion '2.0.0'"),
    ("latest", "unknown cdiVersion 'latest'"),
])
def test_generate_refuses_a_cdi_version_that_cannot_be(cli, tmp_path, wanted, says):
    out = tmp_path / "nvdocker.yaml"
    done = cli("cdi", "generate", "-o", str(out), "--cdi-version", wanted)
    assert done.exit_code == ExitStatus.USAGE, (done.stdout, done.stderr)
    assert says in " ".join(done.stderr.split()) and not out.exists()


def test_list_is_a_tree_of_gpus_their_nodes_and_what_every_container_gets(cli, tmp_path):
    out = tmp_path / "nvdocker.yaml"
    assert cli("cdi", "generate", "-o", str(out)).exit_code == 0
    listed = cli("cdi", "list", "--spec", str(out))
    text = listed.stdout
    assert text.splitlines()[0].startswith(str(out)) and "cdiVersion 0.5.0" in text.splitlines()[0]
    assert "|-- nvidia.com/gpu=all\n|   |-- /dev/nvidia0\n|   `-- /dev/nvidia1\n" in text
    shared = text.split("`-- every GPU container also gets\n", 1)[1].splitlines()
    assert shared[0] == "    |-- device nodes: /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia-modeset"
    assert shared[1].startswith("    |-- libraries (") and "libcuda.so.550.54.14" in shared[1]
    assert "/dev/nvidia0" not in shared[1] and "nvidia-smi" not in shared[1]
    assert any("/usr/bin/nvidia-smi" in line for line in shared)
    assert all(not line.rstrip() != line for line in text.splitlines())  # no padding when piped
    report = json.loads(cli("cdi", "list", "--spec", str(out), "--json").stdout)
    assert "/dev/nvidiactl" in report["common"]["device_nodes"]
    assert "/usr/bin/nvidia-smi" in report["common"]["mounts"]


# -- every spec directory (issue #23, item 1) ------------------------------------------------------


def host_with_specs(cli, tmp_path, *paths):
    """A host root with our generated spec at each of ``paths`` (host paths)."""
    host = tmp_path / "host"
    for path in paths:
        target = host / path.lstrip("/")
        assert cli("cdi", "generate", "-o", str(target)).exit_code == 0
    return host


def test_list_finds_the_refresh_units_spec_in_run_cdi(cli, tmp_path):
    """What the refresh unit writes is what `cdi list` shows (it used to say there was no spec)."""
    host = host_with_specs(cli, tmp_path, "/var/run/cdi/nvdocker.yaml")
    done = cli("cdi", "list", "--root", str(host), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["spec"] == "/var/run/cdi/nvdocker.yaml" and report["stale"] is False
    assert [d["path"] for d in report["spec_dirs"]][:2] == ["/etc/cdi", "/var/run/cdi"]
    assert {n["name"]: n["spec"] for n in report["names"]}["nvidia.com/gpu=all"] == "/var/run/cdi/nvdocker.yaml"


def test_list_names_which_file_wins_and_what_it_shadows(cli, tmp_path):
    host = host_with_specs(cli, tmp_path, "/etc/cdi/nvdocker.yaml", "/var/run/cdi/nvdocker.yaml")
    (host / "etc/cdi/other.json").write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "example.com/fpga", "devices": [
        {"name": "f0", "containerEdits": {"deviceNodes": [{"path": "/dev/fpga0"}]}}]}))
    (host / "etc/cdi/broken.yaml").write_text("{not: [valid")
    done = cli("cdi", "list", "--root", str(host))
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CDI spec directories, in priority order (a later one wins a name): "
                               "/etc/cdi (CDI's default), /var/run/cdi (CDI's default)")
    gpu0 = next(line for line in lines if line.startswith("nvidia.com/gpu=0 "))
    assert gpu0.split()[1:] == ["/var/run/cdi/nvdocker.yaml", "(shadows", "/etc/cdi/nvdocker.yaml)"]
    assert next(line for line in lines if line.startswith("example.com/fpga=f0")).split()[1] == "/etc/cdi/other.json"
    assert "/var/run/cdi/nvdocker.yaml (cdiVersion" in done.stdout  # the tree is of the winning spec
    assert "/etc/cdi/broken.yaml is not a readable CDI spec" in done.stderr


def test_two_specs_of_one_directory_defining_a_name_are_a_conflict(cli, tmp_path):
    host = host_with_specs(cli, tmp_path, "/etc/cdi/nvdocker.yaml", "/etc/cdi/nvidia.yaml")
    done = cli("cdi", "list", "--root", str(host), "--json")
    assert done.exit_code == 0, done.stderr
    names = {n["name"]: n for n in json.loads(done.stdout)["names"]}
    assert names["nvidia.com/gpu=0"]["spec"] is None
    assert names["nvidia.com/gpu=0"]["conflict"] == ["/etc/cdi/nvdocker.yaml", "/etc/cdi/nvidia.yaml"]
    plain = cli("cdi", "list", "--root", str(host))
    assert "conflicting device" in plain.stderr and "none: conflict between" in plain.stdout


def test_no_spec_in_any_directory_names_them_and_both_ways_to_get_one(cli, tmp_path):
    (tmp_path / "host").mkdir()
    done = cli("cdi", "list", "--root", str(tmp_path / "host"))
    assert done.exit_code == ExitStatus.NOT_FOUND and "cdi-spec-missing" in done.stderr
    assert "/etc/cdi, /var/run/cdi" in done.stderr and "/run/cdi/nvdocker.yaml" in done.stderr


def test_dockerds_and_podmans_configured_spec_dirs_are_read_too(cli, tmp_path):
    host = host_with_specs(cli, tmp_path, "/opt/cdi/nvdocker.yaml")
    (host / "etc/docker").mkdir(parents=True)
    (host / "etc/docker/daemon.json").write_text(json.dumps({"cdi-spec-dirs": ["/etc/cdi", "/opt/cdi"]}))
    (host / "etc/containers").mkdir(parents=True)
    (host / "etc/containers/containers.conf").write_text('[engine]\ncdi_spec_dirs = ["/srv/podman-cdi"]\n')
    done = cli("cdi", "list", "--root", str(host), "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(d["path"], d["source"]) for d in report["spec_dirs"]] == [
        ("/etc/cdi", "CDI's default"), ("/var/run/cdi", "CDI's default"), ("/opt/cdi", "cdi-spec-dirs in daemon.json"),
        ("/srv/podman-cdi", "cdi_spec_dirs in /etc/containers/containers.conf")]
    assert report["spec"] == "/opt/cdi/nvdocker.yaml"


def test_spec_dir_replaces_the_default_directories(cli, tmp_path):
    host = host_with_specs(cli, tmp_path, "/etc/cdi/nvdocker.yaml", "/mine/nvdocker.yaml")
    done = cli("cdi", "list", "--root", str(host), "--spec-dir", "/mine", "--json")
    report = json.loads(done.stdout)
    assert report["spec_dirs"] == [{"path": "/mine", "source": "--spec-dir"}] and report["spec"] == "/mine/nvdocker.yaml"


# -- spec files that are anybody's (the second attacker review) ---------------------------------------------


def test_fifos_devices_and_users_symlinks_in_a_spec_dir_are_skipped_not_read(cli, tmp_path):
    import time

    host = host_with_specs(cli, tmp_path, "/etc/cdi/nvdocker.yaml")
    spec_dir = host / "etc/cdi"
    os.mkfifo(str(spec_dir / "fifo.yaml"))
    os.symlink("/dev/zero", str(spec_dir / "zero.yaml"))
    secret = tmp_path / "secret"
    secret.write_text("root: only\n")
    os.chmod(str(secret), 0o600)
    os.symlink(str(secret), str(spec_dir / "users.yaml"))
    os.lchown(str(spec_dir / "users.yaml"), 65534, 65534)
    started = time.monotonic()
    done = cli("cdi", "list", "--root", str(host), "--json")
    assert time.monotonic() - started < 20 and done.exit_code == 0, done.stderr
    errors = {os.path.basename(f["path"]): f["error"] for f in json.loads(done.stdout)["spec_files"] if f["error"]}
    assert "not a regular file" in errors["fifo.yaml"] and "not a regular file" in errors["zero.yaml"]
    if os.geteuid() == 0:
        assert "a symlink owned by uid 65534" in errors["users.yaml"]
    assert "only" not in done.stdout and "only" not in done.stderr


def test_control_characters_in_a_spec_never_reach_the_terminal(cli, tmp_path):
    host = tmp_path / "host"
    (host / "etc/cdi").mkdir(parents=True)
    (host / "etc/cdi/evil.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
        "devices": [{"name": "all", "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0\x1b]0;PWNED\x07\x1b[2J"}]}},
                    {"name": "0\x1b[1A\x1b[2Kfake line"}, "not a device"]}))
    done = cli("cdi", "list", "--root", str(host))
    assert done.exit_code == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout and "\x1b" not in done.stderr
    assert "nvidia.com/gpu=0?[1A?[2Kfake line" in done.stdout


def test_a_malformed_spec_is_listed_without_an_internal_error(cli, tmp_path):
    host = tmp_path / "host"
    (host / "etc/cdi").mkdir(parents=True)
    (host / "etc/cdi/a.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "all", "containerEdits": "x"}, "x", 5],
        "containerEdits": {"hooks": [{"args": ["a", 5, None]}, "x"], "deviceNodes": "x", "mounts": [1]}}))
    (host / "etc/cdi/a-imex-channel.json").write_text("[" * 100000 + "]" * 100000)
    done = cli("cdi", "list", "--root", str(host))
    assert done.exit_code == 0 and "internal" not in done.stderr, done.stderr
