"""The CLI in-process, end to end on temp dirs, with every exit code pinned."""

import json
import os
import stat

import pytest

from nvdocker_setup import __version__
from nvdocker_setup.adapters.lock import FileLock
from nvdocker_setup.exit_status import ExitStatus

ADMIN_CONFIG = (
    '{\n'
    '    "log-driver": "json-file",\n'
    '    "log-opts": {"max-size": "10m", "max-file": "3"},\n'
    '    "labels": ["site=lab-\u00e9t\u00e9"],\n'
    '    "runtimes": {\n'
    '        "kata": {"path": "/usr/bin/kata-runtime"}\n'
    '    },\n'
    '    "features": {"buildkit": true}\n'
    '}\n'
).encode("utf-8")


def backups_in(cli):
    directory = cli.state_dir / "backups"
    return sorted(p.name for p in directory.glob("*.json") if p.name != "manifest.json") if directory.exists() else []


def test_version(cli):
    outcome = cli("--version")
    assert outcome.exit_code == 0 and outcome.stdout.strip() == "nvdocker-setup " + __version__


def test_install_into_a_missing_file_creates_it_0644(cli):
    outcome = cli.install("--default-runtime", "--json")
    assert outcome.exit_code == ExitStatus.SUCCESS, outcome.stderr
    report = outcome.json
    assert report["changed"] is True and report["config"] == str(cli.config)
    assert report["backup"] is None  # the file did not exist: its backup records absence, no copy
    assert report["diff"].startswith("---")
    assert json.loads(cli.config.read_text()) == {"runtimes": {"nvidia": {"path": cli.runtime}}, "default-runtime": "nvidia"}
    assert stat.S_IMODE(os.stat(str(cli.config)).st_mode) == 0o644


