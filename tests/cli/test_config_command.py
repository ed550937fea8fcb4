"""`nvdocker-setup config` (issue #23): runtime.conf edited line by line, nvidia-ctk's spellings,
--get/--list, the in-place write (lock, backup, atomic, owner and mode kept), and refusals that
leave the file alone."""

import json
import os

import pytest

from nvdocker_setup.adapters.lock import FileLock
from nvdocker_setup.exit_status import ExitStatus
from nvdocker_setup.runtime import config as runtime_config
from nvdocker_setup.runtime import settings_edit
from tests.cli.conftest import Cli

#: An admin's file: comments of both kinds, blank lines, a continuation, a key in another case
#: with ':', a key we do not know, another section (with a `runtimes` that is not ours), CRLF-free.
ADMIN = (
    "# nvdocker runtime settings\n"
    "\n"
    "[runtime]\n"
    "; the runtimes, in order\n"
    "runtimes = crun,\n"
    "    runc\n"
    "Driver-Root:   /run/nvidia/driver\n"
    "some-future-key = kept as is\n"
    "\n"
    "# other tools' settings\n"
    "[other]\n"
    "runtimes = not ours\n"
)


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path, None)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "etc" / "nvdocker" / "runtime.conf"
    path.parent.mkdir(parents=True)
    path.write_text(ADMIN)
    return path


def run(cli, conf, *args):
    return cli("config", "--config", str(conf), *args)


def leftovers(directory):
    return sorted(name for name in os.listdir(str(directory)) if name.endswith(".tmp"))


def test_set_prints_the_edited_file_and_writes_nothing(cli, conf):
    done = run(cli, conf, "--set", "no-cgroups", "--set", "driver-root=/", "--set", "runtimes=runc")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == ADMIN.replace("runtimes = crun,\n    runc\n", "runtimes = runc\n").replace(
        "Driver-Root:   /run/nvidia/driver\n", "Driver-Root:   /\n").replace(
        "some-future-key = kept as is\n", "some-future-key = kept as is\nno-cgroups = true\n")
    assert conf.read_text() == ADMIN


def test_in_place_keeps_every_other_byte_and_backs_up(cli, conf, tmp_path):
    os.chmod(str(conf), 0o600)
    inode = os.stat(str(conf)).st_ino
    done = run(cli, conf, "--set", "log-level=info", "--set", "Driver-Root=/opt/driver", "--in-place")
    assert done.exit_code == 0, done.stderr
    assert conf.read_text() == ADMIN.replace("Driver-Root:   /run/nvidia/driver\n", "Driver-Root:   /opt/driver\n").replace(
        "some-future-key = kept as is\n", "some-future-key = kept as is\nlog-level = info\n")
    info = os.stat(str(conf))
    assert info.st_ino != inode and oct(info.st_mode & 0o7777) == oct(0o600)  # replaced by rename, mode kept
    assert leftovers(conf.parent) == []
    (backup,) = json.loads(cli("backups", "list", "--json").stdout)["backups"]
    assert backup["source"] == str(conf) and backup["reason"].startswith("config --set log-level=info")
    assert open(backup["file"]).read() == ADMIN
    assert "wrote {}".format(conf) in done.stdout
    assert runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)}).log_level == "info"


def test_crlf_files_and_a_last_line_without_newline(cli, tmp_path):
    conf = tmp_path / "crlf.conf"
    conf.write_bytes(b"# x\r\n[runtime]\r\ndebug = false")
    assert run(cli, conf, "--set", "log=/var/log/n.log", "-i").exit_code == 0
    assert conf.read_bytes() == b"# x\r\n[runtime]\r\ndebug = false\r\nlog = /var/log/n.log\r\n"


@pytest.mark.parametrize("before, after", [
    # no [runtime] section: one is appended, after a blank line
    ("# only comments\n[other]\na = b", "# only comments\n[other]\na = b\n\n[runtime]\nno-cgroups = true\n"),
    # keys before any section are [runtime]'s: the new key joins them
    ("debug = no\n[other]\na = b\n", "debug = no\nno-cgroups = true\n[other]\na = b\n"),
    # an empty [runtime]: right after its header
    ("[runtime]\n# nothing yet\n", "[runtime]\nno-cgroups = true\n# nothing yet\n"),
    # two [runtime] sections: the later one (whose values win)
    ("[runtime]\na = 1\n[x]\n[Runtime]\nb = 2\n\n# end\n", "[runtime]\na = 1\n[x]\n[Runtime]\nb = 2\nno-cgroups = true\n\n# end\n"),
    # the key twice: the last one, the one the runtime reads, is replaced
    ("[runtime]\nno-cgroups = yes\nno-cgroups = no\n", "[runtime]\nno-cgroups = yes\nno-cgroups = true\n"),
    # already set: the line as it was, value replaced
    ("[runtime]\n  NO-CGROUPS:false\n", "[runtime]\n  NO-CGROUPS: true\n"),
    ("", "[runtime]\nno-cgroups = true\n"),
])
def test_where_a_key_goes(before, after):
    assert settings_edit.apply(before, ["no-cgroups"]).text == after


def test_a_missing_file_is_created_0644(cli, tmp_path):
    conf = tmp_path / "new" / "dir" / "runtime.conf"
    done = run(cli, conf, "--set", "nvidia-container-cli.no-cgroups=true", "--in-place", "--json")
    assert done.exit_code == 0, done.stderr
    assert conf.read_text() == "[runtime]\nno-cgroups = true\n"
    info = os.stat(str(conf))
    assert info.st_mode & 0o7777 == 0o644 and info.st_uid == os.geteuid()
    assert done.json["exists"] is False and done.json["backup"] is None and done.json["changed"] is True


def test_the_same_value_again_changes_nothing(cli, conf):
    assert run(cli, conf, "--set", "driver-root=/run/nvidia/driver", "-i").exit_code == 0
    inode = os.stat(str(conf)).st_ino
    again = run(cli, conf, "--set", "driver-root=/run/nvidia/driver", "-i", "--json")
    assert again.json["changed"] is False and again.json["would_change"] is False and again.json["backup"] is None
    assert os.stat(str(conf)).st_ino == inode and conf.read_text() == ADMIN
    assert json.loads(cli("backups", "list", "--json").stdout)["backups"] == []


@pytest.mark.parametrize("args, error_id, status", [
    (("--set", "bogus=1"), "config-key-unknown", ExitStatus.USAGE),
    (("--set", "nvidia-container-cli.load-kmods=true"), "config-key-unknown", ExitStatus.USAGE),
    (("--set", "debug=maybe"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "log=relative.log"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "hook-path=bin/hook"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "runtimes=./runc"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "runtimes"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "log-level=verbose"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "supported-driver-capabilities=compute,cuda"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "mps-pipe-directory=/tmp/../etc"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "driver-root=/a\n[other]"), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "log=/" + "x" * 5000), "config-value-invalid", ExitStatus.USAGE),
    (("--set", "no-cgroups", "--get", "log"), "usage", ExitStatus.USAGE),
    (("--in-place",), "usage", ExitStatus.USAGE),
    (("--set", "no-cgroups", "--in-place", "--output", "/tmp/x"), "usage", ExitStatus.USAGE),
    (("--get", "bogus"), "config-key-unknown", ExitStatus.USAGE),
])
def test_refusals_write_nothing(cli, conf, args, error_id, status):
    done = run(cli, conf, *(args + ("--in-place",) if args[0] == "--set" and "--in-place" not in args
                            and "--get" not in args else args), "--json")
    assert done.exit_code == status, done.stdout
    assert done.json["error"]["id"] == error_id
    assert conf.read_text() == ADMIN and leftovers(conf.parent) == []
    assert not (cli.state_dir / "backups").exists()


def test_unknown_key_names_the_known_ones(cli, conf):
    done = run(cli, conf, "--set", "bogus=1")
    assert done.exit_code == ExitStatus.USAGE and "(config-key-unknown)" in done.stderr
    assert all(key in done.stderr for key in runtime_config.KEYS)