def test_install_merges_and_uninstall_restores_the_exact_bytes(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    os.chmod(str(cli.config), 0o640)
    installed = cli.install("--default-runtime", "--cdi", "--runtime-arg", "--debug", "--json")
    assert installed.exit_code == 0, installed.stderr
    merged = json.loads(cli.config.read_text())
    assert merged["runtimes"] == {"kata": {"path": "/usr/bin/kata-runtime"}, "nvidia": {"path": cli.runtime, "runtimeArgs": ["--debug"]}}
    assert merged["features"] == {"buildkit": True, "cdi": True}
    assert merged["default-runtime"] == "nvidia"
    assert "été" in cli.config.read_text()
    assert stat.S_IMODE(os.stat(str(cli.config)).st_mode) == 0o640
    assert open(installed.json["backup"], "rb").read() == ADMIN_CONFIG

    removed = cli("uninstall", "--json")
    assert removed.exit_code == 0, removed.stderr
    assert removed.json["changed"] is True
    assert cli.config.read_bytes() == ADMIN_CONFIG
    assert stat.S_IMODE(os.stat(str(cli.config)).st_mode) == 0o640


def test_uninstall_removes_a_file_that_install_created(cli):
    assert cli.install().exit_code == 0
    assert cli("uninstall").exit_code == 0
    assert not cli.config.exists()


def test_second_install_is_a_no_op_without_backup(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    assert cli.install().exit_code == 0
    before = backups_in(cli)
    again = cli.install("--json")
    assert again.exit_code == 0
    assert again.json["changed"] is False and again.json["backup"] is None and again.json["diff"] == ""
    assert any("already configured" in notice for notice in again.json["notices"])
    assert backups_in(cli) == before
    text = cli.install()
    assert "already configured" in text.stderr


def test_dry_run_prints_a_diff_and_writes_nothing(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    outcome = cli.install("--dry-run", "--default-runtime")
    assert outcome.exit_code == 0
    assert '+    "default-runtime": "nvidia"' in outcome.stdout
    assert "nothing was written" in outcome.stdout
    assert cli.config.read_bytes() == ADMIN_CONFIG
    assert not cli.state_dir.exists()


def test_uninstall_after_admin_edits_removes_only_ours(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    assert cli.install("--default-runtime").exit_code == 0
    edited = cli.config.read_text().replace('"log-driver": "json-file"', '"log-driver": "journald"')
    cli.config.write_text(edited)
    assert cli("uninstall").exit_code == 0
    assert cli.config.read_bytes() == ADMIN_CONFIG.replace(b'"json-file"', b'"journald"')


def test_uninstall_leaves_a_changed_entry_unless_forced(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    assert cli.install().exit_code == 0
    cli.config.write_text(cli.config.read_text().replace(cli.runtime, "/opt/other-runtime"))
    kept = cli("uninstall", "--json")
    assert kept.exit_code == 0 and kept.json["changed"] is False
    assert "left in place" in kept.json["warnings"][0]
    assert "/opt/other-runtime" in cli.config.read_text()
    assert cli("uninstall", "--force").exit_code == 0


def test_uninstall_without_record_is_a_no_op(cli):
    cli.config.write_bytes(b'{"runtimes": {"nvidia": {"path": "/x"}}}\n')
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0 and outcome.json["changed"] is False
    assert "no record" in outcome.json["warnings"][0]


@pytest.mark.parametrize(
    "content, reference",
    [
        (b'{"a": 1,}', "daemon-json-syntax"),
        (b'{\n  // gpu\n  "a": 1\n}', "daemon-json-syntax"),
        (b'{"a": 1, "a": 2}', "daemon-json-syntax"),
        (b"[]", "daemon-json-not-object"),
        (b'{"runtimes": []}', "daemon-json-bad-runtimes"),
        (b'{"a": "\xff"}', "daemon-json-encoding"),
    ],
)
def test_invalid_existing_config_exits_3_and_is_untouched(cli, content, reference):
    cli.config.write_bytes(content)
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.INVALID_CONFIG
    assert outcome.json["ok"] is False and outcome.json["error"]["id"] == reference
    assert cli.config.read_bytes() == content
    assert backups_in(cli) == []


def test_invalid_config_text_output_has_no_traceback(cli):
    cli.config.write_bytes(b'{\n  "debug": true,,\n}')
    outcome = cli.install()
    assert outcome.exit_code == 3
    assert "Traceback" not in outcome.stderr
    assert "line 2, column 17" in outcome.stderr and "hint:" in outcome.stderr


def test_directory_at_the_config_path(cli):
    cli.config.mkdir()
    assert cli.install().exit_code == ExitStatus.INVALID_CONFIG


def test_someone_elses_default_is_a_conflict(cli):
    original = b'{"runtimes": {"kata": {"path": "/k"}}, "default-runtime": "kata"}'
    cli.config.write_bytes(original)
    outcome = cli.install("--default-runtime", "--json")
    assert outcome.exit_code == ExitStatus.CONFLICT and outcome.json["error"]["id"] == "conflict"
    assert cli.config.read_bytes() == original
    assert cli.install("--default-runtime", "--force").exit_code == 0
    assert cli("uninstall").exit_code == 0
    assert cli.config.read_bytes() == original


def test_missing_runtime_refused_as_default_and_warned_otherwise(cli, tmp_path):
    missing = str(tmp_path / "bin" / "absent-runtime")
    refused = cli("install", "--runtime-path", missing, "--default-runtime", "--json")
    assert refused.exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert refused.json["error"]["id"] == "runtime-missing"
    assert not cli.config.exists()
    warned = cli("install", "--runtime-path", missing, "--json")
    assert warned.exit_code == 0 and any("does not exist" in w for w in warned.json["warnings"])


def test_writable_runtime_is_untrusted(cli):
    os.chmod(cli.runtime, 0o777)
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert outcome.json["error"]["id"] == "runtime-untrusted"
    # --force is about other tools' entries and defaults; an unsafe binary needs its own option
    assert cli.install("--force").exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert cli.install("--allow-unsafe-runtime").exit_code == 0


def test_relative_runtime_path_is_a_usage_error(cli):
    assert cli("install", "--runtime-path", "nvdocker-runtime", "--allow-unsafe-runtime").exit_code == ExitStatus.USAGE


def test_reserved_runtime_name(cli):
    outcome = cli.install("--runtime-name", "runc", "--json")
    assert outcome.exit_code == ExitStatus.USAGE and "reserved" in outcome.json["error"]["message"]


def test_lock_busy_names_the_holder(cli):
    cli.state_dir.mkdir()
    with FileLock(str(cli.state_dir / "lock"), timeout=0):
        outcome = cli.install("--lock-timeout", "0", "--json")
    assert outcome.exit_code == ExitStatus.LOCK_BUSY
    assert "pid {}".format(os.getpid()) in outcome.json["error"]["message"]


def test_dockerd_validate_rejection_writes_nothing(cli, tmp_path):
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    dockerd = fake_bin / "dockerd"
    dockerd.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "Docker version 26.1.5+dfsg1, build a72d7cd"; exit 0; fi\n'
        'if grep -q nvidia "$3"; then echo "unable to configure the Docker daemon with file $3: boom" >&2; exit 1; fi\n'
        'echo "configuration OK" >&2\n'
    )
    dockerd.chmod(0o755)
    cli.config.write_bytes(ADMIN_CONFIG)
    outcome = cli.install("--json", env={"PATH": "{}:{}".format(fake_bin, os.environ["PATH"])})
    assert outcome.exit_code == ExitStatus.VALIDATION_FAILED, outcome.stdout
    assert outcome.json["error"]["id"] == "dockerd-validate-failed"
    assert cli.config.read_bytes() == ADMIN_CONFIG
    assert [p.name for p in cli.config.parent.iterdir()] == ["daemon.json"]


def test_show_reports_entry_default_and_rule(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    assert cli.install("--default-runtime").exit_code == 0
    shown = cli("show", "--json")
    assert shown.exit_code == 0
    report = shown.json
    assert report["entry"] == {"path": cli.runtime}
    assert report["default_runtime"] == "nvidia" and report["config_rule"] == "env"
    assert report["installed_by_us"] is True
    text = cli("show")
    assert "installed by nvdocker-setup: yes" in text.stdout
    assert "next:" in text.stdout and "doctor" in text.stdout and "uninstall" in text.stdout


def test_show_defaults_to_runc(cli):
    shown = cli("show", "--json")
    assert shown.json["default_runtime"] == "runc" and shown.json["exists"] is False
    assert "next:            sudo nvdocker-setup install adds it" in cli("show").stdout


def test_show_names_a_foreign_entrys_owner_and_the_way_beside_it(cli):
    cli.config.write_text('{"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}\n')
    text = cli("show").stdout
    assert "owner:           NVIDIA's nvidia-container-toolkit" in text, text
    assert "--runtime-name nvdocker" in text and "--force" in text


def test_config_option_beats_the_environment(cli, tmp_path):
    other = tmp_path / "other.json"
    outcome = cli.install("--config", str(other), "--json")
    assert outcome.json["config"] == str(other) and outcome.json["config_rule"] == "option"
    assert other.exists() and not cli.config.exists()


def test_symlinked_config_edits_the_target(cli, tmp_path):
    target = tmp_path / "real-daemon.json"
    target.write_bytes(ADMIN_CONFIG)
    os.symlink(str(target), str(cli.config))
    assert cli.install().exit_code == 0
    assert os.path.islink(str(cli.config))
    assert "nvidia" in target.read_text()


def test_backups_list_and_restore(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    assert cli.install().exit_code == 0
    listed = cli("backups", "list", "--json")
    assert listed.exit_code == 0
    [backup] = listed.json["backups"]
    assert backup["reason"] == "install nvidia" and backup["existed"] is True
    restored = cli("restore", "--latest", "--json")
    assert restored.exit_code == 0 and restored.json["changed"] is True
    assert cli.config.read_bytes() == ADMIN_CONFIG
    assert len(cli("backups", "list", "--json").json["backups"]) == 2  # the pre-restore state was saved
    by_name = cli("restore", backup["name"], "--json")
    assert by_name.exit_code == 0 and by_name.json["changed"] is False
    table = cli("backups", "list")
    assert backup["name"] in table.stdout


def test_restore_usage_and_not_found(cli):
    assert cli("restore").exit_code == ExitStatus.USAGE
    missing = cli("restore", "20990101T000000.000000Z-9999", "--json")
    assert missing.exit_code == ExitStatus.NOT_FOUND


def test_unknown_option_is_a_usage_error(cli):
    assert cli("install", "--no-such-option").exit_code == ExitStatus.USAGE


def test_bad_runtime_is_reported_before_touching_anything(cli):
    cli.config.write_bytes(ADMIN_CONFIG)
    os.chmod(os.path.dirname(cli.runtime), 0o777)
    outcome = cli.install()
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert "chmod" in outcome.stderr or "writable" in outcome.stderr
    assert cli.config.read_bytes() == ADMIN_CONFIG