def test_a_file_the_runtime_refuses_is_not_edited_unless_the_edit_fixes_it(cli, tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("[runtime]\nthis is no key line\n")
    done = run(cli, conf, "--set", "no-cgroups", "-i", "--json")
    assert done.exit_code == ExitStatus.INVALID_CONFIG and done.json["error"]["id"] == "runtime-config-invalid"
    assert conf.read_text() == "[runtime]\nthis is no key line\n"
    conf.write_text("[runtime]\ndebug = maybe\n")
    assert run(cli, conf, "--set", "no-cgroups", "-i").exit_code == ExitStatus.INVALID_CONFIG
    assert run(cli, conf, "--set", "debug=off", "-i").exit_code == 0
    assert conf.read_text() == "[runtime]\ndebug = false\n"


@pytest.mark.parametrize("given, key, value", [
    ("nvidia-container-cli.no-cgroups", "no-cgroups", "true"),
    ("nvidia-container-cli.no-cgroups=false", "no-cgroups", "false"),
    ("nvidia-container-cli.debug=/var/log/nvidia-container-toolkit.log", "log", "/var/log/nvidia-container-toolkit.log"),
    ("nvidia-container-runtime.debug=/var/log/rt.log", "log", "/var/log/rt.log"),
    ("nvidia-container-cli.root=/run/nvidia/driver", "driver-root", "/run/nvidia/driver"),
    ('nvidia-container-cli.root="/run/nvidia/driver"', "driver-root", "/run/nvidia/driver"),
    ("nvidia-container-cli.ldconfig=@/sbin/ldconfig.real", "ldconfig", "/sbin/ldconfig.real"),
    ("nvidia-container-runtime.log-level=warn", "log-level", "warning"),
    ("nvidia-container-runtime.log-level=trace", "log-level", "debug"),
    ('nvidia-container-runtime.runtimes=["docker-runc", "runc", "crun"]', "runtimes", "docker-runc runc crun"),
    ("nvidia-container-runtime.runtimes=runc,/usr/bin/crun", "runtimes", "runc /usr/bin/crun"),
    ("accept-nvidia-visible-devices-envvar-when-unprivileged=false", "accept-envvar-when-unprivileged", "false"),
    ("accept-nvidia-visible-devices-as-volume-mounts", "accept-device-list-as-volume-mounts", "true"),
    ("features.ignore-imex-channel-requests", "ignore-imex-channel-requests", "true"),
    ("nvidia-container-runtime-hook.disable-require=true", "disable-require", "true"),
    ("disable-require", "disable-require", "true"),
    ("supported-driver-capabilities=Compute, utility,compute", "supported-driver-capabilities", "compute,utility"),
])
def test_nvidia_ctk_spellings(cli, tmp_path, given, key, value):
    conf = tmp_path / "runtime.conf"
    done = run(cli, conf, "--set", given, "--in-place", "--json")
    assert done.exit_code == 0, done.stdout
    assert conf.read_text() == "[runtime]\n{} = {}\n".format(key, value)
    (setting,) = done.json["settings"]
    assert setting == {"key": key, "value": value, "previous": None, "given": given.partition("=")[0]}
    assert bool(done.json["notes"]) == (given.partition("=")[0] != key)
    assert run(cli, conf, "--get", key).stdout == value + "\n"
    runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})  # the runtime reads it


def test_get_list_and_json(cli, conf):
    assert run(cli, conf, "--get", "driver-root").stdout == "/run/nvidia/driver\n"
    assert run(cli, conf, "--get", "nvidia-container-runtime.runtimes").stdout == "crun runc\n"
    assert run(cli, conf, "--get", "log-level").stdout == "warning\n"  # unset: the default
    got = run(cli, conf, "--get", "log-level", "--json").json
    assert got["value"] == "warning" and got["default"] == "warning" and got["set"] is False and got["exists"] is True
    listed = run(cli, conf, "--list", "--json").json
    assert [row["key"] for row in listed["keys"]] == list(runtime_config.KEYS)
    rows = {row["key"]: row for row in listed["keys"]}
    assert rows["driver-root"]["set"] is True and rows["driver-root"]["default"] == "/"
    assert rows["no-cgroups"] == {"key": "no-cgroups", "value": "false", "default": "false", "set": False,
                                  "meaning": settings_edit.BY_NAME["no-cgroups"].meaning,
                                  "nvidia_ctk": ["nvidia-container-cli.no-cgroups"]}
    text = run(cli, conf, "--list")
    assert text.exit_code == 0 and "\ndriver-root = /run/nvidia/driver\n" in text.stdout and "\n#no-cgroups = false\n" in text.stdout
    # the listing is itself a runtime.conf that reads the same
    values = runtime_config.parse_ini(text.stdout)["runtime"]
    assert values == {"runtimes": "crun runc", "driver-root": "/run/nvidia/driver"}
    assert cli("config", "--config", str(conf)).stdout == text.stdout  # no action: --list


def test_debug_under_a_log_level_is_warned_about(cli, tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("[runtime]\nlog = /var/log/n.log\nlog-level = error\n")
    done = run(cli, conf, "--set", "debug=true", "--json")
    assert any("debug has no effect while log-level is set" in warning for warning in done.json["warnings"])


def test_output_writes_elsewhere(cli, conf, tmp_path):
    target = tmp_path / "out" / "edited.conf"
    done = run(cli, conf, "--set", "no-cgroups", "--output", str(target), "--json")
    assert done.exit_code == 0 and done.json["written"] == str(target) and done.json["changed"] is True
    assert conf.read_text() == ADMIN and target.read_text() == done.json["content"]
    assert "no-cgroups = true" in target.read_text()


def test_unreadable_paths_have_the_runtime_config_id(cli, conf, tmp_path):
    directory = conf.parent
    done = run(cli, directory, "--get", "log", "--json")
    assert done.exit_code == ExitStatus.INVALID_CONFIG and done.json["error"]["id"] == "runtime-config-unreadable"
    out = run(cli, conf, "--set", "no-cgroups", "--output", str(directory), "--json")
    assert out.exit_code == ExitStatus.INVALID_CONFIG and out.json["error"]["id"] == "runtime-config-unreadable"
    (tmp_path / "latin1.conf").write_bytes(b"[runtime]\n# caf\xe9\n")
    bad = run(cli, tmp_path / "latin1.conf", "--list", "--json")
    assert bad.exit_code == ExitStatus.INVALID_CONFIG and bad.json["error"]["id"] == "runtime-config-invalid"


def test_in_place_waits_for_the_lock(cli, conf):
    cli.state_dir.mkdir(mode=0o700)
    with FileLock(str(cli.state_dir / "lock"), timeout=0):
        done = run(cli, conf, "--set", "no-cgroups", "-i", "--lock-timeout", "0", "--json")
    assert done.exit_code == ExitStatus.LOCK_BUSY and done.json["error"]["id"] == "lock-busy"
    assert conf.read_text() == ADMIN


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is checked as root")
def test_as_root_a_file_not_roots_alone_is_refused(cli, conf):
    os.chown(str(conf), 1000, 1000)
    done = run(cli, conf, "--set", "no-cgroups", "-i", "--json")
    assert done.exit_code == ExitStatus.TRUST_CHECK_FAILED and done.json["error"]["id"] == "runtime-config-untrusted"
    assert conf.read_text() == ADMIN and os.stat(str(conf)).st_uid == 1000
    got = run(cli, conf, "--get", "driver-root", "--json").json  # read, with the runtime's verdict
    assert got["value"] == "/run/nvidia/driver" and "the runtime refuses this file" in got["warnings"][0]
    os.chown(str(conf), 0, 0)
    os.chmod(str(conf), 0o664)
    assert run(cli, conf, "--set", "no-cgroups", "-i").exit_code == ExitStatus.TRUST_CHECK_FAILED
    os.chmod(str(conf), 0o644)
    assert run(cli, conf, "--set", "no-cgroups", "-i").exit_code == 0
    info = os.stat(str(conf))
    assert info.st_uid == 0 and info.st_mode & 0o022 == 0
    assert runtime_config.load({"NVDOCKER_RUNTIME_CONFIG": str(conf)}).no_cgroups is True
